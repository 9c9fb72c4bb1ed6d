package audit

import (
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
// error or panic, and no data string becomes markup.
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
		r.Evidence[0].Segments[0].Name = name
		html := string(renderHTML(t, r, nil))
		if strings.Contains(name, "<") && strings.Contains(html, name) && strings.ContainsAny(name, "abcdefghijklmnopqrstuvwxyz") {
			t.Errorf("unescaped %q in HTML", name)
		}
		renderCSV(t, r)
		renderPDF(t, r, nil)
	})
}
