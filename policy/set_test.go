package policy

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestSetDigest(t *testing.T) {
	// Golden value, computed with coreutils as the documentation says:
	// (sha256sum a.rego data.json | LC_ALL=C sort -k2) | sha256sum
	a := File{Name: "a.rego", Data: []byte("package x\n")}
	d := File{Name: "data.json", Data: []byte("{\"k\": 1}\n")}
	const want = "sha256:b315efaa15fb5534e1565509fa3823fcbd2bf057bb7838f979eab91ffc2a3f9f"
	for _, order := range [][]File{{a, d}, {d, a}} {
		s, err := NewSet(order)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Digest().String(); got != want {
			t.Fatalf("digest: got %s, want %s", got, want)
		}
	}
	s, _ := NewSet([]File{a, {Name: "data.json", Data: []byte("{\"k\": 2}\n")}})
	if s.Digest().String() == want {
		t.Fatal("digest did not change with a file's bytes")
	}
	s, _ = NewSet([]File{{Name: "b.rego", Data: a.Data}, d})
	if s.Digest().String() == want {
		t.Fatal("digest did not change with a file's name")
	}
}

func TestParseDigest(t *testing.T) {
	d := DefaultSet().Digest()
	got, err := ParseDigest(d.String())
	if err != nil || got != d {
		t.Fatalf("round trip: got %v, %v; want %v", got, err, d)
	}
	for _, bad := range []string{"", "sha256:", "sha1:" + strings.Repeat("0", 64), "sha256:" + strings.Repeat("A", 64), "sha256:" + strings.Repeat("0", 63), "sha256:" + strings.Repeat("g", 64)} {
		if _, err := ParseDigest(bad); err == nil {
			t.Errorf("ParseDigest(%q): got nil error", bad)
		}
	}
}

func TestNewSetRejects(t *testing.T) {
	ok := File{Name: "p.rego", Data: []byte(minimalDecision)}
	tests := []struct {
		name  string
		files []File
		want  string
	}{
		{"empty name", []File{ok, {Name: ""}}, "is empty"},
		{"dot dot", []File{ok, {Name: "../x.rego"}}, "clean relative"},
		{"absolute", []File{ok, {Name: "/x.rego"}}, "clean relative"},
		{"unclean", []File{ok, {Name: "a//x.rego"}}, "clean relative"},
		{"backslash", []File{ok, {Name: `a\x.rego`}}, "backslash"},
		{"newline", []File{ok, {Name: "a\n.rego"}}, "control"},
		{"nested data", []File{ok, {Name: "sub/data.json"}}, "below the set's root"},
		{"other file", []File{ok, {Name: "README.md"}}, "neither"},
		{"duplicate", []File{ok, ok}, "twice"},
		{"too big", []File{ok, {Name: "big.rego", Data: make([]byte, MaxFileSize+1)}}, "at most"},
		{"only tests", []File{{Name: "p_test.rego", Data: []byte("package x\n")}}, "no Rego modules"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewSet(tt.files)
			if !errors.Is(err, ErrInvalidSet) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want ErrInvalidSet containing %q", err, tt.want)
			}
		})
	}
}

func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("rules/p.rego", minimalDecision)
	write("data.json", "{}")
	write("README.md", "ignored")
	write(".git/config", "ignored")
	write(".github/ci.yaml", "ignored")
	s, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range s.Files() {
		names = append(names, f.Name)
	}
	if got, want := strings.Join(names, ","), "data.json,rules/p.rego"; got != want {
		t.Fatalf("files: got %s, want %s", got, want)
	}
	write("rules/data.json", "{}")
	if _, err := LoadDir(dir); !errors.Is(err, ErrInvalidSet) {
		t.Fatalf("nested data.json: got %v, want ErrInvalidSet", err)
	}
	if _, err := LoadDir(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing dir: got nil error")
	}
}

func TestDefaultSetVets(t *testing.T) {
	pub, err := Vet(context.Background(), DefaultSet(), VetOptions{MinCoverage: 100})
	if err != nil {
		t.Fatalf("Vet(default, 100%%): %v", err)
	}
	if len(pub.Tests) < 25 {
		t.Fatalf("tests: got %d, want the default pack's tests (≥ 25)", len(pub.Tests))
	}
	if pub.Coverage.Percent != 100 {
		t.Fatalf("coverage: got %v, want 100", pub.Coverage.Percent)
	}
	if pub.Digest != DefaultSet().Digest() || len(pub.Files) != len(DefaultSet().Files()) {
		t.Fatal("publication does not carry the set's digest and files")
	}
}

