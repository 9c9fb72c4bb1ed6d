package audit

import (
	"maps"
	"slices"
	"strconv"
	"strings"
)

// A line diff for policy texts: Myers' O((N+M)·D) algorithm ("An O(ND)
// Difference Algorithm and Its Variations", 1986), forward search with the
// V array of every step kept to walk the path back. Memory is O(D²), so the
// search gives up beyond maxEditDistance (1,000) edits and reports the file as
// replaced; policy changes between published sets are small in practice.

const maxEditDistance = 1000

type opKind byte

const (
	opEqual opKind = ' '
	opDel   opKind = '-'
	opIns   opKind = '+'
)

type diffLine struct {
	Op   opKind
	Text string
	// Old and New are 1-based line numbers (0 when absent on that side).
	Old, New int
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	s = strings.TrimSuffix(s, "\n")
	return strings.Split(s, "\n")
}

// lineDiff returns the edit script from a to b, line by line. When the edit
// distance exceeds maxEditDistance the result deletes all of a and inserts
// all of b (correct, if not minimal).
func lineDiff(a, b []string) []diffLine {
	// Trim the common prefix and suffix first: cheap and usual.
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		pre++
	}
	suf := 0
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	out := make([]diffLine, 0, len(a)+len(b))
	for i := 0; i < pre; i++ {
		out = append(out, diffLine{opEqual, a[i], i + 1, i + 1})
	}
	mid := myers(a[pre:len(a)-suf], b[pre:len(b)-suf], pre)
	out = append(out, mid...)
	for i := 0; i < suf; i++ {
		ia, ib := len(a)-suf+i, len(b)-suf+i
		out = append(out, diffLine{opEqual, a[ia], ia + 1, ib + 1})
	}
	return out
}

func myers(a, b []string, off int) []diffLine {
	n, m := len(a), len(b)
	replaced := func() []diffLine {
		out := make([]diffLine, 0, n+m)
		for i, s := range a {
			out = append(out, diffLine{opDel, s, off + i + 1, 0})
		}
		for j, s := range b {
			out = append(out, diffLine{opIns, s, 0, off + j + 1})
		}
		return out
	}
	if n == 0 || m == 0 {
		return replaced()
	}
	max := n + m
	if max > maxEditDistance {
		max = maxEditDistance
	}
	// v[k+max] = furthest x on diagonal k; trace[d] = v restricted to
	// diagonals -d..d before step d+1, stored compactly.
	v := make([]int, 2*max+2)
	var trace [][]int
	found := -1
	for d := 0; d <= max; d++ {
		snap := make([]int, 2*d+1)
		for k := -d; k <= d; k++ {
			snap[k+d] = v[k+max]
		}
		trace = append(trace, snap)
		for k := -d; k <= d; k += 2 {
			var x int
			if k == -d || (k != d && v[k-1+max] < v[k+1+max]) {
				x = v[k+1+max]
			} else {
				x = v[k-1+max] + 1
			}
			y := x - k
			for x < n && y < m && a[x] == b[y] {
				x++
				y++
			}
			v[k+max] = x
			if x >= n && y >= m {
				found = d
				break
			}
		}
		if found >= 0 {
			break
		}
	}
	if found < 0 {
		return replaced()
	}
	// Walk back from (n, m).
	var rev []diffLine
	x, y := n, m
	for d := found; d > 0; d-- {
		// trace[d] is V as it stood when step d began (after step d-1).
		prev := trace[d]
		get := func(k int) int { return prev[k+d] }
		k := x - y
		var pk int
		if k == -d || (k != d && get(k-1) < get(k+1)) {
			pk = k + 1
		} else {
			pk = k - 1
		}
		px := get(pk)
		py := px - pk
		for x > px && y > py {
			x--
			y--
			rev = append(rev, diffLine{opEqual, a[x], off + x + 1, off + y + 1})
		}
		if x == px {
			y--
			rev = append(rev, diffLine{opIns, b[y], 0, off + y + 1})
		} else {
			x--
			rev = append(rev, diffLine{opDel, a[x], off + x + 1, 0})
		}
	}
	for x > 0 && y > 0 {
		x--
		y--
		rev = append(rev, diffLine{opEqual, a[x], off + x + 1, off + y + 1})
	}
	slices.Reverse(rev)
	return rev
}

