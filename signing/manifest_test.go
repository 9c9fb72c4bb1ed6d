package signing

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNewManifestValidation(t *testing.T) {
	d := Digest{1}
	cases := []struct {
		name  string
		files []File
		want  string // "" = valid
	}{
		{"empty list", nil, ""},
		{"ok", []File{{Path: "b", Size: 1, Digest: d}, {Path: "a/x", Size: 0, Digest: d}}, ""},
		{"single file model", []File{{Path: ".", Size: 3, Digest: d}}, ""},
		{"dot with others", []File{{Path: ".", Digest: d}, {Path: "a", Digest: d}}, "only file"},
		{"empty path", []File{{Path: ""}}, "empty path"},
		{"absolute", []File{{Path: "/etc/passwd"}}, "absolute"},
		{"dotdot", []File{{Path: "a/../../b"}}, `".."`},
		{"dot element", []File{{Path: "a/./b"}}, `"."`},
		{"backslash", []File{{Path: `a\b`}}, "backslash"},
		{"nul", []File{{Path: "a\x00b"}}, "NUL"},
		{"trailing slash", []File{{Path: "a/"}}, "empty element"},
		{"double slash", []File{{Path: "a//b"}}, "empty element"},
		{"drive letter", []File{{Path: "C:x"}}, "drive letter"},
		{"duplicate", []File{{Path: "a"}, {Path: "a"}}, "duplicate"},
		{"file and dir", []File{{Path: "a"}, {Path: "a.txt"}, {Path: "a/b"}}, "parent"},
		{"negative size", []File{{Path: "a", Size: -1}}, "negative size"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewManifest(c.files)
			if c.want == "" {
				if err != nil {
					t.Fatalf("got %v, want valid", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidManifest) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrInvalidManifest containing %q", err, c.want)
			}
		})
	}
}

// TestManifestDigestGolden pins the canonical manifest digest: it is a
// version's identity and must never change by accident.
func TestManifestDigestGolden(t *testing.T) {
	d1, _ := ParseDigest("f6310066c7320497ea554260c32c43660bff648cb2a61194832cc086077085e1")
	d2, _ := ParseDigest("32dcb1f8e1ae52d5963e56a6ba06ab58b424c15ed2a6b70d2feca1d089370028")
	m, err := NewManifest([]File{{Path: "signme-2", Size: 8, Digest: d2}, {Path: "signme-1", Size: 8, Digest: d1}})
	must(t, err)
	// Computed independently (Python hashlib) from the definition in
	// Manifest.Digest's comment.
	const want = "cdd99a298a8837bf5b2c52ad999ecb0d3d2c402b43db1d591f17b00d3ff02985"
	if got := m.Digest().String(); got != want {
		t.Fatalf("manifest digest: got %s, want %s", got, want)
	}
	// Order of the input does not matter; content does.
	m2, _ := NewManifest([]File{{Path: "signme-1", Size: 8, Digest: d1}, {Path: "signme-2", Size: 8, Digest: d2}})
	if m2.Digest() != m.Digest() {
		t.Fatal("manifest digest depends on input order")
	}
	m3, _ := NewManifest([]File{{Path: "signme-1", Size: 9, Digest: d1}, {Path: "signme-2", Size: 8, Digest: d2}})
	if m3.Digest() == m.Digest() {
		t.Fatal("manifest digest ignores sizes")
	}
	var empty Manifest
	if empty.Digest().String() == m.Digest().String() {
		t.Fatal("empty manifest digest collides")
	}
}

func TestManifestJSON(t *testing.T) {
	m, err := NewManifest([]File{{Path: "b", Size: 2, Digest: Digest{2}}, {Path: "a", Size: 1, Digest: Digest{1}}})
	must(t, err)
	b, err := json.Marshal(m)
	must(t, err)
	var back Manifest
	must(t, json.Unmarshal(b, &back))
	if back.Digest() != m.Digest() {
		t.Fatalf("round trip changed the manifest: %s", b)
	}
	if err := json.Unmarshal([]byte(`[{"path":"../x","size":1,"sha256":"`+strings.Repeat("0", 64)+`"}]`), &back); !errors.Is(err, ErrInvalidManifest) {
		t.Fatalf("bad path: got %v, want %v", err, ErrInvalidManifest)
	}
	if err := json.Unmarshal([]byte(`[{"path":"x","size":1,"sha256":"abc"}]`), &back); err == nil {
		t.Fatal("short digest: got nil error")
	}
}

