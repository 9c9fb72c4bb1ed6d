package audit

import (
	"bytes"
	"encoding/csv"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func renderHTML(tb testing.TB, r *Report, o *Options) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := RenderHTML(&buf, r, o); err != nil {
		tb.Fatalf("RenderHTML: %v", err)
	}
	return buf.Bytes()
}

func renderCSV(tb testing.TB, r *Report) []File {
	tb.Helper()
	files, err := RenderCSV(r)
	if err != nil {
		tb.Fatalf("RenderCSV: %v", err)
	}
	return files
}

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", filepath.FromSlash(name))
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run with -update to create it): %v", err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		for i := 0; i < len(gl) && i < len(wl); i++ {
			if gl[i] != wl[i] {
				t.Fatalf("%s differs from golden at line %d:\ngot  %q\nwant %q\n(run go test -update if the change is intended)", name, i+1, gl[i], wl[i])
			}
		}
		t.Fatalf("%s differs from golden: got %d lines, want %d (run go test -update if intended)", name, len(gl), len(wl))
	}
}

func TestGoldenHTML(t *testing.T) {
	golden(t, "report.html", renderHTML(t, richReport(), nil))
}

func TestGoldenCSV(t *testing.T) {
	files := renderCSV(t, richReport())
	var names []string
	for _, f := range files {
		names = append(names, f.Name)
		golden(t, f.Name, f.Data)
	}
	if got, want := strings.Join(names, ","), strings.Join(RegisterNames(), ","); got != want {
		t.Errorf("got files %s, want %s", got, want)
	}
}

func TestDeterministic(t *testing.T) {
	for i := range 3 {
		a, b := renderHTML(t, richReport(), nil), renderHTML(t, richReport(), nil)
		if !bytes.Equal(a, b) {
			t.Fatalf("run %d: two HTML renders of the same report differ", i)
		}
		fa, fb := renderCSV(t, richReport()), renderCSV(t, richReport())
		for j := range fa {
			if fa[j].Name != fb[j].Name || !bytes.Equal(fa[j].Data, fb[j].Data) {
				t.Fatalf("run %d: %s differs between two renders", i, fa[j].Name)
			}
		}
	}
}

// TestCSVRegisters: every register parses as RFC 4180 with its header, the
// dictionary describes every column of every register, and row counts match
// the model.
func TestCSVRegisters(t *testing.T) {
	r := richReport()
	files := renderCSV(t, r)
	parsed := map[string][][]string{}
	for _, f := range files {
		if !bytes.Contains(f.Data, []byte("\r\n")) {
			t.Errorf("%s: got no CRLF line ends", f.Name)
		}
		rec, err := csv.NewReader(bytes.NewReader(f.Data)).ReadAll()
		if err != nil {
			t.Fatalf("%s: parsing: %v", f.Name, err)
		}
		parsed[strings.TrimPrefix(f.Name, RegisterDir+"/")] = rec
	}
	described := map[string]bool{}
	for _, row := range parsed[DictionaryName][1:] {
		described[row[0]+"/"+row[1]] = true
	}
	for _, reg := range registers {
		rec := parsed[reg.file]
		for _, col := range rec[0] {
			if !described[reg.file+"/"+col] {
				t.Errorf("%s column %q: not in the data dictionary", reg.file, col)
			}
		}
	}
	for _, tc := range []struct {
		file string
		want int
	}{
		{"versions.csv", len(r.Versions)},
		{"decisions.csv", len(r.Decisions)},
		{"decision-rules.csv", 3},
		{"signatures.csv", len(r.Signatures) + len(r.Approvals)},
		{"aliases.csv", len(r.AliasMoves)},
		{"exceptions.csv", len(r.Exceptions) + 1},
		{"policy-changes.csv", len(r.PolicySets)},
		{"access.csv", len(r.AccessChanges)},
		{"shadow-evidence.csv", 4},
	} {
		if got := len(parsed[tc.file]) - 1; got != tc.want {
			t.Errorf("%s: got %d rows, want %d", tc.file, got, tc.want)
		}
	}
	// Every signature row has a printed name, a time and a meaning.
	for i, row := range parsed["signatures.csv"][1:] {
		if row[1] == "" || row[3] == "" || row[5] == "" {
			t.Errorf("signatures.csv row %d: got signed_at %q, printed_name %q, meaning %q; want all set", i+1, row[1], row[3], row[5])
		}
	}
}

func TestCSVFormulaInjection(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"},
		{"+1", "'+1"}, {"-1", "'-1"}, {"@SUM(A1)", "'@SUM(A1)"}, {"\tx", "'\tx"}, {"\rx", "'\rx"},
		{"plain", "plain"}, {"", ""}, {"a=b", "a=b"},
	} {
		if got := cell(tc.in); got != tc.want {
			t.Errorf("cell(%q): got %q, want %q", tc.in, got, tc.want)
		}
	}
	files := renderCSV(t, richReport())
	for _, f := range files {
		rec, err := csv.NewReader(bytes.NewReader(f.Data)).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		for i, row := range rec {
			for j, c := range row {
				if c == "" || f.Name == RegisterDir+"/"+DictionaryName {
					continue
				}
				if strings.ContainsRune("=+@\t\r", rune(c[0])) || (c[0] == '-' && !isNumber(c)) {
					t.Errorf("%s row %d col %d: cell %q starts with a formula character", f.Name, i, j, c)
				}
			}
		}
	}
	var sig []byte
	for _, f := range files {
		if f.Name == RegisterDir+"/signatures.csv" {
			sig = f.Data
		}
	}
	if !bytes.Contains(sig, []byte(`'=HYPERLINK(""http://evil.example"",""click"")`)) {
		t.Errorf("signatures.csv: the =HYPERLINK comment is not neutralised:\n%s", sig)
	}
}

