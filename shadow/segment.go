package shadow

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Segment names come from untrusted input (a request header, a field of the
// request body), so they are bounded in three ways:
//
//   - Length and characters: a name is 1..MaxSegmentNameLen bytes of
//     [A-Za-z0-9._:/@+-]. Names are identifiers that policies use as object
//     keys and that reports print; the restricted set keeps out control
//     characters, quotes, markup, bidirectional overrides and look-alike
//     letters. A value outside the policy is counted in OverflowSegment
//     rather than cleaned up, because cleaning could silently merge two
//     different segments into one.
//   - Cardinality: an Aggregator admits at most MaxSegments distinct names
//     for its whole life (first come, first admitted); observations of any
//     further name are counted in OverflowSegment. Nothing is lost, and
//     memory and batch size stay bounded whatever callers send.
//   - At the registry: VerifyBatch refuses a batch with more named
//     segments than Expectation.MaxSegments, and MergeLimit folds names
//     beyond the cap into OverflowSegment, so a deployment's stored evidence
//     stays bounded even across agent restarts.
const (
	// OverflowSegment counts observations whose segment name is outside the
	// naming policy or beyond the cap on distinct segments. Its parentheses
	// are outside the policy's characters, so no caller can name it.
	OverflowSegment = "(other)"
	// DefaultMaxSegments is the default cap on distinct segment names per
	// aggregator (and per deployment at the registry).
	DefaultMaxSegments = 64
	// MaxSegmentNameLen is the longest segment name accepted, in bytes.
	MaxSegmentNameLen = 64
	// ReservedSegment is the name no segment may have, in any letter case:
	// reports label the merge of all segments "overall" (the policy input
	// keeps it apart, as evidence.overall). Traffic that names it is
	// counted in OverflowSegment, and VerifyBatch refuses a batch holding
	// it.
	ReservedSegment = "overall"
	// maxSegmentCap is the largest cap that still fits a batch (named
	// segments plus the overflow segment).
	maxSegmentCap = maxSegments - 1
)

// ErrTooManySegments is returned (wrapped in a *SegmentLimitError) when
// evidence holds more named segments than allowed.
var ErrTooManySegments = errors.New("too many segments")

// ErrSegmentName is returned by VerifyBatch for a segment name outside the
// naming policy.
var ErrSegmentName = errors.New("segment name outside the naming policy")

// SegmentLimitError reports evidence with more named segments (the overflow
// segment not counted) than the limit. It wraps ErrTooManySegments.
type SegmentLimitError struct {
	// Batch is the batch id, when the evidence came in a batch.
	Batch string
	// Segments is the number of named segments found; Max the limit.
	Segments, Max int
	// AtLeast is set when Segments is a lower bound, counted from a batch
	// header before its segments were decoded.
	AtLeast bool
}

func (e *SegmentLimitError) Error() string {
	where := "evidence"
	if e.Batch != "" {
		where = "batch " + e.Batch
	}
	atLeast := ""
	if e.AtLeast {
		atLeast = "at least "
	}
	return fmt.Sprintf("%s has %s%d named segments, at most %d allowed (further names belong in %q)", where, atLeast, e.Segments, e.Max, OverflowSegment)
}

func (e *SegmentLimitError) Unwrap() error { return ErrTooManySegments }

// SegmentName maps a raw segment value to the name evidence is recorded
// under: "" becomes DefaultSegment, a name within the policy is kept as it
// is, and anything else (ReservedSegment in any letter case included)
// becomes OverflowSegment.
func SegmentName(raw string) string {
	switch {
	case raw == "":
		return DefaultSegment
	case raw == OverflowSegment || validSegmentName(raw):
		return raw
	default:
		return OverflowSegment
	}
}

// ValidSegmentName reports whether name may appear in evidence: a name
// within the naming policy, or OverflowSegment.
func ValidSegmentName(name string) bool {
	return name == OverflowSegment || validSegmentName(name)
}

func validSegmentName(s string) bool {
	if len(s) == 0 || len(s) > MaxSegmentNameLen || strings.EqualFold(s, ReservedSegment) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !segmentChar[s[i]] {
			return false
		}
	}
	return true
}

var segmentChar = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "._:/@+-" {
		t[c] = true
	}
	return t
}()

// namedSegments counts the segments of ev other than OverflowSegment.
func (e *Evidence) namedSegments() int {
	n := len(e.Segments)
	if _, ok := e.Segments[OverflowSegment]; ok {
		n--
	}
	return n
}

// CheckSegments returns a *SegmentLimitError if ev holds more than max named
// segments, and an error wrapping ErrSegmentName if a name is outside the
// naming policy. max <= 0 means DefaultMaxSegments.
func (e *Evidence) CheckSegments(max int) error {
	if max <= 0 {
		max = DefaultMaxSegments
	}
	if n := e.namedSegments(); n > max {
		return &SegmentLimitError{Segments: n, Max: max}
	}
	for name := range e.Segments {
		if strings.EqualFold(name, ReservedSegment) {
			return fmt.Errorf("%w: %q is reserved: reports print the merge of all segments under it", ErrSegmentName, name)
		}
		if !ValidSegmentName(name) {
			return fmt.Errorf("%w: %q", ErrSegmentName, name)
		}
	}
	return nil
}

// MergeLimit adds other into e like Merge, but keeps e within max named
// segments: segments of other that e does not hold yet are admitted in
// bytewise name order while there is room, and the rest are merged into
// OverflowSegment. max <= 0 means DefaultMaxSegments. Totals over all
// segments are the same as with Merge; which names keep their own segment
// once the cap binds depends on the order evidence arrives in. It fails,
// leaving e unchanged, when Merge would.
func (e *Evidence) MergeLimit(other *Evidence, max int) error {
	if other == nil || other.Empty() {
		return nil
	}
	if max <= 0 {
		max = DefaultMaxSegments
	}
	if max > maxSegmentCap {
		max = maxSegmentCap
	}
	if e.Comparator != other.Comparator || e.Bins != other.Bins || e.Numeric != other.Numeric {
		return e.Merge(other) // reports the mismatch
	}
	named := e.namedSegments()
	folded := &Evidence{Comparator: other.Comparator, Bins: other.Bins, Numeric: other.Numeric, Segments: make(map[string]*SegmentEvidence, len(other.Segments))}
	names := other.SegmentNames()
	sort.Strings(names)
	for _, name := range names {
		target := name
		if _, ok := e.Segments[name]; !ok && name != OverflowSegment {
			if named < max {
				named++
			} else {
				target = OverflowSegment
			}
		}
		dst := folded.segment(target)
		if err := checkSum(dst, other.Segments[name]); err != nil {
			return fmt.Errorf("%w: segment %q: %w", ErrMerge, target, err)
		}
		mergeSegment(dst, other.Segments[name])
	}
	return e.Merge(folded)
}
