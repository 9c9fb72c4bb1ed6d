package shadow

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sort"
	"sync"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/mapping"
	"github.com/DataDog/sketches-go/ddsketch/store"
)

// ErrMerge is returned when two pieces of evidence cannot be merged: they
// were gathered under different comparators or a count would overflow.
var ErrMerge = errors.New("evidence cannot be merged")

// ErrObservation is returned by Aggregator.Record for an observation that
// makes no sense (unknown outcome, bin out of range).
var ErrObservation = errors.New("invalid observation")

// DefaultSegment is the segment of requests that name none (absent header,
// missing JSON field). The empty segment name is never used.
const DefaultSegment = "default"

// RelativeAccuracy is the relative accuracy of the latency sketches: a
// reported quantile q̂ of true value q satisfies |q̂-q| <= 0.01*q.
const RelativeAccuracy = 0.01

const (
	// maxBins bounds histogram sizes (comparators and decoded batches).
	maxBins = 1024
	// Latency sketches hold milliseconds; values are clamped to
	// [minLatencyMS, maxLatencyMS] so that every sketch index stays within
	// ±maxSketchIndex, which decoding enforces.
	minLatencyMS   = 1e-6
	maxLatencyMS   = 1e7
	maxSketchIndex = 1200
	// maxCount keeps every count exact in the float64 sketch stores.
	maxCount = 1 << 53
	// deltaScale: numeric difference sums are kept in fixed point
	// (nanounits) so merging is exactly associative and commutative. The
	// sum saturates at math.MaxUint64 (about 1.8e10 units) instead of
	// wrapping or failing; saturating addition of non-negative numbers is
	// still associative and commutative, and a saturated sum makes the
	// summary report max_abs as the mean (see summarizeSegment).
	deltaScale = 1e9
)

// addSat returns a+b, or math.MaxUint64 when the sum does not fit.
func addSat(a, b uint64) uint64 {
	s, carry := bits.Add64(a, b, 0)
	if carry != 0 {
		return math.MaxUint64
	}
	return s
}

// deltaNanos is the fixed-point contribution of one difference d >= 0 to a
// segment's delta sum, saturated. It is monotonic in d, which the decoder's
// bound on the sum (maxDeltaSum) relies on.
func deltaNanos(d float64) uint64 {
	n := d * deltaScale
	if !(n < 1<<64) { // also catches +Inf; NaN never gets here
		return math.MaxUint64
	}
	return uint64(n)
}

// maxDeltaSum bounds the delta sum of count differences of at most max
// each: count × deltaNanos(max), saturated.
func maxDeltaSum(count uint64, max float64) uint64 {
	hi, lo := bits.Mul64(count, deltaNanos(max))
	if hi != 0 {
		return math.MaxUint64
	}
	return lo
}

var latencyMapping = func() mapping.IndexMapping {
	m, err := mapping.NewLogarithmicMapping(RelativeAccuracy)
	if err != nil {
		panic("shadow: latency mapping: " + err.Error()) // constant input; cannot happen
	}
	return m
}()

func newLatencySketch() *ddsketch.DDSketch {
	return ddsketch.NewDDSketch(latencyMapping, store.NewDenseStore(), store.NewDenseStore())
}

// addLatency records d (milliseconds, clamped) in s.
func addLatency(s *ddsketch.DDSketch, d time.Duration) {
	ms := float64(d) / float64(time.Millisecond)
	if !(ms >= minLatencyMS) { // also catches NaN
		ms = minLatencyMS
	}
	if ms > maxLatencyMS {
		ms = maxLatencyMS
	}
	_ = s.Add(ms) // in range by construction
}

// Counts are the plain counters of one segment.
type Counts struct {
	// Requests seen by the proxy (mirrored or not).
	Requests uint64
	// Mirrored: copies sent to the shadow.
	Mirrored uint64
	// Compared: pairs where both sides answered; Agreements+Disagreements.
	Compared      uint64
	Agreements    uint64
	Disagreements uint64
	ShadowErrors  uint64
	PrimaryErrors uint64
	Timeouts      uint64
	Drops         uint64
	Oversize      uint64
}

func (c *Counts) fields() []*uint64 {
	return []*uint64{&c.Requests, &c.Mirrored, &c.Compared, &c.Agreements, &c.Disagreements,
		&c.ShadowErrors, &c.PrimaryErrors, &c.Timeouts, &c.Drops, &c.Oversize}
}

