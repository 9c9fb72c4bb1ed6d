package shadow

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordingShadow answers like primaryHandler and remembers the headers of
// every copy it gets.
type recordingShadow struct {
	mu      sync.Mutex
	headers []http.Header
	bodies  []string
}

func (s *recordingShadow) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.headers = append(s.headers, r.Header.Clone())
	s.bodies = append(s.bodies, string(b))
	s.mu.Unlock()
	fmt.Fprintf(w, `{"label":%q}`, r.Header.Get("X-Label"))
}

func (s *recordingShadow) calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.headers)
}

// rawRequest writes req to addr on a fresh connection and returns the
// response.
func rawRequest(t testing.TB, addr, req string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	return resp
}

func TestProxyHopByHopHeaders(t *testing.T) {
	var seen http.Header
	primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Clone()
		w.Header().Set("X-Hop", "secret")
		w.Header().Set("Connection", "X-Hop")
		fmt.Fprint(w, `{"label":"benign"}`)
	}))
	defer primary.Close()
	rec := &recordingShadow{}
	shadow := httptest.NewServer(rec)
	defer shadow.Close()
	p, proxy, _ := startProxy(t, primary, shadow, ProxyConfig{})
	resp := rawRequest(t, proxy.Listener.Addr().String(), "POST /predict HTTP/1.1\r\nHost: model\r\nConnection: keep-alive, X-Hop\r\n"+
		"X-Hop: 1\r\nKeep-Alive: 300\r\nProxy-Authorization: Basic eA==\r\nTe: trailers\r\nX-Keep: yes\r\nX-Label: benign\r\nContent-Length: 2\r\n\r\n{}")
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Hop") != "" {
		t.Fatalf("response: got %d with X-Hop %q, want 200 without the hop header", resp.StatusCode, resp.Header.Get("X-Hop"))
	}
	p.Close()
	if rec.calls() != 1 {
		t.Fatalf("shadow calls: got %d, want 1", rec.calls())
	}
	for who, h := range map[string]http.Header{"primary": seen, "shadow": rec.headers[0]} {
		for _, k := range []string{"X-Hop", "Keep-Alive", "Proxy-Authorization"} {
			if v := h.Get(k); v != "" {
				t.Errorf("%s got hop-by-hop header %s: %q", who, k, v)
			}
		}
		if h.Get("X-Keep") != "yes" {
			t.Errorf("%s lost the end-to-end header X-Keep", who)
		}
	}
}

func TestProxyDoesNotMirror(t *testing.T) {
	// HEAD, and upgrades (declined and accepted), are proxied but never
	// mirrored: they carry no comparable answer.
	primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "echo" && r.URL.Path == "/tunnel" {
			w.Header().Set("Connection", "Upgrade")
			w.Header().Set("Upgrade", "echo")
			w.WriteHeader(http.StatusSwitchingProtocols)
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			line, _ := brw.ReadString('\n')
			brw.WriteString("echo: " + line)
			brw.Flush()
			return
		}
		primaryHandler(w, r)
	}))
	defer primary.Close()
	rec := &recordingShadow{}
	shadow := httptest.NewServer(rec)
	defer shadow.Close()
	p, proxy, agg := startProxy(t, primary, shadow, ProxyConfig{})

	if got := do(t, "HEAD", proxy.URL+"/predict", nil, nil); got.status != http.StatusOK || len(got.body) != 0 {
		t.Fatalf("HEAD: got %d with %d body bytes", got.status, len(got.body))
	}
	declined := rawRequest(t, proxy.Listener.Addr().String(), "GET /predict HTTP/1.1\r\nHost: m\r\nConnection: Upgrade\r\nUpgrade: echo\r\nX-Label: benign\r\n\r\n")
	declined.Body.Close()
	if declined.StatusCode != http.StatusOK {
		t.Fatalf("declined upgrade: got %d, want 200", declined.StatusCode)
	}
	c, err := net.Dial("tcp", proxy.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /tunnel HTTP/1.1\r\nHost: m\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: got %v, %v; want 101", resp, err)
	}
	io.WriteString(c, "hello\n")
	if line, err := br.ReadString('\n'); err != nil || line != "echo: hello\n" {
		t.Fatalf("tunnel: got %q, %v", line, err)
	}
	c.Close()
	// The tunnelled request is recorded when its tunnel closes, which the
	// proxy notices asynchronously.
	deadline := time.Now().Add(10 * time.Second)
	for agg.Peek().Segments[DefaultSegment].Requests < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	p.Close()
	if n := rec.calls(); n != 0 {
		t.Fatalf("shadow got %d copies, want none", n)
	}
	if got, want := agg.Take().Segments[DefaultSegment].Counts, (Counts{Requests: 3}); got != want {
		t.Fatalf("counts: got %+v, want %+v", got, want)
	}
}

