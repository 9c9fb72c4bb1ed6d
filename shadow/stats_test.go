package shadow

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestWilsonTextbook(t *testing.T) {
	// Newcombe (1998), "Two-sided confidence intervals for the single
	// proportion", Statistics in Medicine 17:857-872, table I (method 3).
	tests := []struct {
		k, n         uint64
		lower, upper float64
	}{
		{81, 263, 0.2553, 0.3662},
		{15, 148, 0.0624, 0.1605},
		{0, 20, 0, 0.1611},
		{1, 29, 0.0061, 0.1718},
		{29, 29, 0.8830, 1},
	}
	for _, tt := range tests {
		_, lo, hi := Wilson(tt.k, tt.n, z95)
		if math.Abs(lo-tt.lower) > 5e-5 || math.Abs(hi-tt.upper) > 5e-5 {
			t.Errorf("Wilson(%d, %d): got [%.4f, %.4f], want [%.4f, %.4f]", tt.k, tt.n, lo, hi, tt.lower, tt.upper)
		}
	}
	if r, lo, hi := Wilson(0, 0, z95); r != 0 || lo != 0 || hi != 1 {
		t.Errorf("Wilson(0, 0): got (%v, %v, %v), want (0, 0, 1)", r, lo, hi)
	}
}

func TestPSIByHand(t *testing.T) {
	tests := []struct {
		name             string
		expected, actual []uint64
		want             float64
	}{
		// e = (.5,.3,.2), a = (.4,.4,.2):
		// (.4-.5)ln(.4/.5) + (.4-.3)ln(.4/.3) + 0 = 0.0223144 + 0.0287682
		{"shift", []uint64{50, 30, 20}, []uint64{40, 40, 20}, 0.0510826},
		// e = (1, 0 -> 1e-4), a = (.5, .5):
		// (.5-1)ln(.5) + (.5-1e-4)ln(.5/1e-4) = 0.3465736 + 4.2577450
		{"empty bin", []uint64{10, 0}, []uint64{5, 5}, 4.6043186},
		{"identical", []uint64{3, 7}, []uint64{30, 70}, 0},
		{"no data", []uint64{0, 0}, []uint64{1, 2}, 0},
	}
	for _, tt := range tests {
		if got := PSI(tt.expected, tt.actual); math.Abs(got-tt.want) > 1e-6 {
			t.Errorf("%s: PSI got %.7f, want %.7f", tt.name, got, tt.want)
		}
	}
}

func TestSketchQuantilesWithinRelativeError(t *testing.T) {
	s := newLatencySketch()
	r := rand.New(rand.NewPCG(1, 2))
	vals := make([]float64, 20000)
	for i := range vals {
		// log-normal latencies around 2 ms
		ms := math.Exp(r.NormFloat64()*0.8 + math.Log(2))
		vals[i] = ms
		addLatency(s, time.Duration(ms*float64(time.Millisecond)))
	}
	sortFloats(vals)
	for _, q := range []float64{0.5, 0.95, 0.99} {
		got, err := s.GetValueAtQuantile(q)
		if err != nil {
			t.Fatal(err)
		}
		// DDSketch's rank convention: the value of rank q*(n-1).
		want := vals[int(q*float64(len(vals)-1))]
		if rel := math.Abs(got-want) / want; rel > RelativeAccuracy+1e-6 {
			t.Errorf("q%.2f: got %.4f ms, want %.4f ms within %.0f%% (off by %.2f%%)", q, got, want, RelativeAccuracy*100, rel*100)
		}
	}
}

func sortFloats(v []float64) { slices.Sort(v) }

// randomObservations returns n observations over a few segments for
// comparator c.
func randomObservations(r *rand.Rand, n int, numeric bool) []Observation {
	segs := []string{"", "site-a", "site-b", "site-c"}
	labels := []string{"malignant", "benign", "unknown"}
	out := make([]Observation, n)
	for i := range out {
		o := Observation{Segment: segs[r.IntN(len(segs))], PrimaryLatency: time.Duration(r.IntN(5000)+1) * 10 * time.Microsecond}
		switch k := r.IntN(10); {
		case k < 6:
			o.Outcome = OutcomeCompared
			o.ShadowLatency = time.Duration(r.IntN(9000)+1) * 10 * time.Microsecond
			if numeric {
				a, b := r.Float64(), r.Float64()
				o.Primary = Value{Number: a, IsNumber: true}
				o.Shadow = Value{Number: b, IsNumber: true}
			} else {
				o.Primary = Value{Label: labels[r.IntN(3)]}
				o.Shadow = Value{Label: labels[r.IntN(3)]}
			}
		case k == 6:
			o.Outcome = OutcomeShadowError
			o.ShadowLatency = time.Millisecond
		case k == 7:
			o.Outcome = OutcomeTimeout
		case k == 8:
			o.Outcome = OutcomeDropped
		default:
			o.Outcome = []Outcome{OutcomeOversize, OutcomePrimaryError, OutcomeNotMirrored}[r.IntN(3)]
		}
		out[i] = o
	}
	return out
}

