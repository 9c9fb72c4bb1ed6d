package audit

import (
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Human-readable formats shared by the HTML and PDF renderers. CSV uses the
// machine formats in csv.go.

// humanTime is the UTC date and time with seconds, labelled UTC, as Part 11
// signature manifestations want it shown.
func humanTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05") + " UTC"
}

// num formats a figure with up to four decimals, trailing zeros trimmed.
func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	s := strconv.FormatFloat(v, 'f', 4, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(s, "0")
		s = strings.TrimSuffix(s, ".")
	}
	if s == "-0" {
		s = "0"
	}
	return s
}

func count(n uint64) string {
	s := strconv.FormatUint(n, 10)
	if len(s) <= 3 {
		return s
	}
	var b strings.Builder
	pre := len(s) % 3
	if pre > 0 {
		b.WriteString(s[:pre])
	}
	for i := pre; i < len(s); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s[i : i+3])
	}
	return b.String()
}

func size(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, i := float64(n), -1
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + string("KMGTP"[i]) + "iB"
}

// short shortens a digest for tables: the algorithm and 12 hex digits.
// The full digest is in the dossiers and the CSV registers.
func short(d string) string {
	if d == "" {
		return "—"
	}
	alg, hex, ok := strings.Cut(d, ":")
	if !ok {
		alg, hex = "", d
	}
	if len(hex) > 12 {
		hex = hex[:12] + "…"
	}
	if alg == "" {
		return hex
	}
	return alg + ":" + hex
}

// person is the printed name with the principal id, as a signature register
// shows it: "Carol Müller (carol)".
func person(a Actor) string { return personPhrase(a).String() }

func personPhrase(a Actor) phrase {
	switch {
	case a.Name != "" && a.ID != "" && a.Name != a.ID:
		return phrase{}.value(a.Name).words(" (").value(a.ID).words(")")
	case a.Name != "":
		return phrase{}.value(a.Name)
	case a.ID != "":
		return phrase{}.value(a.ID)
	}
	return phrase{}.words("—")
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func versionRef(label, digest string) string { return refPhrase(label, digest).String() }

func refPhrase(label, digest string) phrase {
	if label != "" {
		return phrase{}.value(label).words(" (").value(short(digest)).words(")")
	}
	return phrase{}.value(short(digest))
}

// provenance is the cover's statement of where the report's values come
// from. The PDF and the HTML print it alike.
const provenance = "Every value in this report comes from the ledger (the entries of the range, the documents they name by digest and the signed checkpoint), except the export's own details on this page (when, for whom, by which software, the scope asked) and the shadow evidence summaries, which are the registry's aggregate when the export was made: the signed batches merged into them are ledger entries, the summaries are not."

// aliasNote explains the inventory's aliases column (Version.Aliases).
const aliasNote = "Aliases at range end: the aliases that the alias moves within the range left pointing at the version. An alias last moved before the range is not shown; the alias history lists every move in it."

// evidenceNote heads the shadow evidence section.
func evidenceNote(r *Report) string {
	return "These summaries are the registry's aggregate of the signed evidence batches at " + humanTime(r.GeneratedAt) +
		", when the export was made: the batches are ledger entries, the summaries are not. The row " + OverallSegment +
		" merges all segments."
}

// OverallSegment labels the overall summary (the merge of all segments) in
// every rendering. Its parentheses are outside shadow's segment naming
// policy, so no segment can carry it (Validate refuses one that does); a
// segment named "overall", which older summaries may hold, is printed as
// the segment it is.
const OverallSegment = "(overall)"

func sortedSegments(s []Segment) []Segment {
	out := slices.Clone(s)
	slices.SortStableFunc(out, func(a, b Segment) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func signatureMeaning(s Signature) string {
	if s.Meaning != "" {
		return s.Meaning
	}
	return "authorship: signed the version manifest"
}

func signerName(s Signature) string {
	if s.SignerName != "" {
		return s.SignerName
	}
	return orDash(s.Signer)
}

func verdict(allow bool) string {
	if allow {
		return "allow"
	}
	return "deny"
}

// deniedDecisions are the decisions that did not allow their promotion; the
// exceptions register lists them beside Report.Exceptions.
func deniedDecisions(ds []Decision) []Decision {
	var out []Decision
	for _, d := range ds {
		if !d.Allow {
			out = append(out, d)
		}
	}
	return out
}

// SetSegments replaces e.Segments with the entries of m (the policy input's
// evidence.segments shape), naming each after its key, sorted by name.
func (e *Evidence) SetSegments(m map[string]Segment) {
	e.Segments = e.Segments[:0]
	for _, k := range slices.Sorted(maps.Keys(m)) {
		s := m[k]
		s.Name = k
		e.Segments = append(e.Segments, s)
	}
}