func TestManifestFromPath(t *testing.T) {
	ctx := context.Background()
	dir := writeModel(t)
	m, err := ManifestFromPath(ctx, dir, WalkOptions{Workers: 3, BufferSize: 64})
	must(t, err)
	if _, ok := m.Lookup(".git/HEAD"); ok {
		t.Error("git metadata included by default")
	}
	f, ok := m.Lookup("weights/part-1.bin")
	if !ok || f.Size != 5000 {
		t.Fatalf("weights/part-1.bin: got %+v, %v", f, ok)
	}
	m1, err := ManifestFromPath(ctx, dir, WalkOptions{Workers: 1})
	must(t, err)
	if m1.Digest() != m.Digest() {
		t.Error("manifest depends on the number of workers")
	}
	mi, err := ManifestFromPath(ctx, dir, WalkOptions{Ignore: []string{"weights", "config.json"}})
	must(t, err)
	if mi.Len() != m.Len()-3 {
		t.Errorf("ignoring a directory and a file: got %d files, want %d", mi.Len(), m.Len()-3)
	}
	if _, err := ManifestFromPath(ctx, dir, WalkOptions{Ignore: []string{"../x"}}); !errors.Is(err, ErrEscapes) {
		t.Errorf("escaping ignore path: got %v, want %v", err, ErrEscapes)
	}
	mg, err := ManifestFromPath(ctx, dir, WalkOptions{KeepGitPaths: true})
	must(t, err)
	if _, ok := mg.Lookup(".git/HEAD"); !ok {
		t.Error("KeepGitPaths: .git/HEAD missing")
	}
}

func TestManifestSymlinks(t *testing.T) {
	ctx := context.Background()
	dir := writeModel(t)
	must(t, os.Symlink("config.json", filepath.Join(dir, "link.json")))
	if _, err := ManifestFromPath(ctx, dir, WalkOptions{}); !errors.Is(err, ErrSymlink) || !strings.Contains(err.Error(), "link.json") {
		t.Fatalf("symlink: got %v, want %v naming link.json", err, ErrSymlink)
	}
	m, err := ManifestFromPath(ctx, dir, WalkOptions{AllowSymlinks: true})
	must(t, err)
	a, _ := m.Lookup("link.json")
	b, _ := m.Lookup("config.json")
	if a.Digest != b.Digest {
		t.Error("followed link has a different digest from its target")
	}
	outside := filepath.Join(t.TempDir(), "secret")
	must(t, os.WriteFile(outside, []byte("s"), 0o644))
	must(t, os.Symlink(outside, filepath.Join(dir, "escape")))
	if _, err := ManifestFromPath(ctx, dir, WalkOptions{AllowSymlinks: true}); !errors.Is(err, ErrEscapes) {
		t.Fatalf("link outside: got %v, want %v", err, ErrEscapes)
	}
}

func TestResolveIgnorePath(t *testing.T) {
	wd, err := os.Getwd()
	must(t, err)
	cases := []struct {
		model, p, want string
		wantErr        bool
	}{
		{"model", "ignore-me", "ignore-me", false},
		{"model", "model/ignore-me", "ignore-me", false},
		{"model", "./model/sub/x", "sub/x", false},
		{"model", filepath.Join(wd, "model", "x"), "x", false},
		{".", "x/y", "x/y", false},
		{"model", "../x", "", true},
		{"model", "/etc/passwd", "", true},
		{"model", "model", "", true},
	}
	for _, c := range cases {
		got, err := ResolveIgnorePath(c.model, c.p)
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("ResolveIgnorePath(%q, %q): got %q, %v; want %q, error %v", c.model, c.p, got, err, c.want, c.wantErr)
		}
	}
}

func TestPAE(t *testing.T) {
	got := string(PAE("application/vnd.in-toto+json", []byte("{}")))
	want := "DSSEv1 28 application/vnd.in-toto+json 2 {}"
	if got != want {
		t.Fatalf("PAE: got %q, want %q", got, want)
	}
}