// SegmentEvidence is the mergeable aggregate of one segment.
type SegmentEvidence struct {
	Counts
	// PrimaryLatency and ShadowLatency are DDSketches of milliseconds.
	PrimaryLatency *ddsketch.DDSketch
	ShadowLatency  *ddsketch.DDSketch
	// PrimaryHist and ShadowHist count compared pairs' outputs per bin.
	PrimaryHist []uint64
	ShadowHist  []uint64
	// DeltaCount, DeltaSumNano (sum of |a-b| in units of 1e-9, saturating
	// at math.MaxUint64) and DeltaMax (finite: a difference beyond
	// math.MaxFloat64 is recorded as math.MaxFloat64) describe numeric
	// differences of compared pairs.
	DeltaCount   uint64
	DeltaSumNano uint64
	DeltaMax     float64
}

func newSegmentEvidence(bins int) *SegmentEvidence {
	return &SegmentEvidence{
		PrimaryLatency: newLatencySketch(),
		ShadowLatency:  newLatencySketch(),
		PrimaryHist:    make([]uint64, bins),
		ShadowHist:     make([]uint64, bins),
	}
}

// Evidence is a mergeable set of per-segment aggregates gathered under one
// comparator. Merging is associative and commutative, exactly: counts and
// sketch bins are integers, numeric sums are fixed point. Evidence is not
// safe for concurrent use; the Aggregator guards its own.
type Evidence struct {
	// Comparator is the comparator digest the evidence was gathered under.
	Comparator string
	// Bins is the drift histogram size.
	Bins int
	// Numeric is true for numeric comparisons (numeric deltas are kept).
	Numeric  bool
	Segments map[string]*SegmentEvidence
}

// NewEvidence returns empty evidence for comparator c.
func NewEvidence(c *Comparator) *Evidence {
	return &Evidence{Comparator: c.Digest(), Bins: c.Bins(), Numeric: c.kind == KindNumeric, Segments: map[string]*SegmentEvidence{}}
}

