package audit

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func renderPDF(tb testing.TB, r *Report, o *Options) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := RenderPDF(&buf, r, o); err != nil {
		tb.Fatalf("RenderPDF: %v", err)
	}
	return buf.Bytes()
}

// tool finds an external program a test needs. Without it the test skips,
// except in CI (CI set), where a missing tool is a failure:
// scripts/install-test-deps.sh installs them.
func tool(tb testing.TB, names ...string) string {
	tb.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		tb.Fatalf("%s not found; run scripts/install-test-deps.sh", names[0])
	}
	tb.Skipf("%s not found (run scripts/install-test-deps.sh); skipping outside CI", names[0])
	return ""
}

func TestPDFDeterministic(t *testing.T) {
	a, b := renderPDF(t, richReport(), nil), renderPDF(t, richReport(), nil)
	if !bytes.Equal(a, b) {
		t.Fatal("two PDF renders of the same report differ")
	}
	if !bytes.HasPrefix(a, []byte("%PDF-")) {
		t.Fatalf("output does not start with %%PDF-: %q", a[:min(len(a), 16)])
	}
	for _, want := range []string{"/CreationDate (D:20261201100000)", "/Producer (hallmark audit report"} {
		if !bytes.Contains(a, []byte(want)) {
			t.Errorf("PDF lacks %q", want)
		}
	}
}

func pdfToText(t *testing.T, pdf []byte) string {
	t.Helper()
	bin := tool(t, "pdftotext")
	dir := t.TempDir()
	in := filepath.Join(dir, "report.pdf")
	if err := os.WriteFile(in, pdf, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-layout", "-enc", "UTF-8", in, "-").CombinedOutput()
	if err != nil {
		t.Fatalf("pdftotext: %v\n%s", err, out)
	}
	return string(out)
}

func TestPDFText(t *testing.T) {
	text := pdfToText(t, renderPDF(t, richReport(), nil))
	norm := strings.Join(strings.Fields(text), " ")
	want := []string{
		"Audit report: credit-risk, Q4 2026", // cover
		"1.4.0",                              // a version label
		"Carol Müller", "Zoë Lefèvre",
		"qmGJxNMMb0NvSxJKj2KKlcdOi31jnA/MmeYnTd4DL2k=", // checkpoint root hash
		"§11.50", "Art. 12", "SR 26-2",
		"evidence.latency", "page 1 of",
		"<script>alert(1)</script>", // shown as text, which is what a PDF does with it
	}
	for _, s := range Sections {
		want = append(want, s.Title)
	}
	for _, w := range want {
		if !strings.Contains(norm, w) {
			t.Errorf("PDF text lacks %q", w)
		}
	}
	// §11.50: the printed name, the date and time and the meaning stand on
	// one row of the signature register.
	row := regexp.MustCompile(`Dávid Kovács \(dave\)\s+2026-11-23 09:30:00 UTC\s+approved\s+approval`)
	if !row.MatchString(text) {
		t.Error("PDF signature register has no row with the approver's printed name, UTC time and meaning")
	}
	if strings.Contains(norm, "{nb}") {
		t.Error("PDF text has an unreplaced page-count alias")
	}
}

func TestPDFRowLimit(t *testing.T) {
	text := pdfToText(t, renderPDF(t, bigReport(t, 60), &Options{PDFRowLimit: 20, DossierLimit: 3}))
	norm := strings.Join(strings.Fields(text), " ")
	if !strings.Contains(norm, "40 more rows are not shown in this PDF; all 60 are in registers/versions.csv") {
		t.Error("capped PDF table does not point to the CSV register")
	}
}

// TestPDFUntrustedRunes: runes the fonts lack (emoji, private use, controls)
// never break rendering.
func TestPDFUntrustedRunes(t *testing.T) {
	r := richReport()
	r.Versions[0].Model = "model-😀-\U0010FFFF-\x00-\u202e-ok"
	r.Versions[0].Description = strings.Repeat("long-word-without-spaces", 400)
	r.Scope.Notes = append(r.Scope.Notes, strings.Repeat("x\n", 200))
	if pdf := renderPDF(t, r, nil); len(pdf) == 0 {
		t.Fatal("empty PDF")
	}
}
