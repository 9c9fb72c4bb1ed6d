package shadow

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// startProxy serves a Proxy for the given primary and shadow servers.
func startProxy(t testing.TB, primary, shadow *httptest.Server, cfg ProxyConfig) (*Proxy, *httptest.Server, *Aggregator) {
	t.Helper()
	if cfg.Aggregator == nil {
		cfg.Aggregator = NewAggregator(mustComparator(t, ComparatorConfig{Pointer: "/label", Labels: []string{"malignant", "benign"}}))
	}
	cfg.Primary = mustURL(t, primary.URL)
	if shadow != nil {
		cfg.Shadow = mustURL(t, shadow.URL)
	}
	p, err := NewProxy(cfg)
	if err != nil {
		t.Fatalf("NewProxy: %v", err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(func() {
		srv.Close()
		p.Close()
	})
	return p, srv, cfg.Aggregator
}

// primaryHandler answers like a model server, with extra headers, a status
// and body shapes chosen by the request path.
func primaryHandler(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	sum := sha256.Sum256(body)
	w.Header().Set("X-Model", "v1")
	w.Header().Add("X-Multi", "a")
	w.Header().Add("X-Multi", "b")
	w.Header().Set("X-Body-Sha256", fmt.Sprintf("%x", sum))
	switch r.URL.Path {
	case "/stream":
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		for i := 0; i < 5; i++ {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
		}
	case "/large":
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(bytes.Repeat([]byte("0123456789abcdef"), 1<<16)) // 1 MiB
	case "/created":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"label":"benign","probability":0.12}`)
	default:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"label":%q}`, r.Header.Get("X-Label"))
	}
}

type capture struct {
	status int
	header http.Header
	body   []byte
}

func do(t testing.TB, method, u string, body []byte, hdr map[string]string) capture {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	h := resp.Header.Clone()
	h.Del("Date")
	return capture{resp.StatusCode, h, b}
}

func TestProxyReturnsPrimaryResponseExactly(t *testing.T) {
	primary := httptest.NewServer(http.HandlerFunc(primaryHandler))
	defer primary.Close()
	shadow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Model", "v2")
		w.WriteHeader(http.StatusTeapot)
		fmt.Fprint(w, `{"label":"malignant"}`)
	}))
	defer shadow.Close()
	_, proxy, _ := startProxy(t, primary, shadow, ProxyConfig{BodyLimit: 64 << 10})
	bigBody := bytes.Repeat([]byte("x"), 200<<10) // over the body limit
	tests := []struct {
		name, method, path string
		body               []byte
	}{
		{"json", "POST", "/predict", []byte(`{"features":[1,2,3]}`)},
		{"status and headers", "POST", "/created", []byte(`{}`)},
		{"streaming", "GET", "/stream", nil},
		{"large response", "GET", "/large", nil},
		{"large request", "POST", "/predict", bigBody},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := map[string]string{"X-Label": "benign"}
			direct := do(t, tt.method, primary.URL+tt.path, tt.body, hdr)
			via := do(t, tt.method, proxy.URL+tt.path, tt.body, hdr)
			if via.status != direct.status {
				t.Errorf("status: got %d, want %d", via.status, direct.status)
			}
			if !bytes.Equal(via.body, direct.body) {
				t.Errorf("body: got %d bytes, want the primary's %d bytes", len(via.body), len(direct.body))
			}
			for k, v := range direct.header {
				if got := via.header[k]; strings.Join(got, "|") != strings.Join(v, "|") {
					t.Errorf("header %s: got %q, want %q", k, got, v)
				}
			}
			if len(via.header) != len(direct.header) {
				t.Errorf("headers: got %v, want %v", via.header, direct.header)
			}
		})
	}
}

func TestProxyNeverWaitsForHangingShadow(t *testing.T) {
	primary := httptest.NewServer(http.HandlerFunc(primaryHandler))
	defer primary.Close()
	release := make(chan struct{})
	arrived := make(chan struct{}, 100)
	shadow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		fmt.Fprint(w, `{"label":"benign"}`)
	}))
	defer shadow.Close()
	defer close(release) // after the checks, so the shadow hangs throughout
	_, proxy, _ := startProxy(t, primary, shadow, ProxyConfig{Timeout: time.Minute, Workers: 2, QueueSize: 4})
	for i := 0; i < 20; i++ {
		got := do(t, "POST", proxy.URL+"/predict", []byte(`{}`), map[string]string{"X-Label": "benign"})
		if got.status != http.StatusOK || string(got.body) != `{"label":"benign"}` {
			t.Fatalf("request %d: got %d %q", i, got.status, got.body)
		}
	}
	// Every request above completed while the shadow handler was blocked:
	// release has not been closed yet.
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the shadow never received a copy")
	}
}

