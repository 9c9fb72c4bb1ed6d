package shadow

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// waitFor waits until cond holds, failing the test if it does not within
// a generous bound (it is not a timing assertion).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// requestsSoFar returns the requests the aggregator has counted in the
// default segment since the last Take.
func requestsSoFar(agg *Aggregator) uint64 {
	if s := agg.Peek().Segments[DefaultSegment]; s != nil {
		return s.Counts.Requests
	}
	return 0
}

// A primary body that breaks off while it streams to the caller aborts the
// caller's connection, as without the proxy, and the request is counted
// once, as the primary's error.
func TestProxyCountsPrimaryBodyBreakingOff(t *testing.T) {
	primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100000")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"label":"ben`)
		w.(http.Flusher).Flush()
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close()
		}
	}))
	defer primary.Close()
	rec := &recordingShadow{}
	shadow := httptest.NewServer(rec)
	defer shadow.Close()
	p, proxy, agg := startProxy(t, primary, shadow, ProxyConfig{})
	resp, err := http.Post(proxy.URL+"/predict", "application/json", strings.NewReader(`{}`))
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("caller read a broken-off response to its end without an error")
	}
	waitFor(t, "the request to be counted", func() bool { return requestsSoFar(agg) > 0 })
	p.Close()
	if got, want := agg.Take().Segments[DefaultSegment].Counts, (Counts{Requests: 1, PrimaryErrors: 1}); got != want {
		t.Fatalf("counts: got %+v, want %+v", got, want)
	}
	if rec.calls() != 0 {
		t.Fatalf("shadow got %d copies of a failed exchange", rec.calls())
	}
}

// A caller that leaves while the primary's 2xx body streams is counted
// once, as not mirrored: neither side is to blame.
func TestProxyCountsCallerLeavingMidBody(t *testing.T) {
	release := make(chan struct{})
	primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"label":"benign"`)
		w.(http.Flusher).Flush()
		<-release
		for i := 0; i < 1000; i++ {
			if _, err := w.Write(make([]byte, 64<<10)); err != nil {
				return
			}
		}
	}))
	defer primary.Close()
	defer close(release) // before primary.Close, which waits for its handlers
	rec := &recordingShadow{}
	shadow := httptest.NewServer(rec)
	defer shadow.Close()
	p, proxy, agg := startProxy(t, primary, shadow, ProxyConfig{})
	c, err := net.Dial("tcp", proxy.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, "POST /predict HTTP/1.1\r\nHost: m\r\nContent-Length: 2\r\n\r\n{}")
	if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
		t.Fatal(err)
	}
	c.Close()
	release <- struct{}{}
	waitFor(t, "the request to be counted", func() bool { return requestsSoFar(agg) > 0 })
	p.Close()
	if got, want := agg.Take().Segments[DefaultSegment].Counts, (Counts{Requests: 1}); got != want {
		t.Fatalf("counts: got %+v, want %+v (not mirrored)", got, want)
	}
}

// gzipJSON answers body, gzipped when the request accepts gzip.
func gzipJSON(w http.ResponseWriter, r *http.Request, body string) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		_, _ = io.WriteString(w, body)
		return
	}
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, _ = io.WriteString(zw, body)
	_ = zw.Close()
	w.Header().Set("Content-Encoding", "gzip")
	w.Header().Set("Content-Length", fmt.Sprint(b.Len()))
	_, _ = w.Write(b.Bytes())
}

// The caller's Accept-Encoding reaches the primary untouched, and the
// caller gets the primary's bytes: compressed when it asked, plain with
// the same framing when it did not.
func TestProxyLeavesContentCodingToCaller(t *testing.T) {
	var seen []string
	primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Get("Accept-Encoding"))
		gzipJSON(w, r, `{"label":"benign"}`)
	}))
	defer primary.Close()
	rec := &recordingShadow{}
	shadow := httptest.NewServer(rec)
	defer shadow.Close()
	p, proxy, _ := startProxy(t, primary, shadow, ProxyConfig{})
	for _, ae := range []string{"", "Accept-Encoding: gzip\r\n"} {
		req := "POST /predict HTTP/1.1\r\nHost: m\r\n" + ae + "Content-Length: 2\r\n\r\n{}"
		direct := rawRequest(t, primary.Listener.Addr().String(), req)
		via := rawRequest(t, proxy.Listener.Addr().String(), req)
		db, _ := io.ReadAll(direct.Body)
		vb, err := io.ReadAll(via.Body)
		if err != nil {
			t.Fatal(err)
		}
		if via.ContentLength != direct.ContentLength || !bytes.Equal(vb, db) ||
			via.Header.Get("Content-Encoding") != direct.Header.Get("Content-Encoding") {
			t.Errorf("%q: via the proxy got length %d, coding %q, body %q; directly %d, %q, %q", ae,
				via.ContentLength, via.Header.Get("Content-Encoding"), vb, direct.ContentLength, direct.Header.Get("Content-Encoding"), db)
		}
	}
	p.Close()
	if want := []string{"", "", "gzip", "gzip"}; strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Fatalf("primary saw Accept-Encoding %q, want %q", seen, want)
	}
}

