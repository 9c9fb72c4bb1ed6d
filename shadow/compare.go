package shadow

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// ErrComparatorConfig is returned by NewComparator for an unusable
// configuration.
var ErrComparatorConfig = errors.New("invalid comparator configuration")

// ErrOutput is returned by Comparator.Extract when a response body holds no
// usable prediction at the comparator's pointer.
var ErrOutput = errors.New("no usable prediction in response")

// Kind is how two predictions are compared.
type Kind string

const (
	// KindLabel compares predictions as labels: equal or not.
	KindLabel Kind = "label"
	// KindNumeric compares numbers with an absolute and a relative tolerance.
	KindNumeric Kind = "numeric"
)

// ComparatorConfig describes how predictions are found and compared. The
// drift histogram's bins come from here and are fixed for the life of a
// deployment, so that histograms from different batches and agents merge.
type ComparatorConfig struct {
	// Kind is KindLabel or KindNumeric. The default is KindLabel.
	Kind Kind
	// Pointer is the RFC 6901 pointer to the prediction in a response body.
	// The default is "" (the whole body).
	Pointer string
	// AbsTol and RelTol: two numbers agree when
	// |a-b| <= max(AbsTol, RelTol*max(|a|,|b|)). Numeric only; default 0.
	AbsTol, RelTol float64
	// Labels are the label categories, one histogram bin each, plus a last
	// bin for any other label. Label only; without labels every output falls
	// in the "other" bin and PSI is 0.
	Labels []string
	// Edges are increasing numeric bin edges e0 < e1 < ... < ek, making k+2
	// bins: (-inf,e0), [e0,e1), ..., [ek,+inf). Numeric only. The default is
	// 0.1, 0.2, ..., 0.9 (suits probabilities).
	Edges []float64
}

// Value is one side's prediction as extracted from its response.
type Value struct {
	// Label is the prediction as a label: a JSON string's text, or the
	// canonical text of a number, boolean or null.
	Label string
	// Number is the numeric prediction when IsNumber is true.
	Number   float64
	IsNumber bool
}

// Comparator compares predictions and bins them. It is immutable and safe for
// concurrent use.
type Comparator struct {
	kind    Kind
	ptr     Pointer
	absTol  float64
	relTol  float64
	labels  map[string]int
	nLabels int
	edges   []float64
	digest  string
}

// NewComparator validates cfg and returns its comparator.
func NewComparator(cfg ComparatorConfig) (*Comparator, error) {
	if cfg.Kind == "" {
		cfg.Kind = KindLabel
	}
	ptr, err := ParsePointer(cfg.Pointer)
	if err != nil {
		return nil, fmt.Errorf("%w: pointer: %w", ErrComparatorConfig, err)
	}
	c := &Comparator{kind: cfg.Kind, ptr: ptr}
	switch cfg.Kind {
	case KindLabel:
		c.labels = make(map[string]int, len(cfg.Labels))
		for i, l := range cfg.Labels {
			if _, dup := c.labels[l]; dup {
				return nil, fmt.Errorf("%w: label %q listed twice", ErrComparatorConfig, l)
			}
			c.labels[l] = i
		}
		c.nLabels = len(cfg.Labels)
	case KindNumeric:
		if !(cfg.AbsTol >= 0) || !(cfg.RelTol >= 0) || math.IsInf(cfg.AbsTol, 0) || math.IsInf(cfg.RelTol, 0) {
			return nil, fmt.Errorf("%w: tolerances must be finite and >= 0 (abs %v, rel %v)", ErrComparatorConfig, cfg.AbsTol, cfg.RelTol)
		}
		c.absTol, c.relTol = cfg.AbsTol, cfg.RelTol
		c.edges = cfg.Edges
		if len(c.edges) == 0 {
			c.edges = []float64{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9}
		}
		for i, e := range c.edges {
			if math.IsNaN(e) || math.IsInf(e, 0) || (i > 0 && !(e > c.edges[i-1])) {
				return nil, fmt.Errorf("%w: bin edges must be finite and strictly increasing (edge %d = %v)", ErrComparatorConfig, i, e)
			}
		}
		c.edges = append([]float64(nil), c.edges...)
	default:
		return nil, fmt.Errorf("%w: unknown kind %q (want %q or %q)", ErrComparatorConfig, cfg.Kind, KindLabel, KindNumeric)
	}
	if c.Bins() > maxBins {
		return nil, fmt.Errorf("%w: %d histogram bins, at most %d", ErrComparatorConfig, c.Bins(), maxBins)
	}
	c.digest = c.computeDigest(cfg)
	return c, nil
}

