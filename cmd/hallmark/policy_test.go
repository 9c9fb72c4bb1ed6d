package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// policyDir copies the default pack into a temporary folder the test may
// change.
func policyDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join("..", "..", "policy", "default")
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func writeFile(t testing.TB, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

const failingTest = `package hallmark.promotion_test

import data.hallmark.promotion

test_always_allows if promotion.decision.allow with input as {"request": {"alias": "x"}}
`

func TestPolicyTestCommand(t *testing.T) {
	dir := policyDir(t)
	code, stdout, stderr := runCmd(t, "", "policy", "test", dir, "--coverage")
	if code != 0 {
		t.Fatalf("exit code: got %d, want 0\n%s%s", code, stdout, stderr)
	}
	n := countRegoTests(t, dir)
	for _, want := range []string{fmt.Sprintf("PASS: %d/%d", n, n), "coverage: 100.0%"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout: got %q, want it to contain %q", stdout, want)
		}
	}

	writeFile(t, filepath.Join(dir, "extra_test.rego"), failingTest)
	code, stdout, _ = runCmd(t, "", "policy", "test", dir)
	if code != 1 {
		t.Fatalf("failing test: exit code got %d, want 1\n%s", code, stdout)
	}
	for _, want := range []string{"extra_test.rego:", "data.hallmark.promotion_test.test_always_allows: FAIL", fmt.Sprintf("FAIL: 1/%d", n+1)} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout: got %q, want it to contain %q", stdout, want)
		}
	}
}