// Compressed answers are compared on their decoded bodies, over either
// shadow transport.
func TestProxyComparesCompressedBodies(t *testing.T) {
	primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gzipJSON(w, r, fmt.Sprintf(`{"label":%q}`, r.Header.Get("X-Label")))
	}))
	defer primary.Close()
	shadow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gzipJSON(w, r, `{"label":"benign"}`)
	}))
	defer shadow.Close()
	for _, tr := range []http.RoundTripper{nil, newTransport(1)} {
		t.Run(fmt.Sprintf("%T", tr), func(t *testing.T) {
			p, proxy, agg := startProxy(t, primary, shadow, ProxyConfig{ShadowTransport: tr})
			for _, label := range []string{"benign", "malignant"} {
				do(t, "POST", proxy.URL+"/predict", []byte(`{}`), map[string]string{"X-Label": label, "Accept-Encoding": "gzip"})
			}
			p.Close()
			got := agg.Take().Segments[DefaultSegment].Counts
			want := Counts{Requests: 2, Mirrored: 2, Compared: 2, Agreements: 1, Disagreements: 1}
			if got != want {
				t.Fatalf("counts: got %+v, want %+v", got, want)
			}
		})
	}
}

// A compressed answer larger than the body limit once decoded is counted
// as a body over the limit is: oversize for the primary, a shadow error
// for the shadow.
func TestProxyCountsDecodedBodyOverLimit(t *testing.T) {
	big := `{"label":"benign","pad":"` + strings.Repeat("x", 8<<10) + `"}`
	primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := `{"label":"benign"}`
		if r.Header.Get("X-Big") != "" {
			body = big
		}
		gzipJSON(w, r, body)
	}))
	defer primary.Close()
	shadow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { gzipJSON(w, r, big) }))
	defer shadow.Close()
	p, proxy, agg := startProxy(t, primary, shadow, ProxyConfig{BodyLimit: 4 << 10})
	hdr := map[string]string{"Accept-Encoding": "gzip"}
	do(t, "POST", proxy.URL+"/predict", []byte(`{}`), hdr) // shadow's answer too big
	hdr["X-Big"] = "1"
	got := do(t, "POST", proxy.URL+"/predict", []byte(`{}`), hdr)
	if zr, err := gzip.NewReader(bytes.NewReader(got.body)); err != nil {
		t.Fatalf("caller got %q: %v", got.body, err)
	} else if b, err := io.ReadAll(zr); err != nil || string(b) != big {
		t.Fatalf("caller got %d bytes decoded (%v), want the primary's %d", len(b), err, len(big))
	}
	p.Close()
	counts := agg.Take().Segments[DefaultSegment].Counts
	if want := (Counts{Requests: 2, Mirrored: 1, ShadowErrors: 1, Oversize: 1}); counts != want {
		t.Fatalf("counts: got %+v, want %+v", counts, want)
	}
}