var numberRE = regexp.MustCompile(`^-?[0-9.]+(e[-+]?[0-9]+)?$`)

func isNumber(s string) bool { return numberRE.MatchString(s) }

func TestHTMLEscaping(t *testing.T) {
	html := string(renderHTML(t, richReport(), nil))
	for _, bad := range []string{"<script>alert(1)</script>", "<img src=x", "<b>seg</b>", "</pre><script>", "href=\"javascript:", "src=\"javascript:"} {
		if strings.Contains(html, bad) {
			t.Errorf("HTML contains unescaped %q", bad)
		}
	}
	for _, want := range []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;b&gt;seg&lt;/b&gt;"} {
		if !strings.Contains(html, want) {
			t.Errorf("HTML does not contain escaped %q", want)
		}
	}
	// No tag in the document comes from data: the only elements are the
	// template's own.
	allowed := map[string]bool{}
	for _, tag := range strings.Fields("html head meta title style body main header h1 h2 h3 h4 p table thead tbody tr th td nav ol li a span div code pre section ul figure svg rect line text figcaption i br bdi") {
		allowed[tag] = true
	}
	for _, m := range regexp.MustCompile(`<([a-zA-Z][a-zA-Z0-9]*)`).FindAllStringSubmatch(html, -1) {
		if !allowed[strings.ToLower(m[1])] {
			t.Errorf("HTML contains an unexpected element <%s>", m[1])
		}
	}
}

// TestHTMLNoExternalReferences: no src or href points anywhere but inside the
// document, and the CSP forbids fetching anything.
func TestHTMLNoExternalReferences(t *testing.T) {
	html := string(renderHTML(t, richReport(), nil))
	if !strings.Contains(html, `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">`) {
		t.Error("HTML lacks the strict Content-Security-Policy")
	}
	for _, m := range regexp.MustCompile(`(?i)\s(src|href|action|srcset|xlink:href|data)\s*=\s*"([^"]*)"`).FindAllStringSubmatch(html, -1) {
		if m[1] != "href" || !strings.HasPrefix(m[2], "#") {
			t.Errorf("HTML has %s=%q; want only in-document #anchors", m[1], m[2])
		}
	}
	for _, bad := range []string{"url(", "@import", "<script", "<link", "<img", "<iframe", "<object", "<embed"} {
		if strings.Contains(strings.ToLower(html), bad) {
			t.Errorf("HTML contains %q", bad)
		}
	}
}

func TestHTMLContent(t *testing.T) {
	html := string(renderHTML(t, richReport(), nil))
	for _, want := range []string{
		"<bdi>Dávid Kovács</bdi> (<bdi>dave</bdi>)", "2026-11-23 09:30:00 UTC", "approved", // §11.50: name, time, meaning
		"qmGJxNMMb0NvSxJKj2KKlcdOi31jnA/MmeYnTd4DL2k=", "§11.50", "Art. 12", "Annex IV(6)", "SR 26-2",
		"evidence.latency", "approvals.insufficient",
	} {
		if !strings.Contains(html, want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	for _, s := range Sections {
		if !strings.Contains(html, `id="`+s.ID+`"`) {
			t.Errorf("HTML lacks section %q", s.ID)
		}
	}
}

func TestRowLimits(t *testing.T) {
	r := bigReport(t, 50)
	html := string(renderHTML(t, r, &Options{HTMLRowLimit: 10, DossierLimit: 5}))
	if !strings.Contains(html, "40 more rows are not shown here; all 50 are in <code>registers/versions.csv</code>") {
		t.Error("capped inventory does not point to versions.csv")
	}
	if !strings.Contains(html, "45 older versions have no dossier here") {
		t.Error("capped dossiers are not announced")
	}
	if got := strings.Count(html, `class="dossier"`); got != 5 {
		t.Errorf("got %d dossiers, want 5", got)
	}
}

func TestValidate(t *testing.T) {
	r := richReport()
	r.GeneratedAt = time.Time{}
	var buf bytes.Buffer
	if err := RenderHTML(&buf, r, nil); !errors.Is(err, ErrInvalidReport) {
		t.Errorf("got %v, want ErrInvalidReport", err)
	}
	if buf.Len() != 0 {
		t.Errorf("got %d bytes written for an invalid report, want 0", buf.Len())
	}
	if _, err := RenderCSV(r); !errors.Is(err, ErrInvalidReport) {
		t.Errorf("RenderCSV: got %v, want ErrInvalidReport", err)
	}
}
