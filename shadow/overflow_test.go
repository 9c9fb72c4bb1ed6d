package shadow

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// countingReporter accepts every batch and counts them.
type countingReporter struct{ n int }

func (r *countingReporter) Deliver(context.Context, *SignedBatch) error { r.n++; return nil }

func numericComparator(t testing.TB) *Comparator {
	return mustComparator(t, ComparatorConfig{Kind: KindNumeric, Pointer: "/s", AbsTol: 0.1})
}

// A compared pair whose difference overflows float64 (both values finite)
// must not wedge the agent: its batch decodes, is delivered, and later
// flushes deliver too. The difference is recorded as MaxFloat64, and the
// summary's mean is the maximum (the sum saturated).
func TestAgentDeliversOverflowingDifference(t *testing.T) {
	cmp := numericComparator(t)
	v1, err := cmp.Extract([]byte(`{"s": 1.7e308}`))
	if err != nil {
		t.Fatal(err)
	}
	v2, err := cmp.Extract([]byte(`{"s": -1.7e308}`))
	if err != nil {
		t.Fatal(err)
	}
	agg := NewAggregator(cmp)
	rep := &countingReporter{}
	_, key := testKey(t, 1)
	a, err := NewAgent(agg, AgentConfig{DeploymentID: "shd_x", AgentID: "shd_x", Key: key, Reporter: rep, FirstSequence: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := agg.Record(Observation{Outcome: OutcomeCompared, Primary: v1, Shadow: v2}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		_ = agg.Record(Observation{Outcome: OutcomeDropped})
		if err := a.Flush(context.Background()); err != nil {
			t.Fatalf("flush %d: %v", i, err)
		}
	}
	if rep.n != 3 || requests(a.Undelivered()) != 0 || requests(a.Delivered()) != 4 {
		t.Fatalf("delivered %d batches, %d requests, %d undelivered; want 3 batches, 4 requests, 0 undelivered",
			rep.n, requests(a.Delivered()), requests(a.Undelivered()))
	}
	seg := a.Delivered().Segments[DefaultSegment]
	if seg.DeltaMax != math.MaxFloat64 || seg.DeltaSumNano != math.MaxUint64 || seg.Disagreements != 1 {
		t.Fatalf("segment: max %g sum %d disagreements %d; want MaxFloat64, MaxUint64, 1", seg.DeltaMax, seg.DeltaSumNano, seg.Disagreements)
	}
	nd := Summarize(Deployment{}, a.Delivered(), 1).Overall.NumericDelta
	if nd == nil || nd.MeanAbs != math.MaxFloat64 || nd.MaxAbs != math.MaxFloat64 {
		t.Fatalf("numeric delta: got %+v, want mean and max MaxFloat64", nd)
	}
}

// Whatever numbers a model answers, or an embedder records directly, the
// evidence an aggregator hands out encodes, decodes under the registry's
// checks, and merges with any other such evidence.
func TestAggregatorEvidenceAlwaysDecodes(t *testing.T) {
	cmp := mustComparator(t, ComparatorConfig{Kind: KindNumeric, Pointer: "/s", RelTol: 2, Edges: []float64{-1, 0, 1}})
	extremes := []float64{0, 1, -1, 5e9, -5e9, 1e10, math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64,
		math.Inf(1), math.Inf(-1), math.NaN(), 1 << 62, 1.8e10}
	rng := rand.New(rand.NewPCG(7, 7))
	total := NewEvidence(cmp)
	_, key := testKey(t, 1)
	for seq := uint64(1); seq <= 40; seq++ {
		agg := NewAggregator(cmp)
		for range 1 + rng.IntN(30) {
			o := Observation{Segment: []string{"", "a", "b"}[rng.IntN(3)], Outcome: OutcomeCompared,
				Primary: Value{Number: extremes[rng.IntN(len(extremes))], IsNumber: true},
				Shadow:  Value{Number: extremes[rng.IntN(len(extremes))], IsNumber: true}}
			if err := agg.Record(o); err != nil {
				t.Fatal(err)
			}
		}
		sb, err := SignBatch(&Batch{DeploymentID: "shd_x", AgentID: "shd_x", Sequence: seq, Evidence: agg.Take()}, key)
		if err != nil {
			t.Fatalf("batch %d: %v", seq, err)
		}
		b, err := DecodeBatch(sb.Payload)
		if err != nil {
			t.Fatalf("batch %d does not decode: %v", seq, err)
		}
		if err := total.MergeLimit(b.Evidence, 0); err != nil {
			t.Fatalf("merging batch %d: %v", seq, err)
		}
	}
	raw, err := MarshalEvidence(total)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := UnmarshalEvidence(raw); err != nil {
		t.Fatalf("merged evidence does not decode: %v", err)
	}
}

// Large differences saturate the fixed-point sum instead of failing a
// merge, in any order, and the summary then reports the maximum as the
// mean rather than a sum divided into nothing.
func TestDeltaSumSaturatesInAnyOrder(t *testing.T) {
	cmp := numericComparator(t)
	mk := func(deltas ...float64) *Evidence {
		agg := NewAggregator(cmp)
		for _, d := range deltas {
			_ = agg.Record(Observation{Outcome: OutcomeCompared, Primary: Value{IsNumber: true}, Shadow: Value{Number: d, IsNumber: true}})
		}
		return agg.Take()
	}
	parts := []*Evidence{mk(1, 2), mk(1e10, 1e10), mk(5e9, 3), mk(0.5)}
	var want string
	for _, order := range [][]int{{0, 1, 2, 3}, {3, 2, 1, 0}, {1, 3, 0, 2}} {
		ev := NewEvidence(cmp)
		for _, i := range order {
			if err := ev.Merge(parts[i].Clone()); err != nil {
				t.Fatalf("merge in order %v: %v", order, err)
			}
		}
		seg := ev.Segments[DefaultSegment]
		if seg.DeltaSumNano != math.MaxUint64 || seg.DeltaCount != 7 || seg.DeltaMax != 1e10 {
			t.Fatalf("order %v: sum %d count %d max %g", order, seg.DeltaSumNano, seg.DeltaCount, seg.DeltaMax)
		}
		got := summaryJSON(t, ev)
		if want == "" {
			want = got
		} else if got != want {
			t.Fatalf("order %v gives another summary:\n%s\n%s", order, got, want)
		}
	}
	ev := NewEvidence(cmp)
	_ = ev.Merge(parts[1])
	if nd := Summarize(Deployment{}, ev, 1).Overall.NumericDelta; nd.MeanAbs != 1e10 {
		t.Fatalf("mean of a saturated sum: got %g, want the maximum 1e10", nd.MeanAbs)
	}
	// Below saturation the mean is exact.
	if nd := Summarize(Deployment{}, parts[0], 1).Overall.NumericDelta; nd.MeanAbs != 1.5 || nd.MaxAbs != 2 {
		t.Fatalf("mean of 1 and 2: got %+v", nd)
	}
}

// The overall figures fold segments with saturating sums: two segments
// whose delta sums add past 2^64 must not wrap to a small overall mean.
func TestSummaryOverallDeltaDoesNotWrap(t *testing.T) {
	ev := NewEvidence(numericComparator(t))
	for _, name := range []string{"a", "b"} {
		s := ev.segment(name)
		s.Requests, s.Mirrored, s.Compared, s.Disagreements = 1, 1, 1, 1
		s.PrimaryHist[0], s.ShadowHist[0] = 1, 1
		s.DeltaCount, s.DeltaSumNano, s.DeltaMax = 1, 1<<63, 9.3e9
	}
	// Through the wire format, as the registry would see it.
	raw, err := MarshalEvidence(ev)
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalEvidence(raw)
	if err != nil {
		t.Fatal(err)
	}
	sum := Summarize(Deployment{}, back, 1)
	seg, all := sum.Segments["a"].NumericDelta.MeanAbs, sum.Overall.NumericDelta.MeanAbs
	if all < seg || all > sum.Overall.NumericDelta.MaxAbs {
		t.Fatalf("segment mean %g, overall mean %g (max %g): the overall sum wrapped", seg, all, sum.Overall.NumericDelta.MaxAbs)
	}
}

// Decoding bounds the numeric figures by each other: no sum above what
// count differences of at most the maximum can add up to, and no maximum
// without differences.
func TestDecodeBoundsDeltaSum(t *testing.T) {
	mk := func(count, sum uint64, max float64) *Evidence {
		ev := NewEvidence(numericComparator(t))
		s := ev.segment("a")
		s.Requests, s.Mirrored, s.Compared, s.Agreements = 2, 2, 2, 2
		s.PrimaryHist[0], s.ShadowHist[0] = 2, 2
		s.DeltaCount, s.DeltaSumNano, s.DeltaMax = count, sum, max
		return ev
	}
	tests := []struct {
		name string
		ev   *Evidence
		ok   bool
	}{
		{"sum at the bound", mk(2, 2*deltaNanos(0.25), 0.25), true},
		{"sum above the bound", mk(2, 2*deltaNanos(0.25)+1, 0.25), false},
		{"saturated sum, bound saturated", mk(2, math.MaxUint64, 1e10), true},
		{"saturated sum, small maximum", mk(2, math.MaxUint64, 1), false},
		{"maximum without differences", mk(0, 0, 1), false},
		{"sum without differences", mk(0, 1, 0), false},
	}
	for _, tt := range tests {
		raw, err := MarshalEvidence(tt.ev)
		if err != nil {
			t.Fatal(err)
		}
		_, err = UnmarshalEvidence(raw)
		if tt.ok && err != nil || !tt.ok && !errors.Is(err, ErrMalformedBatch) {
			t.Errorf("%s: got %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

// signedRaw signs a hand-made payload: a valid header followed by body.
func signedRaw(t testing.TB, cmp string, numeric bool, bins, segments uint64, body []byte) *SignedBatch {
	t.Helper()
	p := []byte(batchMagic)
	p = appendString(p, "shd_x")
	p = appendString(p, "shd_x")
	p = binary.AppendUvarint(p, 1)
	p = binary.AppendVarint(p, 0)
	p = binary.AppendVarint(p, 0)
	p = appendString(p, cmp)
	if numeric {
		p = append(p, 1)
	} else {
		p = append(p, 0)
	}
	p = binary.AppendUvarint(p, bins)
	p = binary.AppendUvarint(p, segments)
	p = append(p, body...)
	_, key := testKey(t, 1)
	return &SignedBatch{Payload: p, Signature: ed25519.Sign(key, signedMessage(p))}
}

// A batch signed by the agent but gathered under another comparator shape,
// or declaring more segments than allowed, is refused from its header: the
// segments that follow (here, bytes that do not decode) are never looked at.
func TestVerifyBatchRefusesFromHeader(t *testing.T) {
	cmp := mustComparator(t, ComparatorConfig{Kind: KindNumeric, Pointer: "/s", Edges: []float64{0.5}})
	pub, _ := testKey(t, 1)
	want := Expectation{DeploymentID: "shd_x", AgentID: "shd_x", PublicKey: pub, Comparator: cmp}
	junk := make([]byte, 1<<16)
	for i := range junk {
		junk[i] = 0xff
	}
	tests := []struct {
		name   string
		sb     *SignedBatch
		target error
	}{
		{"numeric flag cleared", signedRaw(t, cmp.Digest(), false, 2, 1, junk), ErrComparatorMismatch},
		{"other bin count", signedRaw(t, cmp.Digest(), true, 3, 1, junk), ErrComparatorMismatch},
		{"other digest", signedRaw(t, "sha256:00", true, 2, 1, junk), ErrComparatorMismatch},
		{"too many segments", signedRaw(t, cmp.Digest(), true, 2, DefaultMaxSegments+2, junk), ErrTooManySegments},
		{"allowed shape, junk segments", signedRaw(t, cmp.Digest(), true, 2, DefaultMaxSegments+1, junk), ErrMalformedBatch},
	}
	for _, tt := range tests {
		_, err := VerifyBatch(tt.sb, want)
		if !errors.Is(err, tt.target) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.target)
		}
	}
	// The header as PeekBatch reads it is the one DecodeBatch reads.
	b := sampleBatch(t, 5)
	payload, _ := b.MarshalBinary()
	h, err := PeekBatch(payload)
	if err != nil {
		t.Fatal(err)
	}
	if h.ID() != b.ID() || !h.Start.Equal(b.Start) || !h.End.Equal(b.End) || h.Comparator != b.Evidence.Comparator ||
		h.Bins != b.Evidence.Bins || h.Numeric != b.Evidence.Numeric || h.Segments != len(b.Evidence.Segments) {
		t.Fatalf("PeekBatch: got %+v for batch %s", h, b.ID())
	}
}

// The agent must keep delivering after a long run of large differences:
// the saturated sum keeps every batch decodable.
func TestAgentKeepsDeliveringSaturatedSums(t *testing.T) {
	cmp := numericComparator(t)
	agg := NewAggregator(cmp)
	rep := &countingReporter{}
	_, key := testKey(t, 1)
	a, err := NewAgent(agg, AgentConfig{DeploymentID: "shd_x", AgentID: "shd_x", Key: key, Reporter: rep, FirstSequence: 1, Now: func() time.Time { return time.Unix(0, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		for range 10 {
			_ = agg.Record(Observation{Outcome: OutcomeCompared, Primary: Value{IsNumber: true}, Shadow: Value{Number: 1e10, IsNumber: true}})
		}
		if err := a.Flush(context.Background()); err != nil {
			t.Fatalf("flush %d: %v", i, err)
		}
	}
	if rep.n != 5 || a.Delivered().Segments[DefaultSegment].Compared != 50 {
		t.Fatalf("delivered %d batches, %d compared; want 5, 50", rep.n, a.Delivered().Segments[DefaultSegment].Compared)
	}
}
