package shadow

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestSegmentName(t *testing.T) {
	tests := []struct{ raw, want string }{
		{"", DefaultSegment},
		{"default", DefaultSegment},
		{"site-north", "site-north"},
		{"eu-west_1.a:b/c@d+e", "eu-west_1.a:b/c@d+e"},
		{"42", "42"},
		{"-1.5e+06", "-1.5e+06"},
		{strings.Repeat("a", MaxSegmentNameLen), strings.Repeat("a", MaxSegmentNameLen)},
		{strings.Repeat("a", MaxSegmentNameLen+1), OverflowSegment},
		{"site north", OverflowSegment},
		{"caf\u00e9", OverflowSegment},
		{"\u202egnp.exe", OverflowSegment},
		{"a\x00b", OverflowSegment},
		{"\xff", OverflowSegment},
		{`a"b`, OverflowSegment},
		{"<script>", OverflowSegment},
		{OverflowSegment, OverflowSegment},
		{"(default)", OverflowSegment},
		// Reserved: reports print the merge of all segments as "overall".
		{ReservedSegment, OverflowSegment},
		{"Overall", OverflowSegment},
		{"OVERALL", OverflowSegment},
		{"overall2", "overall2"},
		{"(overall)", OverflowSegment},
	}
	for _, tt := range tests {
		if got := SegmentName(tt.raw); got != tt.want {
			t.Errorf("SegmentName(%q): got %q, want %q", tt.raw, got, tt.want)
		}
	}
}

func TestAggregatorFoldsSegmentFlood(t *testing.T) {
	c := mustComparator(t, ComparatorConfig{Labels: []string{"malignant", "benign"}})
	for _, max := range []int{0, 1, 8, 200} {
		t.Run(fmt.Sprint("max=", max), func(t *testing.T) {
			agg, err := NewAggregatorWith(c, AggregatorConfig{MaxSegments: max})
			if err != nil {
				t.Fatal(err)
			}
			want := max
			if want == 0 {
				want = DefaultMaxSegments
			}
			// A flood of distinct values, some outside the policy, over
			// several takes: the cap holds for the aggregator's life.
			const n = 20000
			total := NewEvidence(c)
			for i := 0; i < n; i++ {
				seg := fmt.Sprintf("attacker-%d", i)
				if i%7 == 0 {
					seg = fmt.Sprintf("bad value %d", i)
				}
				if err := agg.Record(Observation{Segment: seg, Outcome: OutcomeDropped, PrimaryLatency: time.Millisecond}); err != nil {
					t.Fatal(err)
				}
				if i%5000 == 4999 {
					ev := agg.Take()
					if got := len(ev.Segments); got > want+1 {
						t.Fatalf("taken evidence has %d segments, want at most %d", got, want+1)
					}
					if err := total.Merge(ev); err != nil {
						t.Fatal(err)
					}
				}
			}
			if got := total.namedSegments(); got != want {
				t.Errorf("named segments over all takes: got %d, want %d", got, want)
			}
			var requests uint64
			for _, s := range total.Segments {
				requests += s.Requests
			}
			if requests != n {
				t.Errorf("requests over all segments: got %d, want %d (nothing may be lost)", requests, n)
			}
			if o := total.Segments[OverflowSegment]; o == nil || o.Requests != n-uint64(want) || o.Drops != o.Requests {
				t.Errorf("overflow segment: got %+v, want %d requests", o, n-want)
			}
			// Evidence at the cap encodes and passes the registry's check.
			if _, err := MarshalEvidence(total); err != nil {
				t.Errorf("MarshalEvidence: %v", err)
			}
			if err := total.CheckSegments(want); err != nil {
				t.Errorf("CheckSegments(%d): %v", want, err)
			}
		})
	}
	if _, err := NewAggregatorWith(c, AggregatorConfig{MaxSegments: maxSegments}); !errors.Is(err, ErrAggregatorConfig) {
		t.Errorf("max segments %d: got %v, want ErrAggregatorConfig", maxSegments, err)
	}
}

