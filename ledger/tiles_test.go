package ledger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func TestTilePath(t *testing.T) {
	cases := []struct {
		level, index, width uint64
		want                string
	}{
		{0, 0, 0, "tile/0/000"},
		{0, 5, 0, "tile/0/005"},
		{1, 999, 0, "tile/1/999"},
		{0, 1000, 0, "tile/0/x001/000"},
		{0, 1234067, 0, "tile/0/x001/x234/067"},
		{2, 1234, 5, "tile/2/x001/234.p/5"},
		{0, 7, 256, "tile/0/007"},
		{0, 1<<64 - 1, 0, "tile/0/x018/x446/x744/x073/x709/x551/615"},
	}
	for _, c := range cases {
		if got := TilePath(c.level, c.index, c.width); got != c.want {
			t.Errorf("TilePath(%d, %d, %d): got %q, want %q", c.level, c.index, c.width, got, c.want)
		}
		l, i, w, e, err := ParseTilePath(c.want)
		if c.width == 256 {
			c.width = 0
		}
		if err != nil || l != c.level || i != c.index || w != c.width || e {
			t.Errorf("ParseTilePath(%q): got %d %d %d %v %v", c.want, l, i, w, e, err)
		}
	}
	if got := EntriesPath(1234067, 255); got != "tile/entries/x001/x234/067.p/255" {
		t.Errorf("EntriesPath: got %q", got)
	}
	if _, i, w, e, err := ParseTilePath("/tile/entries/x001/x234/067.p/255"); err != nil || i != 1234067 || w != 255 || !e {
		t.Errorf("ParseTilePath entries: %d %d %v %v", i, w, e, err)
	}
	bad := []string{"", "tile", "tile/0", "tile/0/", "tile/0/1", "tile/0/0001", "tile/0/x000/001", "tile/0/001/002",
		"tile/0/x1/001", "tile/a/001", "tile/01/001", "tile/64/000", "tile/0/000.p/0", "tile/0/000.p/256",
		"tile/0/000.p/01", "tile/0/000.p/", "tile/0/000.p", "tile/-1/000", "tiles/0/000",
		"tile/0/x018/x446/x744/x073/x709/x551/616", "tile/0/0a0", "tile/entries/1"}
	for _, p := range bad {
		if _, _, _, _, err := ParseTilePath(p); !errors.Is(err, ErrBadPath) {
			t.Errorf("ParseTilePath(%q): got %v, want ErrBadPath", p, err)
		}
	}
}

func TestEntryBundle(t *testing.T) {
	es := [][]byte{{}, []byte("a"), bytes.Repeat([]byte{7}, MaxEntrySize)}
	b := EncodeEntryBundle(es)
	if len(b) != 2+2+1+2+MaxEntrySize || !bytes.HasPrefix(b, []byte{0, 0, 0, 1, 'a', 0xff, 0xff}) {
		t.Fatalf("encoding: %x...", b[:8])
	}
	got, err := DecodeEntryBundle(b)
	if err != nil || len(got) != 3 || !bytes.Equal(got[2], es[2]) {
		t.Fatalf("round trip: %d entries, %v", len(got), err)
	}
	for _, bad := range [][]byte{{0}, {0, 5, 1, 2}, append(EncodeEntryBundle(make([][]byte, 256)), 0, 0)} {
		if _, err := DecodeEntryBundle(bad); !errors.Is(err, ErrBadBundle) {
			t.Errorf("DecodeEntryBundle(%x): got %v, want ErrBadBundle", bad, err)
		}
	}
}

