package audit

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Regression tests for an adversarial review of the reports: text that
// multiplies PDF pages, invisible characters that make the HTML show
// something else than the ledger holds, a segment posing as the overall
// summary, and wording that claimed more than the ledger shows.

var pdfPageRE = regexp.MustCompile(`/Type /Page\b`)

func pdfPages(b []byte) int { return len(pdfPageRE.FindAll(b, -1)) }

// TestPDFBlankLinesBounded: a value made of newlines used to bypass the cap
// on a cell's lines, and each line past the page bottom made a page of its
// own (a reason of 1,024 newlines turned a 15-page report into 980 pages).
func TestPDFBlankLinesBounded(t *testing.T) {
	base := pdfPages(renderPDF(t, richReport(), nil))
	nl := strings.Repeat("\n", 1024)
	cases := map[string]func(r *Report){
		"decision reason":      func(r *Report) { r.Decisions[0].Reason = nl },
		"description":          func(r *Report) { r.Versions[1].Description = strings.Repeat("\n", 4096) },
		"blank-looking lines":  func(r *Report) { r.Versions[1].Description = strings.Repeat(" \t\r\n", 1024) },
		"alias move reason":    func(r *Report) { r.AliasMoves[1].Reason = nl }, // a dossier paragraph
		"scope note":           func(r *Report) { r.Scope.Notes = append(r.Scope.Notes, nl) },
		"rule message":         func(r *Report) { r.Decisions[0].Rules[0].Message = "x" + nl + "y" },
		"policy file name":     func(r *Report) { r.PolicySets[1].Files[1].Name = "extra" + nl + ".rego" },
		"checkpoint":           func(r *Report) { r.Integrity.Checkpoint = nl },
		"title":                func(r *Report) { r.Title = "t" + nl },
		"words over many rows": func(r *Report) { r.Decisions[0].Reason = strings.Repeat("word\n", 1000) },
	}
	for _, name := range slices.Sorted(maps.Keys(cases)) {
		r := richReport()
		cases[name](r)
		if got := pdfPages(renderPDF(t, r, nil)); got > base+2 {
			t.Errorf("%s of newlines: %d pages, want at most %d (the report without it has %d)", name, got, base+2, base)
		}
	}

	// 50 such decisions: one table row each, a line taller than the same
	// decisions with the reason "x" (the blank lines fold into one).
	fifty := func(reason string) int {
		r := richReport()
		d0 := r.Decisions[0]
		r.Decisions = nil
		for i := range 50 {
			d := d0
			d.ID = fmt.Sprint("dec_", i)
			d.Reason = reason
			r.Decisions = append(r.Decisions, d)
		}
		return pdfPages(renderPDF(t, r, nil))
	}
	if got, ref := fifty("x"+strings.Repeat("\n", 1023)), fifty("x"); got > ref+2 {
		t.Errorf("50 decisions with a reason of newlines: %d pages, want at most %d (%d with the reason \"x\")", got, ref+2, ref)
	}
}

