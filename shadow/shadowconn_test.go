package shadow

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// A shadow that closes a keep-alive connection while it is idle must not
// cost a comparison: the worker sends the copy again on a new connection.
func TestProxyShadowClosesIdleConnection(t *testing.T) {
	primary := httptest.NewServer(http.HandlerFunc(primaryHandler))
	defer primary.Close()
	rec := &recordingShadow{}
	shadow := httptest.NewUnstartedServer(rec)
	var closed atomic.Bool
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	shadow.Config.ConnState = func(c net.Conn, s http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		if s == http.StateNew {
			conns[c] = true
		}
		// The first connection is closed once its first answer is written.
		if s == http.StateIdle && closed.CompareAndSwap(false, true) {
			_ = c.Close()
		}
	}
	shadow.Start()
	defer shadow.Close()
	p, proxy, agg := startProxy(t, primary, shadow, ProxyConfig{Workers: 1, SegmentHeader: "X-Segment"})
	hdr := map[string]string{"X-Label": "benign", "X-Segment": "site-a"}
	for i := 0; i < 3; i++ {
		if got := do(t, "POST", proxy.URL+"/predict", []byte(`{"x":1}`), hdr); got.status != http.StatusOK {
			t.Fatalf("request %d: status %d", i, got.status)
		}
	}
	p.Close()
	c := agg.Take().Segments["site-a"].Counts
	want := Counts{Requests: 3, Mirrored: 3, Compared: 3, Agreements: 3}
	if c != want {
		t.Fatalf("counts: got %+v, want %+v", c, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if !closed.Load() || len(conns) != 2 || rec.calls() != 3 {
		t.Fatalf("shadow: closed %v, %d connections, %d copies; want true, 2, 3", closed.Load(), len(conns), rec.calls())
	}
}

type countingTransport struct {
	http.RoundTripper
	n atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.RoundTripper.RoundTrip(r)
}

// A configured ShadowTransport carries every copy.
func TestProxyShadowTransport(t *testing.T) {
	primary := httptest.NewServer(http.HandlerFunc(primaryHandler))
	defer primary.Close()
	rec := &recordingShadow{}
	shadow := httptest.NewServer(rec)
	defer shadow.Close()
	tr := &countingTransport{RoundTripper: http.DefaultTransport.(*http.Transport).Clone()}
	p, proxy, agg := startProxy(t, primary, shadow, ProxyConfig{ShadowTransport: tr, SegmentHeader: "X-Segment"})
	hdr := map[string]string{"X-Label": "malignant", "X-Segment": "site-a"}
	for i := 0; i < 4; i++ {
		do(t, "POST", proxy.URL+"/predict", []byte(`{"x":1}`), hdr)
	}
	p.Close()
	c := agg.Take().Segments["site-a"].Counts
	if c.Compared != 4 || c.Agreements != 4 || tr.n.Load() != 4 || rec.calls() != 4 {
		t.Fatalf("got %+v and %d round trips, %d copies; want 4 agreements over the transport", c, tr.n.Load(), rec.calls())
	}
}
