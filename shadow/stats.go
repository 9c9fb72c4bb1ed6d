package shadow

import (
	"math"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"
)

// z95 is the two-sided 95% standard normal quantile.
const z95 = 1.959963984540054

// PSIEpsilon replaces an empty bin's proportion in the PSI formula, which
// would otherwise divide by or take the logarithm of zero.
const PSIEpsilon = 1e-4

// Wilson returns the Wilson score interval for k successes in n trials at
// the normal quantile z (1.96 for 95%). With n == 0 it returns (0, 0, 1): no
// information.
func Wilson(k, n uint64, z float64) (rate, lower, upper float64) {
	if n == 0 {
		return 0, 0, 1
	}
	nf := float64(n)
	p := float64(k) / nf
	z2 := z * z
	denom := 1 + z2/nf
	center := (p + z2/(2*nf)) / denom
	half := z / denom * math.Sqrt(p*(1-p)/nf+z2/(4*nf*nf))
	return p, math.Max(0, center-half), math.Min(1, center+half)
}

// PSI is the population stability index of actual against expected, both
// histograms over the same fixed bins:
//
//	PSI = Σ_i (a_i - e_i) · ln(a_i / e_i)
//
// where a_i and e_i are bin proportions, an empty bin's proportion being
// replaced by PSIEpsilon. It is 0 when either histogram is empty.
func PSI(expected, actual []uint64) float64 {
	var ne, na uint64
	for i := range expected {
		ne += expected[i]
		na += actual[i]
	}
	if ne == 0 || na == 0 {
		return 0
	}
	var psi float64
	for i := range expected {
		e := float64(expected[i]) / float64(ne)
		a := float64(actual[i]) / float64(na)
		if e == 0 {
			e = PSIEpsilon
		}
		if a == 0 {
			a = PSIEpsilon
		}
		psi += (a - e) * math.Log(a/e)
	}
	return psi
}

// Deployment describes the shadow deployment a summary is about. The registry
// owns these facts; the shadow package only copies them into the summary.
type Deployment struct {
	ID        string    // "shd_..."
	Candidate string    // version digest of the shadow, "sha256:<hex>"
	Baseline  string    // version digest the alias pointed at when the shadow started
	Alias     string    // e.g. "production"
	PolicySet string    // policy set active when the shadow started
	StartedAt time.Time // when the shadow started
	UpdatedAt time.Time // when evidence last arrived
	Stopped   bool      // status "stopped" instead of "running"
}

// Summary is the shadow evidence summary as it appears in the policy input
// (input.evidence). Its JSON shape is a contract with the policy pack.
type Summary struct {
	DeploymentID string                    `json:"deployment_id"`
	Candidate    string                    `json:"candidate"`
	Baseline     string                    `json:"baseline"`
	Alias        string                    `json:"alias"`
	PolicySet    string                    `json:"policy_set"`
	StartedAt    string                    `json:"started_at"`
	UpdatedAt    string                    `json:"updated_at"`
	Status       string                    `json:"status"`
	MinSample    uint64                    `json:"min_sample"`
	Overall      SegmentSummary            `json:"overall"`
	Segments     map[string]SegmentSummary `json:"segments"`
	Worst        Worst                     `json:"worst"`
}

// Worst is the least favourable value of each per-scope statistic over the
// overall summary and every segment. A policy that needs a threshold met in
// every scope can test it once here instead of looping over the scopes in
// Rego, which cost the default pack about a sixth of its decision time; the
// per-segment figures are still there to say which scope failed.
type Worst struct {
	Sufficient      bool    `json:"sufficient"`        // every scope is sufficient
	N               uint64  `json:"n"`                 // smallest n
	AgreementLower  float64 `json:"agreement_lower"`   // smallest agreement.lower
	P99LatencyRatio float64 `json:"p99_latency_ratio"` // largest latency_ms.p99_ratio
	ErrorRate       float64 `json:"error_rate"`        // largest error_rate
	PSI             float64 `json:"psi"`               // largest psi
	DropRate        float64 `json:"drop_rate"`         // largest drop_rate
}

// fold takes scope into w.
func (w *Worst) fold(scope SegmentSummary) {
	w.Sufficient = w.Sufficient && scope.Sufficient
	w.N = min(w.N, scope.N)
	w.AgreementLower = min(w.AgreementLower, scope.Agreement.Lower)
	w.P99LatencyRatio = max(w.P99LatencyRatio, scope.LatencyMS.P99Ratio)
	w.ErrorRate = max(w.ErrorRate, scope.ErrorRate)
	w.PSI = max(w.PSI, scope.PSI)
	w.DropRate = max(w.DropRate, scope.DropRate)
}

// worstOver returns the Worst of the overall summary and every segment.
func worstOver(overall SegmentSummary, segments map[string]SegmentSummary) Worst {
	// Rates and ratios are never negative, so zero is the identity of max.
	w := Worst{Sufficient: true, N: math.MaxUint64, AgreementLower: math.Inf(1)}
	w.fold(overall)
	for _, seg := range segments {
		w.fold(seg)
	}
	return w
}