func TestPDFWrapCapsEveryLine(t *testing.T) {
	d := newTestPDFDoc(t)
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", []string{""}},
		{"a\n\n\n\nb", []string{"a", "", "b"}},
		{"a\n \n\t\nb", []string{"a", "", "b"}},
		{"\n\n\n", []string{""}},
	} {
		if got := d.wrap(tc.in, bodyW); !slices.Equal(got, tc.want) {
			t.Errorf("wrap(%q): got %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, in := range []string{strings.Repeat("a\n\n", 500), strings.Repeat("a\n", 500), strings.Repeat("word ", 5000)} {
		got := d.wrap(in, 20)
		if len(got) != maxCellRows || got[len(got)-1] != d.pdfText(cutMark) {
			t.Errorf("wrap of %d bytes: got %d lines ending %q, want %d ending with the cut mark", len(in), len(got), got[len(got)-1], maxCellRows)
		}
	}
}

func newTestPDFDoc(t *testing.T) *pdfDoc {
	t.Helper()
	if err := loadGlyphs(); err != nil {
		t.Fatal(err)
	}
	d := newPDFDoc(&Report{GeneratedAt: at("2026-01-01T00:00:00Z")}, (*Options)(nil).withDefaults())
	d.font("", 7.5)
	return d
}

func TestHiddenRune(t *testing.T) {
	hidden := []rune{
		'\u202a', '\u202b', '\u202c', '\u202d', '\u202e', // embeddings and overrides
		'\u2066', '\u2067', '\u2068', '\u2069', // isolates
		'\u200e', '\u200f', '\u061c', // marks
		'\u200b', '\u200c', '\u200d', '\u2060', '\ufeff', '\u00ad', '\U000e0041', // other format characters
		'\x00', '\x1b', '\x7f', '\u0085', '\u2028', '\u2029',
	}
	for _, r := range hidden {
		if !hiddenRune(r) {
			t.Errorf("%U is not shown as a marker", r)
		}
	}
	for _, r := range "az09 é\t\n\rשا中😀‹›—" {
		if hiddenRune(r) {
			t.Errorf("%U is shown as a marker", r)
		}
	}
	if got, want := showHidden("a\u202eb\x01c\xffd"), "a‹U+202E›b‹U+0001›c\xffd"; got != want {
		t.Errorf("showHidden: got %q, want %q", got, want)
	}
	if got := runeMarker('\U000e0041'); got != "‹U+E0041›" {
		t.Errorf("runeMarker: got %q", got)
	}
}

// trojanLine is a Trojan-Source line: displayed as is, the override and the
// isolates make the comment look like it closes the string.
const trojanLine = "allow if { input.user.role == \"viewer\u202e \u2066// admins only\u2069 \u2066\" }"

func hostileBidiReport() *Report {
	r := richReport()
	r.PolicySets[1].Files[0].Text = r.PolicySets[0].Files[0].Text + trojanLine + "\n"
	v := &r.Versions[1]
	v.Lineage.Datasets = []Dataset{{Name: "train-2026\u202e", Digest: digest('d')}}
	v.Description = "zero\u200bwidth\ufeff and \x1b[31mescape, soft\u00adhyphen"
	r.Approvals[0].Approver.Name = "Dávid\u2067 Kovács\u200f\u061c"
	r.Evidence[0].Segments[0].Name = "seg\u202d"
	return r
}

// TestHTMLShowsHiddenCharacters: no bidi control or other invisible
// character of a value reaches the HTML; each is shown as a marker, in the
// policy diff as everywhere else.
func TestHTMLShowsHiddenCharacters(t *testing.T) {
	html := string(renderHTML(t, hostileBidiReport(), nil))
	if i := hiddenIndex(html); i >= 0 {
		t.Fatalf("HTML holds a hidden character: %q", html[max(0, i-40):min(len(html), i+40)])
	}
	for _, want := range []string{
		`viewer‹U+202E› ‹U+2066›// admins only‹U+2069› ‹U+2066›`, // the policy diff
		`<bdi>train-2026‹U+202E›</bdi>`,                          // the data set, isolated from the digest after it
		`zero‹U+200B›width‹U+FEFF› and ‹U+001B›[31mescape, soft‹U+00AD›hyphen`,
		`<bdi>Dávid‹U+2067› Kovács‹U+200F›‹U+061C›</bdi> (<bdi>dave</bdi>)`,
		`seg‹U+202D›`,
	} {
		if !strings.Contains(html, want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	// The template itself holds none, so every marker stands for a value.
	if i := hiddenIndex(reportTemplate); i >= 0 {
		t.Errorf("report.html.tmpl holds a hidden character at byte %d", i)
	}
}

// TestCSVKeepsHiddenCharacters: the registers are data and keep the exact
// recorded value.
func TestCSVKeepsHiddenCharacters(t *testing.T) {
	for _, f := range renderCSV(t, hostileBidiReport()) {
		switch f.Name {
		case RegisterDir + "/versions.csv":
			if !bytes.Contains(f.Data, []byte("train-2026\u202e")) {
				t.Errorf("%s does not keep the data set name as recorded", f.Name)
			}
		case RegisterDir + "/signatures.csv":
			if !bytes.Contains(f.Data, []byte("Dávid\u2067 Kovács\u200f\u061c")) {
				t.Errorf("%s does not keep the printed name as recorded", f.Name)
			}
		}
	}
}

func TestPDFShowsHiddenCharacters(t *testing.T) {
	text := pdfToText(t, renderPDF(t, hostileBidiReport(), nil))
	norm := strings.Join(strings.Fields(text), " ")
	// (The printed name wraps in its column.)
	for _, want := range []string{"viewer‹U+202E› ‹U+2066›// admins only‹U+2069›", "train-2026‹U+202E›", "Dávid‹U+2067›", "Kovács‹U+200F›‹U+061C›",
		"zero‹U+200B›width‹U+FEFF› and ‹U+001B›[31mescape, soft‹U+00AD›hyphen"} {
		if !strings.Contains(norm, want) {
			t.Errorf("PDF text lacks %q", want)
		}
	}
	for _, r := range []rune{'\u202e', '\u2066', '\u2069', '\u200f'} {
		if strings.ContainsRune(text, r) {
			t.Errorf("PDF text holds %U", r)
		}
	}
}

// sentinel starts every string of the report in TestHTMLIsolatesValues.
const sentinel = "ZQX"

// prefixStrings puts sentinel in front of every string reachable from v,
// map keys included.
func prefixStrings(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(sentinel + v.String())
	case reflect.Pointer:
		if !v.IsNil() {
			prefixStrings(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				prefixStrings(v.Field(i))
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			prefixStrings(v.Index(i))
		}
	case reflect.Map:
		m := reflect.MakeMapWithSize(v.Type(), v.Len())
		for _, k := range v.MapKeys() {
			nk, nv := reflect.New(k.Type()).Elem(), reflect.New(v.Type().Elem()).Elem()
			nk.Set(k)
			nv.Set(v.MapIndex(k))
			prefixStrings(nk)
			prefixStrings(nv)
			m.SetMapIndex(nk, nv)
		}
		v.Set(m)
	}
}

// TestHTMLIsolatesValues: every value the HTML prints as text is inside a
// <bdi>, so right-to-left letters in it cannot reorder the words around it.
// The exceptions are plain-text places: the <title>, attribute values, the
// charts, and <pre> blocks (the checkpoint and the policy diff's lines,
// which are code and stay left to right).
func TestHTMLIsolatesValues(t *testing.T) {
	r := richReport()
	prefixStrings(reflect.ValueOf(r).Elem())
	html := string(renderHTML(t, r, nil))
	if n := strings.Count(html, sentinel); n < 200 {
		t.Fatalf("only %d values reached the HTML; the test is not testing much", n)
	}
	within := func(i int, open, close string) bool {
		return strings.LastIndex(html[:i], open) > strings.LastIndex(html[:i], close)
	}
	for i := 0; ; {
		j := strings.Index(html[i:], sentinel)
		if j < 0 {
			break
		}
		i += j
		lineStart := strings.LastIndexByte(html[:i], '\n') + 1
		ok := within(i, "<bdi>", "</bdi>") || within(i, "<title>", "</title>") || within(i, "<pre>", "</pre>") ||
			within(i, "<svg ", "</svg>") || within(i, "<", ">") // the last: an attribute value
		if !ok {
			t.Errorf("value not isolated: %q", html[max(lineStart, i-80):min(len(html), i+40)])
		}
		i += len(sentinel)
	}
	// A right-to-left printed name keeps its "(id)" after it.
	r = richReport()
	r.Approvals[0].Approver = Actor{ID: "sarah", Name: "שרה כהן"}
	if html := string(renderHTML(t, r, nil)); !strings.Contains(html, "<bdi>שרה כהן</bdi> (<bdi>sarah</bdi>)") {
		t.Error("a right-to-left printed name is not isolated from the id after it")
	}
}

// TestOverallSegmentName: a segment that traffic named "overall" (older
// summaries can hold one) is printed as a segment; the overall summary is
// labelled (overall) everywhere, and a segment carrying that label is
// refused.
func TestOverallSegmentName(t *testing.T) {
	r := richReport()
	fake := r.Evidence[0].Overall
	fake.N, fake.Agreement = 99999, Interval{Rate: 1, Lower: 0.999, Upper: 1}
	var eu Segment
	for _, s := range r.Evidence[0].Segments {
		if s.Name == "eu" {
			eu = s
		}
	}
	r.Evidence[0].SetSegments(map[string]Segment{"overall": fake, "eu": eu})
	for _, f := range renderCSV(t, r) {
		if f.Name != RegisterDir+"/shadow-evidence.csv" {
			continue
		}
		recs, err := csv.NewReader(bytes.NewReader(f.Data)).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		col := slices.Index(recs[0], "segment")
		var got []string
		for _, rec := range recs[1:] {
			got = append(got, rec[col]+"="+rec[col+1])
		}
		if want := []string{OverallSegment + "=1540", "eu=600", "overall=99999"}; !slices.Equal(got, want) {
			t.Errorf("shadow-evidence.csv segments: got %q, want %q", got, want)
		}
	}
	html := string(renderHTML(t, r, nil))
	if n := strings.Count(html, "<tr><td><bdi>"+OverallSegment+"</bdi></td><td class=\"n\">1,540</td>"); n != 1 {
		t.Errorf("HTML has %d overall rows with the overall summary's n, want 1", n)
	}
	if strings.Count(html, "<bdi>"+OverallSegment+"</bdi>") != 1 {
		t.Error("HTML labels more than one row (overall)")
	}

	r.Evidence[0].SetSegments(map[string]Segment{OverallSegment: fake})
	if err := r.Validate(); !errors.Is(err, ErrInvalidReport) || !strings.Contains(err.Error(), OverallSegment) {
		t.Errorf("a segment named %q: got %v, want ErrInvalidReport naming it", OverallSegment, err)
	}
}

func TestPolicyDiffWhitespaceOnly(t *testing.T) {
	for _, tc := range []struct{ old, cur, want string }{
		{"allow := true", "allow := true\n", "trailing newline added"},
		{"allow := true\n", "allow := true", "trailing newline removed"},
		{"a\nb\n", "a\r\nb\r\n", "line endings changed (CRLF and LF)"},
		{"a := 1\n", "a :=  1\n", "spaces, tabs or line breaks changed"},
		{"x := \"admin\"\n", "x := \"\u0430dmin\"\n", ""},
	} {
		ch := policyDiff([]PolicyFile{{"p.rego", tc.old}}, []PolicyFile{{"p.rego", tc.cur}})
		if len(ch) != 1 || ch[0].Whitespace != tc.want {
			t.Errorf("%q -> %q: got %+v, want one change with whitespace %q", tc.old, tc.cur, ch, tc.want)
		}
	}
	r := richReport()
	r.PolicySets[1].Files = []PolicyFile{{"promotion.rego", strings.ReplaceAll(regoV1, "\n", "\r\n")}, {"data.json", `{"a":1}` + "\n"}}
	html := string(renderHTML(t, r, nil))
	for _, want := range []string{
		"(modified, &#43;0 −0; whitespace only: trailing newline added)",
		"(modified, &#43;11 −11; whitespace only: line endings changed (CRLF and LF))",
		"&#43; package hallmark.promotion‹U+000D›</span>",
	} {
		if !strings.Contains(html, want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	norm := strings.Join(strings.Fields(pdfToText(t, renderPDF(t, r, nil))), " ")
	for _, want := range []string{"data.json (modified, +0 −0; whitespace only: trailing newline added)", "+ package hallmark.promotion‹U+000D›"} {
		if !strings.Contains(norm, want) {
			t.Errorf("PDF text lacks %q", want)
		}
	}
}

// TestReportClaims: the reports say what the ledger shows and no more.
func TestReportClaims(t *testing.T) {
	r := richReport()
	r.Signatures[1].Trusted = false
	html := string(renderHTML(t, r, nil))
	pdf := strings.Join(strings.Fields(pdfToText(t, renderPDF(t, r, nil))), " ")
	for _, bad := range []string{"Current aliases", "when the export was made.\"", "Every value in this report comes from the ledger.", "every version's signature verifies"} {
		if strings.Contains(html, bad) || strings.Contains(pdf, bad) {
			t.Errorf("a report still says %q", bad)
		}
	}
	for _, want := range []string{"Aliases at the end of the range", "(moved here within the range)", "Aliases at range end",
		"except the export", "the shadow evidence summaries, which are the registry", "every version signature recorded as valid verifies again",
		"These summaries are the registry"} {
		if !strings.Contains(html, strings.ReplaceAll(want, "'", "&#39;")) {
			t.Errorf("HTML lacks %q", want)
		}
		if !strings.Contains(pdf, want) {
			t.Errorf("PDF lacks %q", want)
		}
	}
	// The PDF dossier says "not trusted" where the HTML does.
	if !strings.Contains(html, `<span class="allow">valid</span>, not trusted; <bdi>public-key</bdi>`) {
		t.Error("HTML dossier does not say not trusted")
	}
	if !strings.Contains(pdf, "valid, not trusted; public-key") {
		t.Error("PDF dossier does not say not trusted")
	}
}