func TestProxyExpectContinue(t *testing.T) {
	var expect []string
	primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		expect = r.Header.Values("Expect")
		primaryHandler(w, r)
	}))
	defer primary.Close()
	rec := &recordingShadow{}
	shadow := httptest.NewServer(rec)
	defer shadow.Close()
	p, proxy, agg := startProxy(t, primary, shadow, ProxyConfig{})
	client := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: 5 * time.Second}}
	defer client.CloseIdleConnections()
	body := []byte(`{"features":[1,2]}`)
	req, _ := http.NewRequest("POST", proxy.URL+"/predict", bytes.NewReader(body))
	req.Header.Set("Expect", "100-continue")
	req.Header.Set("X-Label", "benign")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(got) != `{"label":"benign"}` {
		t.Fatalf("got %d %q", resp.StatusCode, got)
	}
	if time.Since(start) > 4*time.Second {
		t.Fatalf("the client waited for its 100-continue timeout")
	}
	if want := fmt.Sprintf("%x", sha256.Sum256(body)); resp.Header.Get("X-Body-Sha256") != want {
		t.Fatalf("primary got a different body")
	}
	p.Close()
	if len(expect) != 0 {
		t.Errorf("primary got Expect %q for a body the proxy already holds", expect)
	}
	if rec.calls() != 1 || rec.headers[0].Get("Expect") != "" || rec.bodies[0] != string(body) {
		t.Errorf("shadow: got %d calls, want 1 with the body and no Expect", rec.calls())
	}
	if c := agg.Take().Segments[DefaultSegment].Counts; c.Compared != 1 {
		t.Errorf("counts: got %+v, want 1 compared", c)
	}
}

// chunkedReader hides its length so the client sends a chunked body.
type chunkedReader struct{ r io.Reader }

func (c chunkedReader) Read(b []byte) (int, error) { return c.r.Read(b) }

func TestProxyChunkedBodies(t *testing.T) {
	primary := httptest.NewServer(http.HandlerFunc(primaryHandler))
	defer primary.Close()
	rec := &recordingShadow{}
	shadow := httptest.NewServer(rec)
	defer shadow.Close()
	p, proxy, agg := startProxy(t, primary, shadow, ProxyConfig{BodyLimit: 1024})
	small := []byte(`{"features":[1,2,3]}`)
	big := bytes.Repeat([]byte("z"), 5000)
	for _, body := range [][]byte{small, big, small} {
		req, _ := http.NewRequest("POST", proxy.URL+"/predict", chunkedReader{bytes.NewReader(body)})
		req.Header.Set("X-Label", "benign")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("%x", sha256.Sum256(body)); resp.StatusCode != http.StatusOK || resp.Header.Get("X-Body-Sha256") != want {
			t.Fatalf("%d-byte chunked body: got %d, primary body sha %s, want 200 and %s", len(body), resp.StatusCode, resp.Header.Get("X-Body-Sha256"), want)
		}
	}
	p.Close()
	if got, want := agg.Take().Segments[DefaultSegment].Counts, (Counts{Requests: 3, Mirrored: 2, Compared: 2, Agreements: 2, Oversize: 1}); got != want {
		t.Fatalf("counts: got %+v, want %+v", got, want)
	}
	for i, b := range rec.bodies {
		if b != string(small) {
			t.Errorf("shadow copy %d: got %q, want %q", i, b, small)
		}
	}
}

