package audit

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// apply rebuilds both sides from an edit script.
func apply(script []diffLine) (a, b []string) {
	for _, l := range script {
		switch l.Op {
		case opEqual:
			a, b = append(a, l.Text), append(b, l.Text)
		case opDel:
			a = append(a, l.Text)
		case opIns:
			b = append(b, l.Text)
		}
	}
	return a, b
}

func lcsLen(a, b []string) int {
	dp := make([][]int, len(a)+1)
	for i := range dp {
		dp[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				dp[i][j] = dp[i+1][j+1] + 1
			} else {
				dp[i][j] = max(dp[i+1][j], dp[i][j+1])
			}
		}
	}
	return dp[0][0]
}

func TestLineDiff(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"", ""}, {"a", ""}, {"", "a"}, {"a b c", "a b c"}, {"a b c", "a x c"},
		{"a b c a b b a", "c b a b a c"}, {"x y z", "a b c"}, {"a a a b", "b a a a"},
		{"p q r s t u", "p r s x t u y"},
	} {
		a, b := strings.Fields(tc.a), strings.Fields(tc.b)
		script := lineDiff(a, b)
		ga, gb := apply(script)
		if strings.Join(ga, " ") != tc.a || strings.Join(gb, " ") != tc.b {
			t.Errorf("diff(%q, %q) rebuilds %q, %q", tc.a, tc.b, ga, gb)
		}
		eq := 0
		for _, l := range script {
			if l.Op == opEqual {
				eq++
			}
		}
		if want := lcsLen(a, b); eq != want {
			t.Errorf("diff(%q, %q): got %d common lines, want %d (not minimal)", tc.a, tc.b, eq, want)
		}
	}
}

// TestLineDiffRandom: on random texts over a small alphabet (many equal
// lines, the hard case), the script rebuilds both sides, is minimal, numbers
// its lines right, and its hunks show every change once.
func TestLineDiffRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	gen := func() []string {
		out := make([]string, rng.IntN(30))
		for i := range out {
			out[i] = string(rune('a' + rng.IntN(4)))
		}
		return out
	}
	for range 3000 {
		a, b := gen(), gen()
		s := lineDiff(a, b)
		ga, gb := apply(s)
		if !slices.Equal(ga, a) || !slices.Equal(gb, b) {
			t.Fatalf("diff(%q, %q) rebuilds %q, %q", a, b, ga, gb)
		}
		eq, changes := 0, 0
		for _, l := range s {
			if l.Op == opEqual {
				eq++
			} else {
				changes++
			}
			if l.Op != opIns && (l.Old < 1 || a[l.Old-1] != l.Text) || l.Op != opDel && (l.New < 1 || b[l.New-1] != l.Text) {
				t.Fatalf("diff(%q, %q): line %+v has wrong line numbers", a, b, l)
			}
		}
		if want := lcsLen(a, b); eq != want {
			t.Fatalf("diff(%q, %q): got %d common lines, want %d (not minimal)", a, b, eq, want)
		}
		shown := 0
		for _, h := range hunks(s, 3) {
			for _, l := range h.Lines {
				if l.Op != opEqual {
					shown++
				}
			}
		}
		if shown != changes {
			t.Fatalf("diff(%q, %q): hunks show %d changes, want %d", a, b, shown, changes)
		}
	}
}

func TestLineDiffGivesUp(t *testing.T) {
	var a, b []string
	for i := range 3000 {
		a = append(a, "a"+string(rune('0'+i%10)))
		b = append(b, "b"+string(rune('0'+i%10)))
	}
	ga, gb := apply(lineDiff(a, b))
	if len(ga) != len(a) || len(gb) != len(b) {
		t.Fatalf("got %d/%d lines, want %d/%d", len(ga), len(gb), len(a), len(b))
	}
}

func TestPolicyDiff(t *testing.T) {
	r := richReport()
	ch := policyDiff(r.PolicySets[0].Files, r.PolicySets[1].Files)
	got := map[string]string{}
	for _, c := range ch {
		got[c.Name] = c.Status
	}
	want := map[string]string{"data.json": "removed", "extra.rego": "added", "promotion.rego": "modified"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %q, want %q", k, got[k], v)
		}
	}
	for _, c := range ch {
		if c.Name == "promotion.rego" && (c.Added != 4 || c.Removed != 0) {
			t.Errorf("promotion.rego: got +%d -%d, want +4 -0", c.Added, c.Removed)
		}
	}
}

// FuzzRender: any strings in a report render to HTML, CSV and PDF without
// error or panic, no data string becomes markup, and no invisible character
// reaches the HTML.
func FuzzRender(f *testing.F) {
	for _, s := range []string{"", "<script>alert(1)</script>", "=1+1", "😀\x00\u202e", "a\nb\r\nc", strings.Repeat("x", 500)} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, name, text string) {
		r := richReport()
		r.Versions[0].Model = name
		r.Versions[0].Description = text
		r.Approvals[0].Approver.Name = name
		r.Approvals[0].Comment = text
		r.PolicySets[1].Files[0].Text = text
		if name != OverallSegment { // Validate refuses that one
			r.Evidence[0].Segments[0].Name = name
		}
		html := string(renderHTML(t, r, nil))
		if strings.Contains(name, "<") && strings.Contains(html, name) && strings.ContainsAny(name, "abcdefghijklmnopqrstuvwxyz") {
			t.Errorf("unescaped %q in HTML", name)
		}
		if i := hiddenIndex(html); i >= 0 {
			t.Errorf("HTML holds a hidden character: %q", html[max(0, i-20):min(len(html), i+20)])
		}
		renderCSV(t, r)
		renderPDF(t, r, nil)
	})
}
