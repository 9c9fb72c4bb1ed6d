package shadow

import (
	"math/rand/v2"
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
