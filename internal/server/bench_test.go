package server

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
)

// BenchmarkGetVersionPaced issues GetVersion over Connect (binary, h2c) at
// a paced 1,000 requests/s, as a CI fleet would, and reports the latency
// quantiles. Run it with a fixed count, e.g. -benchtime=3000x (three
// seconds of traffic).
func BenchmarkGetVersionPaced(b *testing.B) {
	ts := newTestServer(b)
	for i := range 20 {
		if _, err := ts.push(ts.admin, "credit-risk", "1."+string(rune('a'+i)), map[string]string{"w.bin": "weights " + string(rune('a'+i)), "config.json": "{}"}); err != nil {
			b.Fatal(err)
		}
	}
	c := ts.registry(ts.admin)
	req := &registryv1.GetVersionRequest{Model: "credit-risk", Ref: "1.c"}
	if _, err := c.GetVersion(context.Background(), connect.NewRequest(req)); err != nil {
		b.Fatal(err)
	}
	const rate = 1000
	lat := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	var failed sync.Once
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		// Open-loop pacing: request i is due at start + i/rate whether or
		// not earlier ones have answered, so slow answers are not hidden.
		if d := time.Until(start.Add(time.Duration(i) * time.Second / rate)); d > 0 {
			time.Sleep(d)
		}
		wg.Go(func() {
			t0 := time.Now()
			if _, err := c.GetVersion(context.Background(), connect.NewRequest(req)); err != nil {
				failed.Do(func() { b.Error(err) })
			}
			lat[i] = time.Since(t0)
		})
	}
	wg.Wait()
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}