func mustComparator(t testing.TB, cfg ComparatorConfig) *Comparator {
	t.Helper()
	c, err := NewComparator(cfg)
	if err != nil {
		t.Fatalf("NewComparator: %v", err)
	}
	return c
}

func summaryJSON(t testing.TB, ev *Evidence) string {
	t.Helper()
	b, err := json.Marshal(Summarize(Deployment{ID: "shd_1"}, ev, 50))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestMergeAnyOrderSameSummary(t *testing.T) {
	for _, numeric := range []bool{false, true} {
		cfg := ComparatorConfig{Kind: KindLabel, Labels: []string{"malignant", "benign"}}
		if numeric {
			cfg = ComparatorConfig{Kind: KindNumeric, AbsTol: 0.1}
		}
		c := mustComparator(t, cfg)
		r := rand.New(rand.NewPCG(7, uint64(len(cfg.Kind))))
		obs := randomObservations(r, 3000, numeric)

		// Reference: everything in one aggregator.
		all := NewAggregator(c)
		for _, o := range obs {
			if err := all.Record(o); err != nil {
				t.Fatal(err)
			}
		}
		want := summaryJSON(t, all.Take())

		for trial := 0; trial < 20; trial++ {
			// Split into random batches, encode/decode them, merge in a
			// shuffled order.
			agg := NewAggregator(c)
			var parts []*Evidence
			for i, o := range obs {
				_ = agg.Record(o)
				if r.IntN(100) == 0 || i == len(obs)-1 {
					parts = append(parts, roundTrip(t, agg.Take()))
				}
			}
			r.Shuffle(len(parts), func(i, j int) { parts[i], parts[j] = parts[j], parts[i] })
			merged := NewEvidence(c)
			for _, p := range parts {
				if err := merged.Merge(p); err != nil {
					t.Fatal(err)
				}
			}
			if got := summaryJSON(t, merged); got != want {
				t.Fatalf("numeric=%v trial %d: merged summary differs:\n got %s\nwant %s", numeric, trial, got, want)
			}
			// Merged state survives its own encoding.
			b, err := MarshalEvidence(merged)
			if err != nil {
				t.Fatal(err)
			}
			back, err := UnmarshalEvidence(b)
			if err != nil {
				t.Fatal(err)
			}
			if got := summaryJSON(t, back); got != want {
				t.Fatalf("evidence round trip changed the summary")
			}
		}
	}
}

func roundTrip(t testing.TB, ev *Evidence) *Evidence {
	t.Helper()
	b, err := MarshalEvidence(ev)
	if err != nil {
		t.Fatalf("MarshalEvidence: %v", err)
	}
	back, err := UnmarshalEvidence(b)
	if err != nil {
		t.Fatalf("UnmarshalEvidence: %v", err)
	}
	return back
}

func TestMergeRefusesOtherComparator(t *testing.T) {
	a := NewEvidence(mustComparator(t, ComparatorConfig{Labels: []string{"x"}}))
	agg := NewAggregator(mustComparator(t, ComparatorConfig{Labels: []string{"y"}}))
	_ = agg.Record(Observation{Outcome: OutcomeDropped})
	if err := a.Merge(agg.Take()); err == nil {
		t.Fatal("merge of evidence from different comparators: got nil error")
	}
}

func TestSummaryShape(t *testing.T) {
	c := mustComparator(t, ComparatorConfig{Kind: KindNumeric, Pointer: "/probability", AbsTol: 0.055})
	agg := NewAggregator(c)
	for i := 0; i < 10; i++ {
		_ = agg.Record(Observation{Segment: "eu", Outcome: OutcomeCompared, PrimaryLatency: time.Millisecond, ShadowLatency: 2 * time.Millisecond,
			Primary: Value{Number: 0.5, IsNumber: true}, Shadow: Value{Number: 0.5 + float64(i)/100, IsNumber: true}})
	}
	_ = agg.Record(Observation{Outcome: OutcomeDropped, PrimaryLatency: time.Millisecond})
	start := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	s := Summarize(Deployment{ID: "shd_x", Candidate: "sha256:c", Baseline: "sha256:b", Alias: "production", PolicySet: "sha256:p", StartedAt: start, UpdatedAt: start.Add(time.Hour)}, agg.Take(), 5)
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"deployment_id", "candidate", "baseline", "alias", "policy_set", "started_at", "updated_at", "status", "min_sample", "overall", "segments", "worst"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("summary lacks %q", k)
		}
	}
	seg := doc["segments"].(map[string]any)["eu"].(map[string]any)
	for _, k := range []string{"n", "sufficient", "agreement", "disagreements", "requests", "shadow_errors", "primary_errors", "timeouts", "drops", "oversize", "error_rate", "drop_rate", "latency_ms", "psi", "numeric_delta"} {
		if _, ok := seg[k]; !ok {
			t.Errorf("segment lacks %q", k)
		}
	}
	eu := s.Segments["eu"]
	// deltas 0..0.09, tolerance 0.055: 0..0.05 agree (6 of 10)
	if eu.N != 10 || eu.Disagreements != 4 || !eu.Sufficient {
		t.Errorf("eu: got n=%d disagreements=%d sufficient=%v, want 10, 4, true", eu.N, eu.Disagreements, eu.Sufficient)
	}
	if math.Abs(eu.NumericDelta.MeanAbs-0.045) > 1e-9 || math.Abs(eu.NumericDelta.MaxAbs-0.09) > 1e-9 {
		t.Errorf("numeric delta: got %+v, want mean 0.045 max 0.09", *eu.NumericDelta)
	}
	if r := eu.LatencyMS.P99Ratio; math.Abs(r-2) > 0.05 {
		t.Errorf("p99 ratio: got %v, want ≈2", r)
	}
	if d := s.Segments[DefaultSegment]; d.Drops != 1 || d.Sufficient || d.DropRate != 1 {
		t.Errorf("default segment: got %+v, want 1 drop, insufficient, drop rate 1", d)
	}
	if s.Overall.Requests != 11 || s.StartedAt != "2026-11-23T09:00:00Z" || s.Status != "running" {
		t.Errorf("overall/header: got requests %d started %q status %q", s.Overall.Requests, s.StartedAt, s.Status)
	}
	if !reflect.DeepEqual(s.Overall.Agreement, eu.Agreement) {
		t.Errorf("overall agreement %+v differs from the only compared segment's %+v", s.Overall.Agreement, eu.Agreement)
	}
}