func TestProxyPrimaryUnreachable(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close() // nothing listens at its address now
	rec := &recordingShadow{}
	shadow := httptest.NewServer(rec)
	defer shadow.Close()
	p, proxy, agg := startProxy(t, down, shadow, ProxyConfig{})
	got := do(t, "POST", proxy.URL+"/predict", []byte(`{}`), nil)
	if got.status != http.StatusBadGateway || len(got.body) != 0 {
		t.Fatalf("got %d %q, want 502 with an empty body (ReverseProxy's answer)", got.status, got.body)
	}
	p.Close()
	if rec.calls() != 0 {
		t.Fatalf("shadow got a copy of a failed request")
	}
	if c := agg.Take().Segments[DefaultSegment].Counts; c != (Counts{Requests: 1, PrimaryErrors: 1}) {
		t.Fatalf("counts: got %+v", c)
	}
}

// settledGoroutines waits for the goroutine count to drop to at most want.
func settledGoroutines(t testing.TB, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= want {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("goroutines: %d, want at most %d; stacks:\n%s", n, want, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestProxyClientDisconnectsLeakNothing(t *testing.T) {
	http.DefaultClient.CloseIdleConnections()
	before := runtime.NumGoroutine()
	func() {
		primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				// Answers only once the proxy gave up on it. (The server
				// notices a closed connection once the body is read.)
				io.Copy(io.Discard, r.Body)
				<-r.Context().Done()
				return
			}
			primaryHandler(w, r)
		}))
		defer primary.Close()
		rec := &recordingShadow{}
		shadow := httptest.NewServer(rec)
		defer shadow.Close()
		p, err := NewProxy(ProxyConfig{Primary: mustURL(t, primary.URL), Shadow: mustURL(t, shadow.URL), BodyLimit: 1 << 10,
			Aggregator: NewAggregator(mustComparator(t, ComparatorConfig{Pointer: "/label"}))})
		if err != nil {
			t.Fatal(err)
		}
		proxy := httptest.NewServer(p)
		addr := proxy.Listener.Addr().String()
		for i := 0; i < 5; i++ {
			// Broken off in the body (buffered, and over the limit), and
			// while waiting for a slow primary.
			for _, req := range []string{
				"POST /predict HTTP/1.1\r\nHost: m\r\nContent-Length: 500\r\n\r\n{\"features\":",
				"POST /predict HTTP/1.1\r\nHost: m\r\nContent-Length: 5000\r\n\r\n" + strings.Repeat("x", 100),
				"POST /slow HTTP/1.1\r\nHost: m\r\nContent-Length: 2\r\n\r\n{}",
			} {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				io.WriteString(c, req)
				time.Sleep(20 * time.Millisecond)
				c.Close()
			}
		}
		do(t, "POST", proxy.URL+"/predict", []byte(`{}`), map[string]string{"X-Label": "benign"})
		http.DefaultClient.CloseIdleConnections()
		proxy.Close()
		if err := p.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		ev := p.agg.Take()
		c := ev.Segments[DefaultSegment].Counts
		if c.Requests != 16 || c.Compared != 1 || c.PrimaryErrors != 0 {
			t.Errorf("counts: got %+v, want 16 requests, 1 compared, and no primary errors for callers who left", c)
		}
	}()
	settledGoroutines(t, before)
}

func TestProxyShutdownDeadline(t *testing.T) {
	primary := httptest.NewServer(http.HandlerFunc(primaryHandler))
	defer primary.Close()
	hang := make(chan struct{})
	arrived := make(chan struct{}, 16)
	shadow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		arrived <- struct{}{}
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer shadow.Close()
	defer close(hang) // before shadow.Close, which waits for its handlers
	p, proxy, agg := startProxy(t, primary, shadow, ProxyConfig{Workers: 2, QueueSize: 8, Timeout: time.Minute})
	hdr := map[string]string{"X-Label": "benign"}
	for i := 0; i < 6; i++ {
		do(t, "POST", proxy.URL+"/predict", []byte(`{}`), hdr)
	}
	<-arrived
	<-arrived // both workers are stuck in the shadow; 4 copies queued
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: got %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Shutdown took %v with a 300ms deadline", d)
	}
	// Served after Shutdown: forwarded, not mirrored, counted as a drop.
	if got := do(t, "POST", proxy.URL+"/predict", []byte(`{}`), hdr); got.status != http.StatusOK {
		t.Fatalf("after shutdown: got %d", got.status)
	}
	if got, want := agg.Take().Segments[DefaultSegment].Counts, (Counts{Requests: 7, Drops: 7}); got != want {
		t.Fatalf("counts: got %+v, want %+v (abandoned copies are drops)", got, want)
	}
}