// SegmentSummary is one segment's (or the overall) statistics.
type SegmentSummary struct {
	N             uint64        `json:"n"`
	Sufficient    bool          `json:"sufficient"`
	Agreement     Interval      `json:"agreement"`
	Disagreements uint64        `json:"disagreements"`
	Requests      uint64        `json:"requests"`
	ShadowErrors  uint64        `json:"shadow_errors"`
	PrimaryErrors uint64        `json:"primary_errors"`
	Timeouts      uint64        `json:"timeouts"`
	Drops         uint64        `json:"drops"`
	Oversize      uint64        `json:"oversize"`
	ErrorRate     float64       `json:"error_rate"`
	DropRate      float64       `json:"drop_rate"`
	LatencyMS     LatencyPair   `json:"latency_ms"`
	PSI           float64       `json:"psi"`
	NumericDelta  *NumericDelta `json:"numeric_delta,omitempty"`
	// Mirrored is an addition to the shared contract: the denominator of
	// error_rate.
	Mirrored uint64 `json:"mirrored"`
}

// Interval is a rate with its Wilson 95% interval.
type Interval struct {
	Rate  float64 `json:"rate"`
	Lower float64 `json:"lower"`
	Upper float64 `json:"upper"`
}

// LatencyPair holds both sides' latency quantiles (milliseconds) and the
// ratio of their p99s (shadow / primary; 0 when either side has no data).
type LatencyPair struct {
	Primary  Quantiles `json:"primary"`
	Shadow   Quantiles `json:"shadow"`
	P99Ratio float64   `json:"p99_ratio"`
}

// Quantiles are latency quantiles in milliseconds, within 1% relative error;
// 0 when there is no data.
type Quantiles struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
}

// NumericDelta describes |primary - shadow| over compared numeric pairs.
// A difference beyond math.MaxFloat64 counts as math.MaxFloat64. MeanAbs is
// exact to 1e-9 while the sum of differences stays below about 1.8e10;
// beyond, the sum saturates and MeanAbs is MaxAbs, an upper bound.
type NumericDelta struct {
	MeanAbs float64 `json:"mean_abs"`
	MaxAbs  float64 `json:"max_abs"`
}

// Summarize computes the policy-input summary of ev for deployment d. A
// segment (and the overall) is sufficient when its n >= minSample; an
// insufficient segment's statistics are still reported, and policies must
// treat them as no evidence, never as a pass.
func Summarize(d Deployment, ev *Evidence, minSample uint64) Summary {
	numeric := ev.Numeric
	s := Summary{
		DeploymentID: d.ID,
		Candidate:    d.Candidate,
		Baseline:     d.Baseline,
		Alias:        d.Alias,
		PolicySet:    d.PolicySet,
		StartedAt:    formatTime(d.StartedAt),
		UpdatedAt:    formatTime(d.UpdatedAt),
		Status:       "running",
		MinSample:    minSample,
		Segments:     map[string]SegmentSummary{},
	}
	if d.Stopped {
		s.Status = "stopped"
	}
	overall := newSegmentEvidence(ev.Bins)
	for _, name := range ev.SegmentNames() {
		seg := ev.Segments[name]
		s.Segments[name] = summarizeSegment(seg, minSample, numeric)
		mergeSegment(overall, seg)
	}
	s.Overall = summarizeSegment(overall, minSample, numeric)
	s.Worst = worstOver(s.Overall, s.Segments)
	return s
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func summarizeSegment(seg *SegmentEvidence, minSample uint64, numeric bool) SegmentSummary {
	out := SegmentSummary{
		N:             seg.Compared,
		Sufficient:    seg.Compared >= minSample && seg.Compared > 0,
		Disagreements: seg.Disagreements,
		Requests:      seg.Requests,
		ShadowErrors:  seg.ShadowErrors,
		PrimaryErrors: seg.PrimaryErrors,
		Timeouts:      seg.Timeouts,
		Drops:         seg.Drops,
		Oversize:      seg.Oversize,
		Mirrored:      seg.Mirrored,
		PSI:           PSI(seg.PrimaryHist, seg.ShadowHist),
	}
	out.Agreement.Rate, out.Agreement.Lower, out.Agreement.Upper = Wilson(seg.Agreements, seg.Compared, z95)
	if seg.Mirrored > 0 {
		out.ErrorRate = float64(seg.ShadowErrors+seg.Timeouts) / float64(seg.Mirrored)
	}
	if seg.Requests > 0 {
		out.DropRate = float64(seg.Drops+seg.Oversize) / float64(seg.Requests)
	}
	out.LatencyMS.Primary = quantiles(seg.PrimaryLatency)
	out.LatencyMS.Shadow = quantiles(seg.ShadowLatency)
	if out.LatencyMS.Primary.P99 > 0 && out.LatencyMS.Shadow.P99 > 0 {
		out.LatencyMS.P99Ratio = out.LatencyMS.Shadow.P99 / out.LatencyMS.Primary.P99
	}
	if numeric {
		nd := &NumericDelta{MaxAbs: seg.DeltaMax}
		switch {
		case seg.DeltaCount == 0:
		case seg.DeltaSumNano == math.MaxUint64:
			// The fixed-point sum saturated: the true mean is unknown
			// but at most the largest difference. Reporting that bound
			// keeps a policy's "mean_abs below X" test from passing on
			// a sum that stopped growing.
			nd.MeanAbs = seg.DeltaMax
		default:
			nd.MeanAbs = min(float64(seg.DeltaSumNano)/deltaScale/float64(seg.DeltaCount), seg.DeltaMax)
		}
		out.NumericDelta = nd
	}
	return out
}

func quantiles(s *ddsketch.DDSketch) Quantiles {
	if s == nil || s.IsEmpty() {
		return Quantiles{}
	}
	v, err := s.GetValuesAtQuantiles([]float64{0.5, 0.95, 0.99})
	if err != nil {
		return Quantiles{}
	}
	return Quantiles{P50: v[0], P95: v[1], P99: v[2]}
}