// TestSummaryWorst checks that worst holds, for each statistic, the least
// favourable value over the overall summary and every segment, whichever
// scope it comes from.
func TestSummaryWorst(t *testing.T) {
	scope := func(n uint64, sufficient bool, lower, ratio, errRate, psi, drop float64) SegmentSummary {
		s := SegmentSummary{N: n, Sufficient: sufficient, ErrorRate: errRate, PSI: psi, DropRate: drop}
		s.Agreement.Lower = lower
		s.LatencyMS.P99Ratio = ratio
		return s
	}
	overall := scope(900, true, 0.97, 1.1, 0.002, 0.01, 0.03)
	segments := map[string]SegmentSummary{
		"eu": scope(300, true, 0.95, 1.4, 0.001, 0.20, 0.00),
		"us": scope(600, true, 0.98, 1.0, 0.010, 0.05, 0.01),
	}
	want := Worst{Sufficient: true, N: 300, AgreementLower: 0.95, P99LatencyRatio: 1.4, ErrorRate: 0.010, PSI: 0.20, DropRate: 0.03}
	if got := worstOver(overall, segments); got != want {
		t.Errorf("worst:\n got %+v\nwant %+v", got, want)
	}
	segments["apac"] = scope(10, false, 0.99, 0.9, 0, 0, 0)
	want.Sufficient, want.N = false, 10
	if got := worstOver(overall, segments); got != want {
		t.Errorf("worst with an insufficient segment:\n got %+v\nwant %+v", got, want)
	}
	if got := worstOver(overall, nil); got != (Worst{Sufficient: true, N: 900, AgreementLower: 0.97, P99LatencyRatio: 1.1, ErrorRate: 0.002, PSI: 0.01, DropRate: 0.03}) {
		t.Errorf("worst without segments is not the overall summary: %+v", got)
	}
}