// computeDigest names the comparator's semantics: batches made under
// different comparators must not be merged.
func (c *Comparator) computeDigest(cfg ComparatorConfig) string {
	var b strings.Builder
	fmt.Fprintf(&b, "kind=%s\npointer=%q\n", c.kind, c.ptr.String())
	if c.kind == KindNumeric {
		fmt.Fprintf(&b, "abs=%s\nrel=%s\n", strconv.FormatFloat(c.absTol, 'g', -1, 64), strconv.FormatFloat(c.relTol, 'g', -1, 64))
		for _, e := range c.edges {
			fmt.Fprintf(&b, "edge=%s\n", strconv.FormatFloat(e, 'g', -1, 64))
		}
	} else {
		for _, l := range cfg.Labels {
			fmt.Fprintf(&b, "label=%q\n", l)
		}
	}
	sum := sha256.Sum256([]byte(b.String()))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Digest identifies the comparator's configuration ("sha256:<hex>" of a
// canonical description). Batches carry it; evidence with different digests
// does not merge.
func (c *Comparator) Digest() string { return c.digest }

// Kind returns the comparison kind.
func (c *Comparator) Kind() Kind { return c.kind }

// Bins is the number of drift histogram bins.
func (c *Comparator) Bins() int {
	if c.kind == KindNumeric {
		return len(c.edges) + 1
	}
	return c.nLabels + 1
}

// Extract finds the prediction in a response body.
func (c *Comparator) Extract(body []byte) (Value, error) {
	v, err := c.ptr.LookupJSON(body)
	if err != nil {
		return Value{}, fmt.Errorf("%w: %w", ErrOutput, err)
	}
	return valueOf(c.kind, v)
}

func valueOf(kind Kind, v any) (Value, error) {
	switch x := v.(type) {
	case string:
		if kind == KindNumeric {
			f, err := strconv.ParseFloat(x, 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				return Value{}, fmt.Errorf("%w: string %q is not a number", ErrOutput, x)
			}
			return Value{Label: x, Number: f, IsNumber: true}, nil
		}
		return Value{Label: x}, nil
	case json.Number:
		f, err := x.Float64()
		if err != nil || math.IsInf(f, 0) {
			return Value{}, fmt.Errorf("%w: number %s out of range", ErrOutput, x)
		}
		return Value{Label: strconv.FormatFloat(f, 'g', -1, 64), Number: f, IsNumber: true}, nil
	case float64:
		return Value{Label: strconv.FormatFloat(x, 'g', -1, 64), Number: x, IsNumber: true}, nil
	case bool:
		if kind == KindNumeric {
			return Value{}, fmt.Errorf("%w: boolean where a number is expected", ErrOutput)
		}
		return Value{Label: strconv.FormatBool(x)}, nil
	case nil:
		if kind == KindNumeric {
			return Value{}, fmt.Errorf("%w: null where a number is expected", ErrOutput)
		}
		return Value{Label: "null"}, nil
	default:
		return Value{}, fmt.Errorf("%w: %T where a scalar is expected", ErrOutput, v)
	}
}

// Compare reports whether two predictions agree and, for numeric
// comparisons, their absolute difference (ok is false for labels).
func (c *Comparator) Compare(primary, shadow Value) (agree bool, absDelta float64, numeric bool) {
	if c.kind == KindLabel {
		return primary.Label == shadow.Label, 0, false
	}
	d := math.Abs(primary.Number - shadow.Number)
	tol := math.Max(c.absTol, c.relTol*math.Max(math.Abs(primary.Number), math.Abs(shadow.Number)))
	return d <= tol, d, true
}

// Bin returns the drift histogram bin of a prediction, in [0, Bins()).
func (c *Comparator) Bin(v Value) int {
	if c.kind == KindLabel {
		if i, ok := c.labels[v.Label]; ok {
			return i
		}
		return c.nLabels
	}
	// The number of edges <= v is the bin: below e0 is bin 0.
	return sort.Search(len(c.edges), func(i int) bool { return c.edges[i] > v.Number })
}