func TestDecoderContentCodings(t *testing.T) {
	const body = `{"label":"benign"}`
	enc := func(coding string, b []byte) []byte {
		var out bytes.Buffer
		var w io.WriteCloser
		switch coding {
		case "gzip":
			w = gzip.NewWriter(&out)
		case "zlib":
			w = zlib.NewWriter(&out)
		case "flate":
			w, _ = flate.NewWriter(&out, flate.BestSpeed)
		}
		_, _ = w.Write(b)
		_ = w.Close()
		return out.Bytes()
	}
	gz := enc("gzip", []byte(body))
	tests := []struct {
		name     string
		in       []byte
		encoding []string
		limit    int64
		want     string
		err      error // errDecodedOverLimit, or errAny for another error
	}{
		{"none", []byte(body), nil, 64, body, nil},
		{"identity", []byte(body), []string{"identity"}, 64, body, nil},
		{"gzip", gz, []string{"gzip"}, 64, body, nil},
		{"x-gzip, upper case", gz, []string{"X-GZIP"}, 64, body, nil},
		{"deflate, zlib-wrapped", enc("zlib", []byte(body)), []string{"deflate"}, 64, body, nil},
		{"deflate, raw", enc("flate", []byte(body)), []string{"deflate"}, 64, body, nil},
		{"two codings in one value", enc("gzip", enc("zlib", []byte(body))), []string{"deflate, gzip"}, 64, body, nil},
		{"two codings in two values", enc("gzip", enc("zlib", []byte(body))), []string{"deflate", "identity", "gzip"}, 64, body, nil},
		{"exactly the limit", gz, []string{"gzip"}, int64(len(body)), body, nil},
		{"over the limit", gz, []string{"gzip"}, int64(len(body)) - 1, "", errDecodedOverLimit},
		{"unknown coding", []byte(body), []string{"br"}, 64, "", errAny},
		{"not gzip", []byte(body), []string{"gzip"}, 64, "", errAny},
		{"truncated", gz[:len(gz)-4], []string{"gzip"}, 64, "", errAny},
		{"too many codings", []byte(body), []string{"gzip, gzip, gzip, gzip, gzip"}, 64, "", errAny},
	}
	d := new(decoder)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := d.decode(tt.in, tt.encoding, tt.limit)
			switch {
			case tt.err == nil && err != nil:
				t.Fatalf("got error %v, want %q", err, tt.want)
			case tt.err == errAny && err == nil, tt.err == errDecodedOverLimit && !errors.Is(err, errDecodedOverLimit):
				t.Fatalf("got %q, %v; want error %v", got, err, tt.err)
			case tt.err == nil && string(got) != tt.want:
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			d.release()
		})
	}
}

var errAny = errors.New("any error")

// The primary sees the forwarding headers a load balancer in front of the
// proxy set, as the shadow does, except those the caller's Connection
// header makes hop-by-hop.
func TestProxyKeepsForwardingHeaders(t *testing.T) {
	var seen http.Header
	primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Clone()
		primaryHandler(w, r)
	}))
	defer primary.Close()
	rec := &recordingShadow{}
	shadow := httptest.NewServer(rec)
	defer shadow.Close()
	p, proxy, _ := startProxy(t, primary, shadow, ProxyConfig{})
	resp := rawRequest(t, proxy.Listener.Addr().String(), "POST /predict HTTP/1.1\r\nHost: m\r\n"+
		"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 198.51.100.1\r\nX-Forwarded-Proto: https\r\n"+
		"Forwarded: for=203.0.113.7;proto=https\r\nX-Forwarded-Host: models.example\r\n"+
		"Connection: keep-alive, X-Forwarded-Host\r\nContent-Length: 2\r\n\r\n{}")
	_, _ = io.Copy(io.Discard, resp.Body)
	p.Close()
	want := http.Header{
		"X-Forwarded-For":   {"203.0.113.7", "198.51.100.1"},
		"X-Forwarded-Proto": {"https"},
		"Forwarded":         {"for=203.0.113.7;proto=https"},
	}
	for _, side := range []struct {
		name string
		h    http.Header
	}{{"primary", seen}, {"shadow", rec.headers[0]}} {
		for k, v := range want {
			if got := side.h.Values(k); strings.Join(got, "|") != strings.Join(v, "|") {
				t.Errorf("%s: %s = %q, want %q", side.name, k, got, v)
			}
		}
		if got := side.h.Values("X-Forwarded-Host"); len(got) != 0 {
			t.Errorf("%s: X-Forwarded-Host = %q, named by Connection so hop-by-hop", side.name, got)
		}
	}
}

// A success without a body (204) has no prediction: it is counted as not
// mirrored, not as the primary's error, and no copy is sent.
func TestProxyNoContentNotCompared(t *testing.T) {
	primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	defer primary.Close()
	rec := &recordingShadow{}
	shadow := httptest.NewServer(rec)
	defer shadow.Close()
	p, proxy, agg := startProxy(t, primary, shadow, ProxyConfig{})
	if got := do(t, "POST", proxy.URL+"/predict", []byte(`{}`), nil); got.status != http.StatusNoContent {
		t.Fatalf("status %d, want 204", got.status)
	}
	p.Close()
	if got, want := agg.Take().Segments[DefaultSegment].Counts, (Counts{Requests: 1}); got != want || rec.calls() != 0 {
		t.Fatalf("counts %+v and %d copies; want %+v and none", got, rec.calls(), want)
	}
}