// TestGoldenTiles pins the stored and served format: tiles, bundles,
// tree state and checkpoints of a fixed log, under a fixed key.
func TestGoldenTiles(t *testing.T) {
	dir := t.TempDir()
	// A fixed key so checkpoints are reproducible (Ed25519 is deterministic).
	kf := filepath.Join(dir, "golden.key")
	// A test-only key, generated once with note.GenerateKey.
	skey := "PRIVATE+KEY+golden.example/log+020da6f5+ATJdxfmad+oJrdqYQlbhpglrAEQPVnzRb+d2+6cJZEWa"
	if err := os.WriteFile(kf, []byte(skey), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(filepath.Join(dir, "log"), Options{Origin: "golden.example/log", KeyFile: kf, NewLogWithExistingKey: true})
	if err != nil {
		t.Fatalf("Open with the golden key: %v", err)
	}
	defer l.Close()
	for _, n := range []int{1, 2, 300, 210} { // 513 entries
		for range n {
			size := l.Size()
			if _, err := l.AppendEntry(context.Background(), fmt.Appendf(nil, "golden entry %d %s", size, strings.Repeat("x", int(size%7)))); err != nil {
				t.Fatal(err)
			}
		}
	}
	var out bytes.Buffer
	fmt.Fprintf(&out, "vkey %s\n", l.VerifierKey())
	for _, p := range []string{"tile/0/000", "tile/0/001", "tile/0/002.p/1", "tile/1/000.p/2", "tile/entries/000", "tile/entries/001", "tile/entries/002.p/1"} {
		lv, i, w, e, _ := ParseTilePath(p)
		var b []byte
		if e {
			b, err = l.ReadEntryBundle(i, w)
		} else {
			b, err = l.ReadTile(lv, i, w)
		}
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		fmt.Fprintf(&out, "%s %d bytes sha256 %x head %x\n", p, len(b), sha256.Sum256(b), b[:min(len(b), 16)])
	}
	fmt.Fprintf(&out, "checkpoint:\n%s", l.Checkpoint())
	ts, _ := l.getMeta(keyTreeState)
	fmt.Fprintf(&out, "tree state %x\n", ts)
	golden := filepath.Join("testdata", "golden-tiles.txt")
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("reading golden file (run with -update to create): %v", err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("stored format changed; if intended, run go test -run TestGoldenTiles -update\ngot:\n%s\nwant:\n%s", out.Bytes(), want)
	}
}

func FuzzParseTilePath(f *testing.F) {
	for _, s := range []string{"tile/0/000", "tile/0/x001/x234/067.p/5", "tile/entries/x001/234", "tile/63/999.p/255",
		"/tile/1/x000/001", "tile/0/1", "tile/entries/000.p/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		level, index, width, entries, err := ParseTilePath(p)
		if err != nil {
			if !errors.Is(err, ErrBadPath) {
				t.Fatalf("error %v does not wrap ErrBadPath", err)
			}
			return
		}
		// Only canonical paths parse: formatting gives the input back.
		var again string
		if entries {
			again = EntriesPath(index, width)
		} else {
			again = TilePath(level, index, width)
		}
		if again != strings.TrimPrefix(p, "/") {
			t.Fatalf("ParseTilePath(%q) = %d %d %d %v, which formats as %q", p, level, index, width, entries, again)
		}
	})
}

func FuzzDecodeEntryBundle(f *testing.F) {
	f.Add([]byte{})
	f.Add(EncodeEntryBundle([][]byte{[]byte("a"), {}, []byte("hello")}))
	f.Add([]byte{0, 9, 1})
	f.Add(EncodeEntryBundle(make([][]byte, 256)))
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := DecodeEntryBundle(b)
		if err != nil {
			if !errors.Is(err, ErrBadBundle) {
				t.Fatalf("error %v does not wrap ErrBadBundle", err)
			}
			return
		}
		if len(es) > TileWidth {
			t.Fatalf("%d entries, max %d", len(es), TileWidth)
		}
		// Decoding never re-encodes: the bundle is exactly its entries.
		if got := EncodeEntryBundle(es); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding differs")
		}
		for w := 1; w <= len(es); w++ {
			p, err := bundlePrefix(b, w)
			if err != nil || !bytes.Equal(p, EncodeEntryBundle(es[:w])) {
				t.Fatalf("bundlePrefix(%d): %v", w, err)
			}
		}
	})
}