func TestProxyCountsDropsAndOversizeExactly(t *testing.T) {
	primary := httptest.NewServer(http.HandlerFunc(primaryHandler))
	defer primary.Close()
	release := make(chan struct{})
	arrived := make(chan struct{}, 100)
	shadow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		fmt.Fprintf(w, `{"label":%q}`, r.Header.Get("X-Label"))
	}))
	defer shadow.Close()
	p, proxy, agg := startProxy(t, primary, shadow, ProxyConfig{Timeout: time.Minute, Workers: 1, QueueSize: 1, BodyLimit: 1024, SegmentHeader: "X-Segment"})
	hdr := map[string]string{"X-Label": "benign", "X-Segment": "site-a"}

	do(t, "POST", proxy.URL+"/predict", []byte(`{}`), hdr)
	<-arrived // the only worker is now blocked in the shadow
	for i := 0; i < 9; i++ {
		do(t, "POST", proxy.URL+"/predict", []byte(`{}`), hdr) // 1 queued, 8 dropped
	}
	big := bytes.Repeat([]byte("y"), 4096)
	for i := 0; i < 3; i++ {
		got := do(t, "POST", proxy.URL+"/echo", big, hdr)
		want := fmt.Sprintf("%x", sha256.Sum256(big))
		if got.header.Get("X-Body-Sha256") != want {
			t.Fatalf("oversize request reached the primary altered")
		}
	}
	close(release)
	p.Close()
	ev := agg.Take()
	s := ev.Segments["site-a"]
	if s == nil {
		t.Fatalf("no site-a segment; got %v", ev.SegmentNames())
	}
	c := s.Counts
	want := Counts{Requests: 13, Mirrored: 2, Compared: 2, Agreements: 2, Drops: 8, Oversize: 3}
	if c != want {
		t.Fatalf("counts: got %+v, want %+v", c, want)
	}
}

func TestProxyComparesAndSegments(t *testing.T) {
	primary := httptest.NewServer(http.HandlerFunc(primaryHandler))
	defer primary.Close()
	var mu sync.Mutex
	n := 0
	shadow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		k := n
		mu.Unlock()
		b, _ := io.ReadAll(r.Body)
		switch {
		case string(b) == `{"site":"slow"}`:
			time.Sleep(300 * time.Millisecond)
		case string(b) == `{"site":"broken"}`:
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		case k%2 == 0:
			fmt.Fprint(w, `{"label":"malignant"}`)
			return
		}
		fmt.Fprintf(w, `{"label":%q}`, r.Header.Get("X-Label"))
	}))
	defer shadow.Close()
	p, proxy, agg := startProxy(t, primary, shadow, ProxyConfig{Timeout: 100 * time.Millisecond, SegmentPointer: "/site", Workers: 1})
	hdr := map[string]string{"X-Label": "benign"}
	for i := 0; i < 10; i++ {
		do(t, "POST", proxy.URL+"/predict", []byte(`{"site":"eu"}`), hdr)
	}
	do(t, "POST", proxy.URL+"/predict", []byte(`{"site":"slow"}`), hdr)
	do(t, "POST", proxy.URL+"/predict", []byte(`{"site":"broken"}`), hdr)
	do(t, "POST", proxy.URL+"/predict", []byte(`{"nosite":1}`), hdr)
	p.Close()
	ev := agg.Take()
	eu := ev.Segments["eu"]
	if eu == nil || eu.Compared != 10 || eu.Agreements+eu.Disagreements != 10 || eu.Disagreements == 0 {
		t.Fatalf("eu: got %+v, want 10 compared with some disagreements", eu)
	}
	if s := ev.Segments["slow"]; s == nil || s.Timeouts != 1 || s.Mirrored != 1 {
		t.Fatalf("slow: got %+v, want 1 timeout", s)
	}
	if s := ev.Segments["broken"]; s == nil || s.ShadowErrors != 1 {
		t.Fatalf("broken: got %+v, want 1 shadow error", s)
	}
	if s := ev.Segments[DefaultSegment]; s == nil || s.Requests != 1 {
		t.Fatalf("default: got %+v, want 1 request", s)
	}
	if eu.PrimaryLatency.GetCount() != 10 || eu.ShadowLatency.GetCount() != 10 {
		t.Fatalf("latency counts: got %v/%v, want 10/10", eu.PrimaryLatency.GetCount(), eu.ShadowLatency.GetCount())
	}
}

func TestProxyPrimaryFailureNotMirrored(t *testing.T) {
	primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer primary.Close()
	shadow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("shadow called for a failed primary request")
	}))
	defer shadow.Close()
	p, proxy, agg := startProxy(t, primary, shadow, ProxyConfig{})
	got := do(t, "POST", proxy.URL+"/predict", []byte(`{}`), nil)
	if got.status != http.StatusServiceUnavailable || string(got.body) != "down\n" {
		t.Fatalf("got %d %q, want the primary's 503", got.status, got.body)
	}
	p.Close()
	if c := agg.Take().Segments[DefaultSegment].Counts; c != (Counts{Requests: 1, PrimaryErrors: 1}) {
		t.Fatalf("counts: got %+v", c)
	}
}
