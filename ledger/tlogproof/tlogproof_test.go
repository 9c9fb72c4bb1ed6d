package tlogproof

import (
	"bytes"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	formatsproof "github.com/transparency-dev/formats/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

const testOrigin = "example.com/test-log"

// seqReader makes key generation deterministic, so golden files are stable.
type seqReader byte

func (r *seqReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(*r)
	}
	*r++
	return len(p), nil
}

// testKey returns a deterministic signer and verifier named name; seed picks
// the key.
func testKey(t testing.TB, name string, seed byte) (note.Signer, note.Verifier) {
	t.Helper()
	r := seqReader(seed)
	skey, vkey, err := note.GenerateKey(&r, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

// testTree is an in-memory RFC 6962 tree over entries "entry 0".."entry n-1".
func testTree(t testing.TB, n int) *testonly.Tree {
	t.Helper()
	tree := testonly.New(rfc6962.DefaultHasher)
	for i := range n {
		tree.AppendData(entry(i))
	}
	return tree
}

func entry(i int) []byte { return fmt.Appendf(nil, "entry %d", i) }

func signCheckpoint(t testing.TB, origin string, size uint64, root []byte, signers ...note.Signer) []byte {
	t.Helper()
	text := fmt.Sprintf("%s\n%d\n%s\n", origin, size, b64(root))
	msg, err := note.Sign(&note.Note{Text: text}, signers...)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// makeProof builds a valid bundle for entry index in a tree of size.
func makeProof(t testing.TB, tree *testonly.Tree, index, size uint64, s note.Signer) Proof {
	t.Helper()
	hashes, err := tree.InclusionProof(index, size)
	if err != nil {
		t.Fatal(err)
	}
	p := Proof{Index: index, Checkpoint: signCheckpoint(t, testOrigin, size, tree.HashAt(size), s)}
	for _, h := range hashes {
		p.Hashes = append(p.Hashes, [32]byte(h))
	}
	return p
}

func TestRoundTripAndInterop(t *testing.T) {
	s, _ := testKey(t, testOrigin, 1)
	tree := testTree(t, 13)
	for _, extra := range [][]byte{nil, {}, []byte("some context \x00\xff")} {
		for index := uint64(0); index < 13; index++ {
			p := makeProof(t, tree, index, 13, s)
			p.Extra = extra
			b, err := p.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(b)
			if err != nil {
				t.Fatalf("Parse(Marshal(index %d)): %v\n%s", index, err, b)
			}
			if got.Index != p.Index || !bytes.Equal(got.Checkpoint, p.Checkpoint) || len(got.Hashes) != len(p.Hashes) || (got.Extra == nil) != (extra == nil) || !bytes.Equal(got.Extra, extra) {
				t.Fatalf("round trip: got %+v, want %+v", got, p)
			}
			for i := range got.Hashes {
				if got.Hashes[i] != p.Hashes[i] {
					t.Fatalf("hash %d: got %x, want %x", i, got.Hashes[i], p.Hashes[i])
				}
			}
			// An independent implementation reads what we write...
			var fp formatsproof.TLogProof
			if err := fp.Unmarshal(b); err != nil {
				t.Fatalf("formats/proof cannot read our bundle: %v", err)
			}
			if fp.Index != p.Index || !bytes.Equal(fp.Checkpoint, p.Checkpoint) || len(fp.Hashes) != len(p.Hashes) || !bytes.Equal(fp.ExtraData, extra) {
				t.Fatalf("formats/proof read %+v, want %+v", fp, p)
			}
			// ...and writes what we read, byte for byte.
			if fb := fp.Marshal(); len(extra) > 0 || extra == nil {
				if !bytes.Equal(fb, b) {
					t.Fatalf("formats/proof re-encoding differs:\n%s\nours:\n%s", fb, b)
				}
			}
		}
	}
}

func TestSpecExampleParses(t *testing.T) {
	// The example from c2sp.org/tlog-proof, with its elided signatures
	// replaced by syntactically plausible base64.
	ex := "c2sp.org/tlog-proof@v1\n" +
		"extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6\n" +
		"index 73894\n" +
		"gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\n" +
		"B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=\n" +
		"EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=\n" +
		"RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=\n" +
		"AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=\n" +
		"\n" +
		"example.com/fancylog\n109482\nsFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n\n" +
		"— example.com/fancylog hI2DJwAAAA==\n"
	p, err := Parse([]byte(ex))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.Index, uint64(73894); got != want {
		t.Errorf("index: got %d, want %d", got, want)
	}
	if got, want := len(p.Hashes), 5; got != want {
		t.Errorf("hashes: got %d, want %d", got, want)
	}
	if got, want := string(p.Extra), "age-v1.2.1-darwin-arm64.tar.gz"; got != want {
		t.Errorf("extra: got %q, want %q", got, want)
	}
	if !strings.HasPrefix(string(p.Checkpoint), "example.com/fancylog\n109482\n") {
		t.Errorf("checkpoint: got %q", p.Checkpoint)
	}
	b, err := p.Marshal()
	if err != nil || string(b) != ex {
		t.Errorf("re-encoding: got %q, %v; want the input", b, err)
	}
}

func TestParseErrors(t *testing.T) {
	const h = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
	const cp = "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— o AAAA\n"
	for _, tc := range []struct {
		name, in string
		line     int
		reason   string
	}{
		{"empty", "", 1, "missing header"},
		{"no newline", Header, 1, "missing header"},
		{"other header", "c2sp.org/tlog-proof@v2\nindex 0\n\n" + cp, 1, "got header"},
		{"crlf header", Header + "\r\nindex 0\n\n" + cp, 1, "got header"},
		{"no index", Header + "\n", 2, `missing "index"`},
		{"no index after extra", Header + "\nextra AA==\n", 3, `missing "index"`},
		{"bad extra", Header + "\nextra AA=\nindex 0\n\n" + cp, 2, "extra data"},
		{"extra unpadded", Header + "\nextra AA\nindex 0\n\n" + cp, 2, "extra data"},
		{"extra with CR", Header + "\nextra AA==\r\nindex 0\n\n" + cp, 2, "line-break"},
		{"index word", Header + "\nindx 0\n\n" + cp, 2, `want "index N"`},
		{"index leading zero", Header + "\nindex 01\n\n" + cp, 2, "leading zero"},
		{"index sign", Header + "\nindex +1\n\n" + cp, 2, "not a decimal"},
		{"index empty", Header + "\nindex \n\n" + cp, 2, "empty number"},
		{"index overflow", Header + "\nindex 18446744073709551616\n\n" + cp, 2, "64 bits"},
		{"index two spaces", Header + "\nindex  1\n\n" + cp, 2, "not a decimal"},
		{"hash short", Header + "\nindex 0\nAAAA\n\n" + cp, 3, "3 bytes"},
		{"hash not base64", Header + "\nindex 0\n" + h + "!!!!\n\n" + cp, 4, "base64"},
		{"no blank line", Header + "\nindex 0\n" + h, 4, "missing empty line"},
		{"no checkpoint", Header + "\nindex 0\n\n", 4, "missing checkpoint"},
		{"checkpoint blank first", Header + "\nindex 0\n\n\n" + cp, 4, "starts with an empty line"},
		{"checkpoint unterminated", Header + "\nindex 0\n\no\n1", 5, "does not end in a newline"},
		{"too many hashes", Header + "\nindex 0\n" + strings.Repeat(h, 65) + "\n" + cp, 67, "more than 64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			var pe *ParseError
			if !errors.As(err, &pe) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want a *ParseError", err)
			}
			if pe.Line != tc.line || !strings.Contains(pe.Reason, tc.reason) {
				t.Fatalf("got line %d %q, want line %d containing %q", pe.Line, pe.Reason, tc.line, tc.reason)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	s, v := testKey(t, testOrigin, 1)
	for size := uint64(1); size <= 20; size++ {
		tree := testTree(t, int(size))
		for index := range size {
			p := makeProof(t, tree, index, size, s)
			cp, err := p.Verify(entry(int(index)), testOrigin, v)
			if err != nil {
				t.Fatalf("index %d size %d: %v", index, size, err)
			}
			if cp.Size != size || cp.Origin != testOrigin || !bytes.Equal(cp.Root[:], tree.HashAt(size)) {
				t.Fatalf("checkpoint: got %+v", cp)
			}
		}
	}
}

func TestVerifyFailures(t *testing.T) {
	s, v := testKey(t, testOrigin, 1)
	other, otherV := testKey(t, testOrigin, 2)
	tree := testTree(t, 11)
	good := makeProof(t, tree, 5, 11, s)

	for _, tc := range []struct {
		name   string
		mutate func(p *Proof) []byte // returns the entry to verify
		origin string
		v      note.Verifier
		want   error
		msg    string
	}{
		{"ok", func(p *Proof) []byte { return entry(5) }, testOrigin, v, nil, ""},
		{"ok default origin", func(p *Proof) []byte { return entry(5) }, "", v, nil, ""},
		{"other entry", func(p *Proof) []byte { return entry(6) }, testOrigin, v, ErrInclusion, "does not lead to the root"},
		{"re-encoded entry", func(p *Proof) []byte { return []byte("entry 5\n") }, testOrigin, v, ErrInclusion, "does not lead to the root"},
		{"other index", func(p *Proof) []byte { p.Index = 4; return entry(5) }, testOrigin, v, ErrInclusion, "does not lead to the root"},
		{"index past size", func(p *Proof) []byte { p.Index = 11; return entry(5) }, testOrigin, v, ErrInclusion, "not in a tree of size 11"},
		{"hash flipped", func(p *Proof) []byte { p.Hashes[1][0] ^= 1; return entry(5) }, testOrigin, v, ErrInclusion, "does not lead"},
		{"hash missing", func(p *Proof) []byte { p.Hashes = p.Hashes[1:]; return entry(5) }, testOrigin, v, ErrInclusion, "got 3 proof hashes, want 4"},
		{"hash extra", func(p *Proof) []byte { p.Hashes = append(p.Hashes, p.Hashes[0]); return entry(5) }, testOrigin, v, ErrInclusion, "got 5 proof hashes, want 4"},
		{"other key", func(p *Proof) []byte { return entry(5) }, testOrigin, otherV, ErrSignature, "no signature by log key"},
		{"signed by other key", func(p *Proof) []byte {
			p.Checkpoint = signCheckpoint(t, testOrigin, 11, tree.HashAt(11), other)
			return entry(5)
		}, testOrigin, v, ErrSignature, "no signature by log key"},
		{"cosigned", func(p *Proof) []byte {
			p.Checkpoint = signCheckpoint(t, testOrigin, 11, tree.HashAt(11), s, mustSigner(t, "witness.example", 3))
			return entry(5)
		}, testOrigin, v, nil, ""},
		{"other origin", func(p *Proof) []byte {
			p.Checkpoint = signCheckpoint(t, "example.com/other", 11, tree.HashAt(11), s)
			return entry(5)
		}, testOrigin, v, ErrOrigin, `got origin "example.com/other"`},
		{"tampered size", func(p *Proof) []byte {
			p.Checkpoint = bytes.Replace(p.Checkpoint, []byte("\n11\n"), []byte("\n12\n"), 1)
			return entry(5)
		}, testOrigin, v, ErrSignature, "invalid signature"},
		{"bad body", func(p *Proof) []byte {
			msg, _ := note.Sign(&note.Note{Text: testOrigin + "\n011\nAAAA\n"}, s)
			p.Checkpoint = msg
			return entry(5)
		}, testOrigin, v, ErrCheckpoint, "leading zero"},
		{"short body", func(p *Proof) []byte {
			msg, _ := note.Sign(&note.Note{Text: testOrigin + "\n11\n"}, s)
			p.Checkpoint = msg
			return entry(5)
		}, testOrigin, v, ErrCheckpoint, "at least 3"},
		{"not a note", func(p *Proof) []byte { p.Checkpoint = []byte("hello\n"); return entry(5) }, testOrigin, v, ErrCheckpoint, "malformed note"},
		{"nil verifier", func(p *Proof) []byte { return entry(5) }, testOrigin, nil, ErrSignature, "no log verifier"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := good
			p.Hashes = append([][32]byte(nil), good.Hashes...)
			e := tc.mutate(&p)
			_, err := p.Verify(e, tc.origin, tc.v)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
				return
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.want, tc.msg)
			}
		})
	}
}

func mustSigner(t testing.TB, name string, seed byte) note.Signer {
	s, _ := testKey(t, name, seed)
	return s
}

func TestProofLen(t *testing.T) {
	tree := testTree(t, 70)
	for size := uint64(1); size <= 70; size++ {
		for index := range size {
			p, err := tree.InclusionProof(index, size)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := proofLen(index, size), len(p); got != want {
				t.Fatalf("proofLen(%d, %d): got %d, want %d", index, size, got, want)
			}
		}
	}
	if got, want := proofLen(0, 1<<63), 63; got != want {
		t.Fatalf("proofLen(0, 2^63): got %d, want %d", got, want)
	}
}

func TestMarshalRefusesBadCheckpoint(t *testing.T) {
	for _, cp := range []string{"", "no newline", "\nstarts blank\n"} {
		if _, err := (Proof{Checkpoint: []byte(cp)}).Marshal(); !errors.Is(err, ErrCheckpoint) {
			t.Errorf("Marshal with checkpoint %q: got %v, want ErrCheckpoint", cp, err)
		}
	}
}

// TestGolden pins the encoding: a bundle made from a fixed key and tree
// must not change by accident.
func TestGolden(t *testing.T) {
	s, v := testKey(t, testOrigin, 7)
	tree := testTree(t, 300)
	p := makeProof(t, tree, 257, 300, s)
	p.Extra = []byte("hallmark golden test")
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "golden.tlog-proof")
	if *update {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("encoding changed:\ngot:\n%s\nwant:\n%s", b, want)
	}
	got, err := Parse(want)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := got.Verify(entry(257), testOrigin, v); err != nil {
		t.Fatal(err)
	}
}

func FuzzParse(f *testing.F) {
	s, v := testKey(f, testOrigin, 1)
	tree := testTree(f, 9)
	for _, idx := range []uint64{0, 4, 8} {
		p := makeProof(f, tree, idx, 9, s)
		if idx == 4 {
			p.Extra = []byte("extra")
		}
		b, err := p.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(Header + "\nindex 0\n\no\n1\nAAAA\n"))
	f.Add([]byte(Header + "\nextra \nindex 18446744073709551615\n\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("parse error %v does not wrap ErrMalformed", err)
			}
			return
		}
		// Parsing is canonical: what parses re-encodes to the same bytes.
		b, err := p.Marshal()
		if err != nil {
			t.Fatalf("Marshal of parsed bundle: %v", err)
		}
		if !bytes.Equal(b, data) {
			t.Fatalf("not canonical:\nin:  %q\nout: %q", data, b)
		}
		// Verification of hostile input returns an error, never panics.
		if _, err := p.Verify([]byte("x"), testOrigin, v); err != nil && !errors.Is(err, ErrSignature) && !errors.Is(err, ErrCheckpoint) && !errors.Is(err, ErrOrigin) && !errors.Is(err, ErrInclusion) {
			t.Fatalf("verify error %v wraps no sentinel", err)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	s, v := testKey(b, testOrigin, 1)
	tree := testTree(b, 1000)
	p := makeProof(b, tree, 517, 1000, s)
	bundle, _ := p.Marshal()
	e := entry(517)
	b.ReportAllocs()
	for b.Loop() {
		q, err := Parse(bundle)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := q.Verify(e, testOrigin, v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParse and BenchmarkParseReference compare this package's strict
// parser with transparency-dev/formats/proof's on the same bundle.
func BenchmarkParse(b *testing.B) {
	bundle := benchBundle(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(bundle); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseReference(b *testing.B) {
	bundle := benchBundle(b)
	b.ReportAllocs()
	for b.Loop() {
		var p formatsproof.TLogProof
		if err := p.Unmarshal(bundle); err != nil {
			b.Fatal(err)
		}
	}
}

func benchBundle(b *testing.B) []byte {
	s, _ := testKey(b, testOrigin, 1)
	tree := testTree(b, 1000)
	p := makeProof(b, tree, 517, 1000, s)
	bundle, err := p.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	return bundle
}