func TestProxySegmentFlood(t *testing.T) {
	primary := httptest.NewServer(http.HandlerFunc(primaryHandler))
	defer primary.Close()
	shadow := httptest.NewServer(http.HandlerFunc(primaryHandler))
	defer shadow.Close()
	c := mustComparator(t, ComparatorConfig{Pointer: "/label", Labels: []string{"malignant", "benign"}})
	agg, err := NewAggregatorWith(c, AggregatorConfig{MaxSegments: 4})
	if err != nil {
		t.Fatal(err)
	}
	p, proxy, _ := startProxy(t, primary, shadow, ProxyConfig{Aggregator: agg, SegmentHeader: "X-Segment"})
	const n = 120
	for i := 0; i < n; i++ {
		seg := fmt.Sprintf("tenant-%d", i)
		if i%3 == 0 {
			seg = strings.Repeat("x", 300+i) // over the length cap
		}
		got := do(t, "POST", proxy.URL+"/predict", []byte(`{}`), map[string]string{"X-Label": "benign", "X-Segment": seg})
		if got.status != http.StatusOK {
			t.Fatalf("request %d: status %d", i, got.status)
		}
	}
	p.Close()
	ev := agg.Take()
	if got := len(ev.Segments); got != 5 {
		t.Fatalf("segments: got %d (%v), want 4 admitted + %q", got, ev.SegmentNames(), OverflowSegment)
	}
	var requests, compared uint64
	for _, s := range ev.Segments {
		requests += s.Requests
		compared += s.Compared
	}
	if requests != n || compared != n {
		t.Fatalf("requests, compared: got %d, %d, want %d, %d", requests, compared, n, n)
	}
	if o := ev.Segments[OverflowSegment]; o == nil || o.Requests != n-4 {
		t.Fatalf("overflow: got %+v, want %d requests", o, n-4)
	}
}