// SegmentNames returns the segment names in sorted order.
func (e *Evidence) SegmentNames() []string {
	names := make([]string, 0, len(e.Segments))
	for n := range e.Segments {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (e *Evidence) segment(name string) *SegmentEvidence {
	s, ok := e.Segments[name]
	if !ok {
		s = newSegmentEvidence(e.Bins)
		e.Segments[name] = s
	}
	return s
}

// Empty reports whether the evidence holds no observation.
func (e *Evidence) Empty() bool {
	return len(e.Segments) == 0
}

// Clone returns a deep copy.
func (e *Evidence) Clone() *Evidence {
	out := &Evidence{Comparator: e.Comparator, Bins: e.Bins, Numeric: e.Numeric, Segments: make(map[string]*SegmentEvidence, len(e.Segments))}
	for n, s := range e.Segments {
		c := *s
		c.PrimaryLatency = s.PrimaryLatency.Copy()
		c.ShadowLatency = s.ShadowLatency.Copy()
		c.PrimaryHist = append([]uint64(nil), s.PrimaryHist...)
		c.ShadowHist = append([]uint64(nil), s.ShadowHist...)
		out.Segments[n] = &c
	}
	return out
}

// Merge adds other into e. It fails, leaving e unchanged, if the comparators
// differ or a count would exceed 2^53. The numeric delta sum saturates
// rather than fails (see deltaScale).
func (e *Evidence) Merge(other *Evidence) error {
	if other == nil || other.Empty() {
		return nil
	}
	if e.Comparator != other.Comparator || e.Bins != other.Bins || e.Numeric != other.Numeric {
		return fmt.Errorf("%w: comparator %s (%d bins) vs %s (%d bins)", ErrMerge, e.Comparator, e.Bins, other.Comparator, other.Bins)
	}
	// Check every sum first so a failure leaves e untouched.
	for name, o := range other.Segments {
		s, ok := e.Segments[name]
		if !ok {
			continue
		}
		if err := checkSum(s, o); err != nil {
			return fmt.Errorf("%w: segment %q: %w", ErrMerge, name, err)
		}
	}
	for name, o := range other.Segments {
		mergeSegment(e.segment(name), o)
	}
	return nil
}

func checkSum(s, o *SegmentEvidence) error {
	sf, of := s.Counts.fields(), o.Counts.fields()
	for i := range sf {
		if *sf[i]+*of[i] > maxCount || *sf[i]+*of[i] < *sf[i] {
			return errors.New("counter overflow")
		}
	}
	for i := range s.PrimaryHist {
		if s.PrimaryHist[i]+o.PrimaryHist[i] > maxCount || s.ShadowHist[i]+o.ShadowHist[i] > maxCount {
			return errors.New("histogram overflow")
		}
	}
	if s.DeltaCount+o.DeltaCount > maxCount {
		return errors.New("numeric delta count overflow")
	}
	if s.PrimaryLatency.GetCount()+o.PrimaryLatency.GetCount() > maxCount || s.ShadowLatency.GetCount()+o.ShadowLatency.GetCount() > maxCount {
		return errors.New("latency sketch overflow")
	}
	return nil
}

// mergeSegment adds o into s. Every addition saturates: Merge checks the
// counts beforehand, but Summarize folds any number of segments into its
// overall figures, where a wrapped sum would turn a huge total into a small
// one.
func mergeSegment(s, o *SegmentEvidence) {
	sf, of := s.Counts.fields(), o.Counts.fields()
	for i := range sf {
		*sf[i] = addSat(*sf[i], *of[i])
	}
	for i := range s.PrimaryHist {
		s.PrimaryHist[i] = addSat(s.PrimaryHist[i], o.PrimaryHist[i])
		s.ShadowHist[i] = addSat(s.ShadowHist[i], o.ShadowHist[i])
	}
	s.DeltaCount = addSat(s.DeltaCount, o.DeltaCount)
	s.DeltaSumNano = addSat(s.DeltaSumNano, o.DeltaSumNano)
	s.DeltaMax = math.Max(s.DeltaMax, o.DeltaMax)
	_ = s.PrimaryLatency.MergeWith(o.PrimaryLatency) // same mapping by construction
	_ = s.ShadowLatency.MergeWith(o.ShadowLatency)
}

// Outcome is what happened to one request.
type Outcome uint8

const (
	// OutcomeCompared: both sides answered; Primary and Shadow hold their
	// predictions and both latencies are set.
	OutcomeCompared Outcome = iota + 1
	// OutcomePrimaryError: the primary failed (non-2xx, transport error or
	// no prediction); nothing was mirrored.
	OutcomePrimaryError
	// OutcomeShadowError: mirrored, and the shadow failed (non-2xx,
	// transport error or no prediction). ShadowLatency may be set.
	OutcomeShadowError
	// OutcomeTimeout: mirrored, and the shadow did not answer in time.
	OutcomeTimeout
	// OutcomeDropped: not mirrored because the mirror queue was full.
	OutcomeDropped
	// OutcomeOversize: not mirrored because a body exceeded the size limit.
	OutcomeOversize
	// OutcomeNotMirrored: no copy was sent and nobody is to blame: mirroring
	// is off, the request is not one that is mirrored (HEAD, upgrades), the
	// primary's success carries no body to compare (204, 205), or the caller
	// left. Only the request (and, when it completed, the primary's latency)
	// is counted.
	OutcomeNotMirrored
)

// Observation is one request's outcome, as the proxy or a serving stack that
// mirrors by itself reports it.
type Observation struct {
	// Segment is the raw segment value; "" means DefaultSegment, and a
	// value outside the naming policy or beyond the aggregator's cap is
	// counted in OverflowSegment (see SegmentName).
	Segment string
	Outcome Outcome
	// PrimaryLatency: zero means unknown and is not recorded.
	PrimaryLatency time.Duration
	// ShadowLatency: zero means unknown and is not recorded.
	ShadowLatency time.Duration
	// Primary and Shadow are the predictions (OutcomeCompared only).
	Primary, Shadow Value
}

// Aggregator turns observations into Evidence under one comparator. It is
// safe for concurrent use.
//
// Segment names pass through SegmentName, and the aggregator admits at most
// its MaxSegments distinct names for its whole life (Take does not reset
// them); observations under any other name are counted in OverflowSegment.
// So taken evidence never holds more than MaxSegments+1 segments.
type Aggregator struct {
	cmp         *Comparator
	maxSegments int
	mu          sync.Mutex
	ev          *Evidence
	admitted    map[string]struct{} // guarded by mu; at most maxSegments names
}

// AggregatorConfig configures an Aggregator. Zero values mean the defaults.
type AggregatorConfig struct {
	// MaxSegments caps the distinct segment names admitted (see
	// Aggregator). The default is DefaultMaxSegments; at most 4095.
	MaxSegments int
}

// ErrAggregatorConfig is returned by NewAggregatorWith for an unusable
// configuration.
var ErrAggregatorConfig = errors.New("invalid aggregator configuration")

// NewAggregator returns an empty aggregator comparing with c, admitting
// DefaultMaxSegments segment names.
func NewAggregator(c *Comparator) *Aggregator {
	a, _ := NewAggregatorWith(c, AggregatorConfig{}) // the defaults are valid
	return a
}

// NewAggregatorWith returns an empty aggregator comparing with c, configured
// by cfg.
func NewAggregatorWith(c *Comparator, cfg AggregatorConfig) (*Aggregator, error) {
	if cfg.MaxSegments < 0 || cfg.MaxSegments > maxSegmentCap {
		return nil, fmt.Errorf("%w: max segments %d, want 1..%d", ErrAggregatorConfig, cfg.MaxSegments, maxSegmentCap)
	}
	if cfg.MaxSegments == 0 {
		cfg.MaxSegments = DefaultMaxSegments
	}
	return &Aggregator{cmp: c, maxSegments: cfg.MaxSegments, ev: NewEvidence(c), admitted: make(map[string]struct{}, cfg.MaxSegments)}, nil
}

// MaxSegments returns the cap on distinct segment names.
func (a *Aggregator) MaxSegments() int { return a.maxSegments }

// segmentFor returns the name an observation is recorded under. a.mu must
// be held.
func (a *Aggregator) segmentFor(raw string) string {
	name := SegmentName(raw)
	if name == OverflowSegment {
		return name
	}
	if _, ok := a.admitted[name]; ok {
		return name
	}
	if len(a.admitted) >= a.maxSegments {
		return OverflowSegment
	}
	a.admitted[name] = struct{}{}
	return name
}

// Comparator returns the aggregator's comparator.
func (a *Aggregator) Comparator() *Comparator { return a.cmp }

// Record adds one observation.
func (a *Aggregator) Record(o Observation) error {
	if o.Outcome < OutcomeCompared || o.Outcome > OutcomeNotMirrored {
		return fmt.Errorf("%w: unknown outcome %d", ErrObservation, o.Outcome)
	}
	var agree, numeric bool
	var delta float64
	var pb, sb int
	if o.Outcome == OutcomeCompared {
		agree, delta, numeric = a.cmp.Compare(o.Primary, o.Shadow)
		pb, sb = a.cmp.Bin(o.Primary), a.cmp.Bin(o.Shadow)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.ev.segment(a.segmentFor(o.Segment))
	s.Requests++
	if o.PrimaryLatency > 0 {
		addLatency(s.PrimaryLatency, o.PrimaryLatency)
	}
	switch o.Outcome {
	case OutcomeCompared:
		s.Mirrored++
		s.Compared++
		if agree {
			s.Agreements++
		} else {
			s.Disagreements++
		}
		s.PrimaryHist[pb]++
		s.ShadowHist[sb]++
		if numeric && !math.IsNaN(delta) {
			// |a-b| of two finite numbers overflows to +Inf when they
			// are near ±MaxFloat64 with opposite signs. Evidence holds
			// finite figures only (a batch with an infinite maximum
			// would not decode, and the agent could never send it), so
			// such a difference is recorded as MaxFloat64; it also
			// saturates the sum, so the summary's mean is max_abs.
			delta = min(delta, math.MaxFloat64)
			s.DeltaCount++
			s.DeltaSumNano = addSat(s.DeltaSumNano, deltaNanos(delta))
			s.DeltaMax = math.Max(s.DeltaMax, delta)
		}
	case OutcomePrimaryError:
		s.PrimaryErrors++
	case OutcomeShadowError:
		s.Mirrored++
		s.ShadowErrors++
	case OutcomeTimeout:
		s.Mirrored++
		s.Timeouts++
	case OutcomeDropped:
		s.Drops++
	case OutcomeOversize:
		s.Oversize++
	}
	if o.ShadowLatency > 0 && (o.Outcome == OutcomeCompared || o.Outcome == OutcomeShadowError) {
		addLatency(s.ShadowLatency, o.ShadowLatency)
	}
	return nil
}

// Take returns the evidence gathered since the last Take and starts afresh.
// Each observation appears in exactly one taken Evidence.
func (a *Aggregator) Take() *Evidence {
	fresh := NewEvidence(a.cmp)
	a.mu.Lock()
	ev := a.ev
	a.ev = fresh
	a.mu.Unlock()
	return ev
}

// Peek returns a copy of the evidence gathered since the last Take.
func (a *Aggregator) Peek() *Evidence {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ev.Clone()
}