func TestPolicyCheckCommand(t *testing.T) {
	dir := policyDir(t)
	code, stdout, stderr := runCmd(t, "", "policy", "check", dir)
	if code != 0 || !strings.Contains(stdout, "ok, 5 file(s), set digest sha256:") || !strings.Contains(stdout, "OPA's plan of data.hallmark.promotion.decision (the fast path)") {
		t.Fatalf("check: code %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// A set the plan interpreter refuses still checks, and says why it
	// runs top-down.
	walker := t.TempDir()
	writeFile(t, filepath.Join(walker, "p.rego"), `package hallmark.promotion

n := count([p | walk(input.request, [p, _])])

decision := {"allow": n > 0, "deny": set(), "warn": set(), "required_approvals": 0}
`)
	code, stdout, stderr = runCmd(t, "", "policy", "check", walker)
	if code != 0 || !strings.Contains(stdout, "decisions evaluate with OPA's top-down evaluator: ") || !strings.Contains(stdout, `built-in "walk"`) {
		t.Fatalf("check of a set off the fast path: code %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	writeFile(t, filepath.Join(dir, "typo.rego"), "package hallmark.promotion\n\ntypo if input.requst.model == \"x\"\n")
	code, _, stderr = runCmd(t, "", "policy", "check", dir)
	want := filepath.Join(dir, "typo.rego") + ":3:9: rego_type_error: undefined ref: input.requst.model"
	if code != 1 || !strings.Contains(stderr, want) {
		t.Fatalf("check typo: code %d, stderr %q, want exit 1 and %q", code, stderr, want)
	}
	code, _, _ = runCmd(t, "", "policy", "check")
	if code != 2 {
		t.Fatalf("check without DIR: exit code got %d, want 2", code)
	}
}

func TestPolicyFmtCommand(t *testing.T) {
	dir := policyDir(t)
	if code, stdout, stderr := runCmd(t, "", "policy", "fmt", dir, "--check"); code != 0 {
		t.Fatalf("fmt --check on the default pack: code %d %s %s", code, stdout, stderr)
	}
	ugly := filepath.Join(dir, "ugly.rego")
	writeFile(t, ugly, "package hallmark.promotion\nx:=1\n")
	code, stdout, _ := runCmd(t, "", "policy", "fmt", dir, "--check")
	if code != 1 || !strings.Contains(stdout, ugly) {
		t.Fatalf("fmt --check: code %d, stdout %q, want exit 1 naming %s", code, stdout, ugly)
	}
	if b, _ := os.ReadFile(ugly); string(b) != "package hallmark.promotion\nx:=1\n" {
		t.Fatalf("fmt --check changed the file: %q", b)
	}
	if code, _, stderr := runCmd(t, "", "policy", "fmt", dir); code != 0 {
		t.Fatalf("fmt: code %d, %s", code, stderr)
	}
	if b, _ := os.ReadFile(ugly); string(b) != "package hallmark.promotion\n\nx := 1\n" {
		t.Fatalf("fmt wrote %q", b)
	}
	// A parse error leaves every file as it was.
	writeFile(t, ugly, "package hallmark.promotion\nx:=\n")
	writeFile(t, filepath.Join(dir, "b.rego"), "package hallmark.promotion\ny:=1\n")
	code, _, stderr := runCmd(t, "", "policy", "fmt", dir)
	if code != 1 || !strings.Contains(stderr, "ugly.rego:") {
		t.Fatalf("fmt with a parse error: code %d, stderr %q", code, stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "b.rego")); string(b) != "package hallmark.promotion\ny:=1\n" {
		t.Fatalf("fmt changed b.rego despite the parse error: %q", b)
	}
}

func TestPolicyEvalCommand(t *testing.T) {
	dir := policyDir(t)
	in, err := os.ReadFile(filepath.Join("..", "..", "policy", "testdata", "denied.json"))
	if err != nil {
		t.Fatal(err)
	}
	inPath := filepath.Join(t.TempDir(), "input.json")
	writeFile(t, inPath, string(in))

	code, stdout, stderr := runCmd(t, "", "policy", "eval", dir, "--input", inPath)
	if code != 0 {
		t.Fatalf("eval: code %d, stderr %q", code, stderr)
	}
	var d struct {
		Allow bool                    `json:"allow"`
		Deny  []struct{ Rule string } `json:"deny"`
	}
	if err := json.Unmarshal([]byte(stdout), &d); err != nil {
		t.Fatalf("eval output is not the decision JSON: %v\n%s", err, stdout)
	}
	if d.Allow || len(d.Deny) != 3 {
		t.Fatalf("decision: got allow %v with %d deny, want a denial with 3", d.Allow, len(d.Deny))
	}

	code, stdout, _ = runCmd(t, string(in), "policy", "eval", dir, "--input", "-", "--explain")
	want := "deny signature.trusted_required: " + filepath.Join(dir, "promotion.rego") + ":"
	if code != 0 || !strings.Contains(stdout, want) {
		t.Fatalf("eval --explain: code %d, stdout %q, want %q", code, stdout, want)
	}

	code, _, stderr = runCmd(t, `{"schema_version": 1}`, "policy", "eval", dir, "--input", "-")
	if code != 1 || !strings.Contains(stderr, "invalid policy input") {
		t.Fatalf("eval of an invalid input: code %d, stderr %q", code, stderr)
	}
	if code, _, _ := runCmd(t, "", "policy", "eval", dir); code != 2 {
		t.Fatalf("eval without --input: exit code got %d, want 2", code)
	}
}

// countRegoTests counts the test rules of the set in dir, so that the
// expected totals follow the default pack as it grows.
func countRegoTests(t *testing.T, dir string) int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*_test.rego"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no test files in %s: %v", dir, err)
	}
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "test_") {
				n++
			}
		}
	}
	return n
}