func TestNewSetRefusesNonUTF8(t *testing.T) {
	ok := File{Name: "p.rego", Data: []byte(minimalDecision)}
	bad := File{Name: "rules/q.rego", Data: []byte("package x\n\n# caf\xe9 in Latin-1\n")}
	_, err := NewSet([]File{ok, bad})
	want := `file "rules/q.rego" is not UTF-8: invalid byte 0xe9 on line 3 (byte offset 16)`
	if !errors.Is(err, ErrInvalidSet) || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want ErrInvalidSet containing %q", err, want)
	}
	data := File{Name: DataFile, Data: []byte("{\"k\": \"\xff\"}")}
	if _, err := NewSet([]File{ok, data}); !errors.Is(err, ErrInvalidSet) || !strings.Contains(err.Error(), `"data.json" is not UTF-8: invalid byte 0xff on line 1 (byte offset 7)`) {
		t.Fatalf("data.json: got %v", err)
	}
	utf := File{Name: "u.rego", Data: []byte("package x\n\n# café, 日本\n")}
	if _, err := NewSet([]File{ok, utf}); err != nil {
		t.Fatalf("valid UTF-8: %v", err)
	}
}

// TestLoadDirRefuses checks that what opa would load and hallmark would
// not (hidden modules, linked folders and files) is an error naming the
// path, never silently left out.
func TestLoadDirRefuses(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string
	}{
		{"hidden module", func(t *testing.T, dir string) { writeIn(t, dir, ".y.rego", "package y\n") }, `.y.rego is hidden`},
		{"module in a hidden folder", func(t *testing.T, dir string) { writeIn(t, dir, ".hidden/z.rego", "package z\n") }, `.hidden/z.rego is hidden`},
		{"data.json in a hidden folder", func(t *testing.T, dir string) { writeIn(t, dir, ".cfg/data.json", "{}") }, `.cfg/data.json is hidden`},
		{"linked folder", func(t *testing.T, dir string) {
			other := t.TempDir()
			writeIn(t, other, "shared.rego", "package shared\n")
			symlink(t, other, filepath.Join(dir, "common"))
		}, "common is a symbolic link to a folder"},
		{"linked module", func(t *testing.T, dir string) {
			other := t.TempDir()
			writeIn(t, other, "shared.rego", "package shared\n")
			symlink(t, filepath.Join(other, "shared.rego"), filepath.Join(dir, "shared.rego"))
		}, "shared.rego is a symbolic link"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeIn(t, dir, "p.rego", minimalDecision)
			tt.setup(t, dir)
			_, err := LoadDir(dir)
			if !errors.Is(err, ErrInvalidSet) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want ErrInvalidSet containing %q", err, tt.want)
			}
		})
	}
	// A link to a file that is not part of a set is left alone, like the
	// file would be.
	dir := t.TempDir()
	writeIn(t, dir, "p.rego", minimalDecision)
	writeIn(t, dir, "docs/README.md", "read me")
	symlink(t, filepath.Join(dir, "docs", "README.md"), filepath.Join(dir, "README.md"))
	if _, err := LoadDir(dir); err != nil {
		t.Fatalf("link to a README: %v", err)
	}
}

// TestDigestDocumentedCommand checks that the shell pipeline Set.Digest and
// docs/policy-authoring.md give computes the digest LoadDir does.
func TestDigestDocumentedCommand(t *testing.T) {
	for _, tool := range []string{"sh", "find", "sed", "sort", "tr", "xargs", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: %v", tool, err)
		}
	}
	dir := t.TempDir()
	writeIn(t, dir, "rules/p.rego", minimalDecision)
	writeIn(t, dir, "rules/a b.rego", "package a\n")
	writeIn(t, dir, "p_test.rego", "package p_test\n")
	writeIn(t, dir, "data.json", "{}")
	writeIn(t, dir, "README.md", "not in the set")
	writeIn(t, dir, ".git/config", "not in the set")
	s, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	const cmd = `cd "$1" && (find . -type f \( -name '*.rego' -o -path ./data.json \) | sed 's|^\./||' \
  | LC_ALL=C sort | tr '\n' '\0' | xargs -0 sha256sum) | sha256sum`
	out, err := exec.Command("sh", "-c", cmd, "sh", dir).Output()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := "sha256:"+strings.Fields(string(out))[0], s.Digest().String(); got != want {
		t.Fatalf("documented command: got %s, want %s", got, want)
	}
	doc, err := os.ReadFile(filepath.Join("..", "docs", "policy-authoring.md"))
	if err != nil {
		t.Fatal(err)
	}
	// Compared word by word: the docs indent the command inside a list.
	words := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	if documented := strings.ReplaceAll(cmd, `"$1"`, "DIR"); !strings.Contains(words(string(doc)), words(documented)) {
		t.Errorf("docs/policy-authoring.md does not give the command tested here:\n%s", documented)
	}
}

func writeIn(t *testing.T, dir, name, text string) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Skipf("symbolic links unavailable: %v", err)
	}
}
