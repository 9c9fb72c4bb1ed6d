package shadow

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkRecordCompared measures evidence ingestion: one compared pair per
// op into per-segment sketches and histograms (target ≥ 200k/s per core;
// run with -cpu 1).
func BenchmarkRecordCompared(b *testing.B) {
	c := mustComparator(b, ComparatorConfig{Pointer: "/label", Labels: []string{"malignant", "benign"}})
	agg := NewAggregator(c)
	r := rand.New(rand.NewPCG(1, 1))
	obs := make([]Observation, 4096)
	segs := []string{"site-a", "site-b", "site-c", "site-d"}
	labels := []string{"malignant", "benign"}
	for i := range obs {
		obs[i] = Observation{Segment: segs[r.IntN(4)], Outcome: OutcomeCompared,
			PrimaryLatency: time.Duration(r.IntN(20000)+200) * time.Microsecond,
			ShadowLatency:  time.Duration(r.IntN(20000)+200) * time.Microsecond,
			Primary:        Value{Label: labels[r.IntN(2)]}, Shadow: Value{Label: labels[r.IntN(2)]}}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = agg.Record(obs[i&4095])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
}

// BenchmarkVerifyAndMerge measures the registry side: verify a signed batch
// and merge it.
func BenchmarkVerifyAndMerge(b *testing.B) {
	pub, priv := testKey(b, 1)
	batch := sampleBatch(b, 1)
	sb, err := SignBatch(batch, priv)
	if err != nil {
		b.Fatal(err)
	}
	merged := batch.Evidence.Clone()
	want := Expectation{DeploymentID: batch.DeploymentID, AgentID: batch.AgentID, PublicKey: pub}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		got, err := VerifyBatch(sb, want)
		if err != nil {
			b.Fatal(err)
		}
		if err := merged.Merge(got.Evidence); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProxy drives the whole proxy in process: a client, the proxy, a
// primary and (when mirroring) a shadow, all over loopback HTTP/1.1 with
// keep-alive. allocs/op counts every allocation in the process for one
// request (client, proxy, both upstreams), so compare variants with each
// other: the no-mirror variant is the reference. "slow" shadows answer
// after 2 ms, so most copies queue or drop; the drop share is reported.
func BenchmarkProxy(b *testing.B) {
	answer := []byte(`{"label":"benign","probability":0.12}`)
	fast := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	})
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(2 * time.Millisecond)
		fast(w, r)
	})
	body := []byte(`{"features":[17.99,10.38,122.8,1001,0.1184,0.2776,0.3001,0.1471,0.2419,0.07871,1.095,0.9053,8.589,153.4,0.006399,0.04904,0.05373,0.01587,0.03003,0.006193,25.38,17.33,184.6,2019,0.1622,0.6656,0.7119,0.2654,0.4601,0.1189]}`)
	for _, v := range []struct {
		name   string
		shadow http.Handler
	}{{"no-mirror", nil}, {"fast-shadow", fast}, {"slow-shadow", slow}} {
		b.Run(v.name, func(b *testing.B) {
			primary := httptest.NewServer(fast)
			defer primary.Close()
			cfg := ProxyConfig{SegmentHeader: "X-Segment", DisableMirror: v.shadow == nil}
			var shadow *httptest.Server
			if v.shadow != nil {
				shadow = httptest.NewServer(v.shadow)
				defer shadow.Close()
			}
			p, proxy, agg := startProxy(b, primary, shadow, cfg)
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
			defer client.CloseIdleConnections()
			b.SetParallelism(8)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest("POST", proxy.URL+"/predict", bytes.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("X-Segment", "site-north")
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
			b.StopTimer()
			p.Close()
			c := agg.Take().Segments["site-north"]
			if c != nil && c.Requests > 0 {
				b.ReportMetric(float64(c.Drops)/float64(c.Requests), "drops/req")
			}
		})
	}
}