func TestPolicyTestOutcomes(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.rego"), "package hallmark.promotion\n\nx := 1\n\ny := 2 if input.request.model == \"a\"\n")
	writeFile(t, filepath.Join(dir, "p_test.rego"), "package hallmark.promotion_test\n\nimport data.hallmark.promotion\n\ntodo_test_later if promotion.x == 1\n")
	code, stdout, stderr := runCmd(t, "", "policy", "test", dir)
	if want := "no tests were run: all 1 test(s) are skipped (todo_)"; code != 1 || !strings.Contains(stderr, want) || !strings.Contains(stdout, "SKIPPED: 1/1") {
		t.Errorf("only skipped tests: exit %d, stdout %q, stderr %q; want exit 1 and %q", code, stdout, stderr, want)
	}
	writeFile(t, filepath.Join(dir, "p_test.rego"), "package hallmark.promotion_test\n\nimport data.hallmark.promotion\n\ntest_x if promotion.x == 1\n\ntodo_test_later if promotion.x == 1\n")
	if code, stdout, stderr := runCmd(t, "", "policy", "test", dir, "--coverage"); code != 0 || !strings.Contains(stdout, "not covered: 5\n") {
		t.Errorf("a pass beside a skipped test: exit %d, stdout %q, stderr %q; want exit 0 and line 5 not covered once", code, stdout, stderr)
	}
	if code, _, stderr := runCmd(t, "", "policy", "test", dir, "--run", "nothing_matches"); code != 1 || !strings.Contains(stderr, `none matches --run "nothing_matches"`) {
		t.Errorf("--run matching nothing: exit %d, stderr %q", code, stderr)
	}
	if code, _, stderr := runCmd(t, "", "policy", "test", dir, "--run", "("); code != 2 || !strings.Contains(stderr, `--run "(": error parsing regexp`) {
		t.Errorf("--run '(': exit %d, stderr %q; want exit 2 naming the flag", code, stderr)
	}
	code, _, stderr = runCmd(t, "", "policy", "test", dir, "--no-such-flag")
	if n := strings.Count(stderr, "flag provided but not defined: -no-such-flag"); code != 2 || n != 1 {
		t.Errorf("unknown flag: exit %d, error printed %d times in %q; want exit 2, once", code, n, stderr)
	}
	if !strings.Contains(stderr, "Usage: hallmark policy test") {
		t.Errorf("unknown flag: stderr %q lacks the usage", stderr)
	}
}

func TestPolicyEvalExplainSources(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.rego"), `package hallmark.promotion

decision := {"allow": false, "deny": deny | inline, "warn": set(), "required_approvals": 0}

inline := {{"rule": "style.inline", "message": "built in the decision"}}

deny contains reason if {
	input.request.alias != ""
	reason := {"rule": "style.var", "message": "built in the body"}
}
`)
	in, err := os.ReadFile(filepath.Join("..", "..", "policy", "testdata", "denied.json"))
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCmd(t, string(in), "policy", "eval", dir, "--input", "-", "--explain")
	for _, want := range []string{
		"deny style.var: " + filepath.Join(dir, "p.rego") + ":7\n",
		"deny style.inline: source not identified\n",
	} {
		if code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("eval --explain: exit %d, stdout %q, stderr %q; want %q", code, stdout, stderr, want)
		}
	}
	if strings.Contains(stdout, "no deny/warn rule") {
		t.Errorf("eval --explain claims there is no rule: %q", stdout)
	}
}

func TestPolicyLoadRefusals(t *testing.T) {
	dir := policyDir(t)
	writeFile(t, filepath.Join(dir, ".draft.rego"), "package hallmark.promotion\n")
	if code, _, stderr := runCmd(t, "", "policy", "check", dir); code != 1 || !strings.Contains(stderr, ".draft.rego is hidden") {
		t.Errorf("hidden module: exit %d, stderr %q", code, stderr)
	}
	os.Remove(filepath.Join(dir, ".draft.rego"))
	writeFile(t, filepath.Join(dir, "latin1.rego"), "package hallmark.promotion\n\n# caf\xe9\n")
	if code, _, stderr := runCmd(t, "", "policy", "check", dir); code != 1 || !strings.Contains(stderr, `"latin1.rego" is not UTF-8: invalid byte 0xe9 on line 3`) {
		t.Errorf("non-UTF-8 module: exit %d, stderr %q", code, stderr)
	}
	os.Remove(filepath.Join(dir, "latin1.rego"))
	writeFile(t, filepath.Join(dir, "data.json"), "[]")
	if code, _, stderr := runCmd(t, "", "policy", "check", dir); code != 1 || !strings.Contains(stderr, "data.json:1:1: data_error: data.json must be one JSON object, found an array") {
		t.Errorf("array data.json: exit %d, stderr %q", code, stderr)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.rego")
	if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(p, []byte("new")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	info, err2 := os.Stat(p)
	if err != nil || err2 != nil || string(b) != "new" || info.Mode().Perm() != 0o600 {
		t.Fatalf("got %q (%v, %v), mode %v; want \"new\", mode 0600", b, err, err2, info.Mode())
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
}
