package policy

import (
	"context"
	"errors"
	"os"
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
	write(".git/x.rego", "ignored")
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