func TestVerifyBatchRefusesTooManySegments(t *testing.T) {
	pub, priv := testKey(t, 1)
	c := mustComparator(t, ComparatorConfig{Labels: []string{"malignant", "benign"}})
	agg, _ := NewAggregatorWith(c, AggregatorConfig{MaxSegments: 100})
	for i := 0; i < 70; i++ {
		_ = agg.Record(Observation{Segment: fmt.Sprintf("s%03d", i), Outcome: OutcomeDropped})
	}
	_ = agg.Record(Observation{Segment: "bad name", Outcome: OutcomeDropped}) // counted in the overflow segment
	b := &Batch{DeploymentID: "shd_demo", AgentID: "agent-1", Sequence: 1, Evidence: agg.Take()}
	sb, err := SignBatch(b, priv)
	if err != nil {
		t.Fatal(err)
	}
	want := Expectation{DeploymentID: "shd_demo", AgentID: "agent-1", PublicKey: pub}
	_, err = VerifyBatch(sb, want)
	var le *SegmentLimitError
	if !errors.As(err, &le) || !errors.Is(err, ErrTooManySegments) {
		t.Fatalf("default limit: got %v, want a *SegmentLimitError", err)
	}
	if le.Segments != 70 || le.Max != DefaultMaxSegments || le.Batch != b.ID() {
		t.Fatalf("limit error: got %+v, want 70 segments, max %d, batch %s", *le, DefaultMaxSegments, b.ID())
	}
	want.MaxSegments = 70
	if _, err := VerifyBatch(sb, want); err != nil {
		t.Fatalf("limit 70 (overflow segment not counted): got %v, want nil", err)
	}

	// A name outside the policy is refused, even from a valid signer.
	ev := NewEvidence(c)
	ev.segment("site north").Requests = 1
	sb2, err := SignBatch(&Batch{DeploymentID: "shd_demo", AgentID: "agent-1", Sequence: 2, Evidence: ev}, priv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyBatch(sb2, want); !errors.Is(err, ErrSegmentName) {
		t.Fatalf("bad name: got %v, want ErrSegmentName", err)
	}
}

// TestReservedSegmentName: traffic naming its segment "overall" cannot make
// evidence with a segment that a report would print as the overall row: the
// aggregator counts it in the overflow segment, and a batch that holds it
// anyway (an older or a hostile agent) is refused.
func TestReservedSegmentName(t *testing.T) {
	c := mustComparator(t, ComparatorConfig{Labels: []string{"malignant", "benign"}})
	agg := NewAggregator(c)
	for _, seg := range []string{"overall", "Overall", "eu"} {
		if err := agg.Record(Observation{Segment: seg, Outcome: OutcomeDropped}); err != nil {
			t.Fatal(err)
		}
	}
	ev := agg.Take()
	if got := ev.SegmentNames(); len(got) != 2 || ev.Segments["eu"] == nil || ev.Segments[OverflowSegment] == nil {
		t.Fatalf("got segments %q, want eu and %q", got, OverflowSegment)
	}
	if got := ev.Segments[OverflowSegment].Requests; got != 2 {
		t.Errorf("overflow segment counts %d requests, want 2 (overall, Overall)", got)
	}
	for _, name := range []string{"overall", "OverAll"} {
		pub, priv := testKey(t, 1)
		bad := NewEvidence(c)
		bad.segment(name).Requests = 1
		sb, err := SignBatch(&Batch{DeploymentID: "shd_demo", AgentID: "agent-1", Sequence: 1, Evidence: bad}, priv)
		if err != nil {
			t.Fatal(err)
		}
		_, err = VerifyBatch(sb, Expectation{DeploymentID: "shd_demo", AgentID: "agent-1", PublicKey: pub})
		if !errors.Is(err, ErrSegmentName) || !strings.Contains(err.Error(), "reserved") {
			t.Errorf("batch with segment %q: got %v, want ErrSegmentName saying the name is reserved", name, err)
		}
	}
}

func TestMergeLimitFoldsIntoOverflow(t *testing.T) {
	c := mustComparator(t, ComparatorConfig{Labels: []string{"malignant", "benign"}})
	mk := func(names ...string) *Evidence {
		agg := NewAggregator(c)
		for _, n := range names {
			_ = agg.Record(Observation{Segment: n, Outcome: OutcomeCompared, PrimaryLatency: time.Millisecond, ShadowLatency: 2 * time.Millisecond,
				Primary: Value{Label: "benign"}, Shadow: Value{Label: "benign"}})
		}
		return agg.Take()
	}
	// Two agents (or one restarted) admitted different names.
	merged := NewEvidence(c)
	parts := []*Evidence{mk("a", "b", "c", "a"), mk("d", "e", "b", OverflowSegment+"x"), mk("f", "a")}
	for _, p := range parts {
		if err := merged.MergeLimit(p, 3); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(merged.SegmentNames(), ","); got != "(other),a,b,c" {
		t.Fatalf("segments: got %s, want (other),a,b,c", got)
	}
	counts := map[string]uint64{}
	for n, s := range merged.Segments {
		counts[n] = s.Compared
	}
	want := map[string]uint64{"a": 3, "b": 2, "c": 1, OverflowSegment: 4}
	for n, w := range want {
		if counts[n] != w {
			t.Errorf("segment %s: got %d compared, want %d", n, counts[n], w)
		}
	}
	if o := merged.Segments[OverflowSegment]; o.ShadowLatency.GetCount() != 4 || o.PrimaryHist[1] != 4 {
		t.Errorf("overflow sketches and histograms were not merged: %v, %v", o.ShadowLatency.GetCount(), o.PrimaryHist)
	}
	if err := merged.CheckSegments(3); err != nil {
		t.Errorf("CheckSegments: %v", err)
	}
	// Different comparators still refuse to merge.
	other := NewAggregator(mustComparator(t, ComparatorConfig{Labels: []string{"x"}}))
	_ = other.Record(Observation{Outcome: OutcomeDropped})
	if err := merged.MergeLimit(other.Take(), 3); !errors.Is(err, ErrMerge) {
		t.Errorf("other comparator: got %v, want ErrMerge", err)
	}
}