// hunk is a run of changes with up to ctx lines of context around it.
type hunk struct {
	OldStart, NewStart int
	Lines              []diffLine
}

func hunks(lines []diffLine, ctx int) []hunk {
	var out []hunk
	i := 0
	for i < len(lines) {
		if lines[i].Op == opEqual {
			i++
			continue
		}
		start := max(i-ctx, 0)
		// Extend while changes are within 2·ctx of each other.
		end := i
		for j := i; j < len(lines); j++ {
			if lines[j].Op != opEqual {
				end = j
			} else if j-end > 2*ctx {
				break
			}
		}
		stop := min(end+ctx+1, len(lines))
		h := hunk{Lines: lines[start:stop]}
		for _, l := range h.Lines {
			if h.OldStart == 0 && l.Old > 0 {
				h.OldStart = l.Old
			}
			if h.NewStart == 0 && l.New > 0 {
				h.NewStart = l.New
			}
		}
		out = append(out, h)
		i = stop
	}
	return out
}

// fileChange is one policy file's change between two published sets.
type fileChange struct {
	Name string
	// Status is "added", "removed" or "modified".
	Status         string
	Added, Removed int
	Hunks          []hunk
	// Whitespace describes a modification that changes only whitespace
	// ("trailing newline added", "line endings", …); "" otherwise. Such a
	// change can show +0 −0 or pairs of lines that look the same.
	Whitespace string
}

// Summary is the change in figures, as the diff's heading shows it:
// "modified, +2 −1", with the kind of a whitespace-only change.
func (c fileChange) Summary() string {
	s := c.Status + ", +" + strconv.Itoa(c.Added) + " −" + strconv.Itoa(c.Removed)
	if c.Whitespace != "" {
		s += "; whitespace only: " + c.Whitespace
	}
	return s
}

// whitespaceChange describes how old and cur, which differ, differ when
// they differ only in ASCII whitespace; "" when they differ otherwise.
func whitespaceChange(old, cur string) string {
	switch {
	case old+"\n" == cur:
		return "trailing newline added"
	case old == cur+"\n":
		return "trailing newline removed"
	}
	lf := func(s string) string { return strings.ReplaceAll(s, "\r\n", "\n") }
	if lf(old) == lf(cur) {
		return "line endings changed (CRLF and LF)"
	}
	squeeze := func(s string) string {
		return strings.Map(func(r rune) rune {
			switch r {
			case ' ', '\t', '\n', '\r', '\v', '\f':
				return -1
			}
			return r
		}, s)
	}
	if squeeze(old) == squeeze(cur) {
		return "spaces, tabs or line breaks changed"
	}
	return ""
}

// policyDiff compares two sets' files by name, in name order. Unchanged
// files are left out.
func policyDiff(prev, cur []PolicyFile) []fileChange {
	old := make(map[string]string, len(prev))
	for _, f := range prev {
		old[f.Name] = f.Text
	}
	now := make(map[string]string, len(cur))
	for _, f := range cur {
		now[f.Name] = f.Text
	}
	names := slices.Sorted(maps.Keys(old))
	for _, k := range slices.Sorted(maps.Keys(now)) {
		if _, ok := old[k]; !ok {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	var out []fileChange
	for _, name := range names {
		o, inOld := old[name]
		c, inNew := now[name]
		if inOld && inNew && o == c {
			continue
		}
		fc := fileChange{Name: name, Status: "modified"}
		switch {
		case !inOld:
			fc.Status = "added"
		case !inNew:
			fc.Status = "removed"
		default:
			fc.Whitespace = whitespaceChange(o, c)
		}
		lines := lineDiff(splitLines(o), splitLines(c))
		for _, l := range lines {
			switch l.Op {
			case opIns:
				fc.Added++
			case opDel:
				fc.Removed++
			}
		}
		fc.Hunks = hunks(lines, 3)
		out = append(out, fc)
	}
	return out
}