// A request body's buffer follows the bytes that arrived, not the length
// the caller announced, and never outgrows the limit.
func TestReadUpToAllocatesAsBytesArrive(t *testing.T) {
	const limit = 1 << 20
	tests := []struct {
		name      string
		body      int
		hint      int64
		wantCapLE int
	}{
		{"small, known length", 100, 100, 101},
		{"announced 1 MiB, sent 10 bytes", 10, limit, readStart},
		{"announced 1 MiB, sent 100 KiB", 100 << 10, limit, 2 * (100 << 10)},
		{"unknown length, over the limit", 3 * limit, -1, limit + 1},
		{"known length, over the limit", 3 * limit, 3 * limit, limit + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := iotest.HalfReader(bytes.NewReader(make([]byte, tt.body)))
			got, err := readUpTo(r, tt.hint, limit+1)
			if err != nil {
				t.Fatal(err)
			}
			if want := min(tt.body, limit+1); len(got) != want {
				t.Fatalf("read %d bytes, want %d", len(got), want)
			}
			if cap(got) > tt.wantCapLE {
				t.Fatalf("capacity %d, want at most %d", cap(got), tt.wantCapLE)
			}
		})
	}
}

// fakeShadow serves raw HTTP/1.1 on 127.0.0.1: answer writes the response
// to each request it reads.
func fakeShadow(t testing.TB, answer func(c net.Conn, r *http.Request)) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					answer(c, req)
				}
			}()
		}
	}()
	return &httptest.Server{URL: "http://" + ln.Addr().String()}
}

// A shadow answering with headers past 1 MiB fails that exchange (a shadow
// error) instead of growing the proxy's memory with them.
func TestProxyShadowHeadersBounded(t *testing.T) {
	shadow := fakeShadow(t, func(c net.Conn, r *http.Request) {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: ")
		chunk := []byte(strings.Repeat("a", 64<<10))
		for i := 0; i < 64; i++ { // 4 MiB
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
		_, _ = io.WriteString(c, "\r\nContent-Length: 18\r\n\r\n{\"label\":\"benign\"}")
	})
	primary := httptest.NewServer(http.HandlerFunc(primaryHandler))
	defer primary.Close()
	p, proxy, agg := startProxy(t, primary, shadow, ProxyConfig{Workers: 1, Timeout: time.Minute})
	do(t, "POST", proxy.URL+"/predict", []byte(`{}`), map[string]string{"X-Label": "benign"})
	p.Close()
	if got, want := agg.Take().Segments[DefaultSegment].Counts, (Counts{Requests: 1, Mirrored: 1, ShadowErrors: 1}); got != want {
		t.Fatalf("counts: got %+v, want %+v", got, want)
	}
}

// A shadow that sends bytes past the end of a response, with it or later
// while the connection is idle, costs no comparison: the worker's
// connection is not reused with those bytes, which would be read as the
// next response.
func TestProxyShadowBytesPastResponse(t *testing.T) {
	primary := httptest.NewServer(http.HandlerFunc(primaryHandler))
	defer primary.Close()
	const stray = "HTTP/1.1 200 OK\r\nContent-Length: 21\r\n\r\n{\"label\":\"malignant\"}"
	for _, tr := range []http.RoundTripper{nil, newTransport(1)} {
		for _, tc := range []struct {
			name, extra string
			idle        bool // the extra bytes come once the exchange is over
		}{
			{"newline", "\n", false},
			{"response", stray, false},
			{"response while idle", stray, true},
		} {
			if tc.idle && tr != nil {
				// http.Transport's reader notices such bytes only as it
				// gets to them, and now and then a request takes the
				// connection first (net/http's race, not the proxy's).
				continue
			}
			t.Run(fmt.Sprintf("%T/%s", tr, tc.name), func(t *testing.T) {
				send := make(chan struct{})
				sent := make(chan struct{})
				shadow := fakeShadow(t, func(c net.Conn, r *http.Request) {
					body := fmt.Sprintf(`{"label":%q}`, r.Header.Get("X-Label"))
					resp := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
					if !tc.idle {
						_, _ = io.WriteString(c, resp+tc.extra)
						return
					}
					_, _ = io.WriteString(c, resp)
					<-send
					_, _ = io.WriteString(c, tc.extra)
					sent <- struct{}{}
				})
				p, proxy, agg := startProxy(t, primary, shadow, ProxyConfig{Workers: 1, ShadowTransport: tr})
				const n = 6
				for i := 0; i < n; i++ {
					do(t, "POST", proxy.URL+"/predict", []byte(`{}`), map[string]string{"X-Label": "benign"})
					// One copy at a time: http.Transport may otherwise reuse
					// the connection before its reader has seen the stray
					// bytes, a race of net/http's and not the proxy's.
					waitFor(t, "the copy to be recorded", func() bool { return requestsSoFar(agg) == uint64(i+1) })
					if tc.idle {
						send <- struct{}{}
						<-sent
					}
				}
				p.Close()
				if got, want := agg.Take().Segments[DefaultSegment].Counts, (Counts{Requests: n, Mirrored: n, Compared: n, Agreements: n}); got != want {
					t.Fatalf("counts: got %+v, want %+v", got, want)
				}
			})
		}
	}
}
