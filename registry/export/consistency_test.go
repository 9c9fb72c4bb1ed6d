package export

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/registry"
)

func (f *fixture) buildFrom(t testing.TB, s Scope, keptSize uint64) *Result {
	t.Helper()
	res, err := Build(context.Background(), Source{Log: f.log, Registry: f.reg},
		Options{Scope: s, GeneratedAt: genAt, GeneratedBy: auditor, Generator: "hallmark test", ConsistentFromSize: keptSize})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return res
}

func verifyKept(t testing.TB, b *Bundle, key string, kept []byte) *Report {
	t.Helper()
	rep, err := Verify(context.Background(), b, VerifyOptions{LogKey: key, KeptCheckpoint: kept, KeptCheckpointName: "kept.checkpoint"})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return rep
}

func fromIndex(i uint64) Scope { return Scope{From: Bound{Index: i, IsIndex: true}} }

// wantConsistent fails unless the bundle verifies against the kept
// checkpoint, settled the way how says.
func wantConsistent(t *testing.T, rep *Report, keptSize uint64, how string) {
	t.Helper()
	if !rep.OK() {
		t.Fatalf("does not verify against the kept checkpoint:\n%s", problems(rep))
	}
	c := rep.Consistency
	if c == nil || c.KeptSize != keptSize || !strings.Contains(c.How, how) {
		t.Fatalf("consistency %+v, want kept size %d settled by %q", c, keptSize, how)
	}
	if !slices.ContainsFunc(rep.Checks, func(c Check) bool { return c.Name == CheckKept && c.Items == 1 && c.Failures == 0 }) {
		t.Fatalf("no passed %q check in %+v", CheckKept, rep.Checks)
	}
}

// The honest ledger: a kept checkpoint is proved extended by the bundle's
// consistency proof, by the root recomputed from a range starting at 0,
// or by equal roots; a bundle older than the kept checkpoint, and one
// that can prove nothing, are refused with what to do.
func TestConsistencyWithKeptCheckpoint(t *testing.T) {
	f := newFixture(t)
	key := f.log.VerifierKey()
	kept := f.log.Checkpoint()
	k := f.log.Size()
	f.push(t, "credit-risk", "2.0.0", true)
	n := f.log.Size()

	res := f.buildFrom(t, fromIndex(k), k)
	b := res.Bundle
	if _, ok := b.Files[ConsistencyName]; !ok {
		t.Fatalf("bundle asked for with consistent_from_size %d lacks %s", k, ConsistencyName)
	}
	var cf ConsistencyFile
	if err := json.Unmarshal(b.Files[ConsistencyName], &cf); err != nil || cf.FromSize != k || cf.ToSize != n || len(cf.Hashes) == 0 {
		t.Fatalf("%s: %+v (%v), want from %d to %d with hashes", ConsistencyName, cf, err, k, n)
	}
	if !bytes.Contains(b.Files[VerifyName], []byte("## 7. This checkpoint extends one you kept")) {
		t.Errorf("VERIFY.md does not explain %s", ConsistencyName)
	}
	// Alone, the bundle verifies (its proof from its own from_root too).
	rep := verify(t, b, key)
	if !rep.OK() || !slices.ContainsFunc(rep.Checks, func(c Check) bool { return c.Name == CheckConsistency && c.Items == 1 }) {
		t.Fatalf("bundle with a consistency proof: OK %v, checks %+v\n%s", rep.OK(), rep.Checks, problems(rep))
	}
	if rep.Consistency != nil || slices.ContainsFunc(rep.Checks, func(c Check) bool { return c.Name == CheckKept }) {
		t.Errorf("kept checkpoint checked although none was given: %+v", rep.Checks)
	}
	wantConsistent(t, verifyKept(t, b, key, kept), k, fmt.Sprintf("consistency proof from size %d to %d verifies", k, n))
	// Trust on first use: the kept checkpoint is checked with the bundle's key.
	if rep := verifyKept(t, b, "", kept); !rep.OK() || rep.Consistency == nil {
		t.Fatalf("TOFU with a kept checkpoint:\n%s", problems(rep))
	}

	// Without a proof, a range from 0 settles it from the entries.
	whole := f.build(t, Scope{}).Bundle
	if _, ok := whole.Files[ConsistencyName]; ok {
		t.Fatalf("bundle asked for without consistent_from_size has %s", ConsistencyName)
	}
	wantConsistent(t, verifyKept(t, whole, key, kept), k, fmt.Sprintf("root of size %d recomputed from the bundle's entries 0 to %d", k, k-1))

	// The kept checkpoint is the bundle's own.
	wantConsistent(t, verifyKept(t, whole, key, whole.Files[CheckpointName]), n, "same size and root")

	// A proof from the checkpoint's own size is empty and verifies.
	same := f.buildFrom(t, fromIndex(n-1), n).Bundle
	wantConsistent(t, verifyKept(t, same, key, f.log.Checkpoint()), n, "same size and root")

	// Nothing in the bundle reaches the kept size.
	rep = verifyKept(t, f.build(t, fromIndex(k)).Bundle, key, kept)
	wantProblems(t, rep, fmt.Sprintf("kept.checkpoint: cannot be compared with the bundle offline: the bundle (checkpoint size %d) carries no consistency proof and its entries %d to %d do not cover 0 to %d", n, k, n-1, k-1),
		"Export again with `hallmark audit export --consistent-with kept.checkpoint`")
	// A proof from another size does not help either.
	rep = verifyKept(t, f.buildFrom(t, fromIndex(k), k-1).Bundle, key, kept)
	wantProblems(t, rep, fmt.Sprintf("carries a consistency proof from size %d, not %d,", k-1, k))

	// The kept checkpoint is newer than the bundle.
	older := f.build(t, Scope{}).Bundle
	f.push(t, "credit-risk", "3.0.0", false)
	rep = verifyKept(t, older, key, f.log.Checkpoint())
	wantProblems(t, rep, fmt.Sprintf("kept.checkpoint: the bundle is older than the checkpoint you kept: yours has size %d, the bundle's checkpoint size %d", f.log.Size(), n))
	if rep.Consistency == nil || rep.Consistency.How != "" {
		t.Errorf("failed consistency reported as %+v", rep.Consistency)
	}

	// The server refuses a size its checkpoint cannot extend, naming both.
	big := f.log.Size() + 5
	_, err := Build(context.Background(), Source{Log: f.log, Registry: f.reg}, Options{GeneratedAt: genAt, ConsistentFromSize: big})
	if !errors.Is(err, ErrConsistencySize) || !strings.Contains(err.Error(), fmt.Sprintf("size %d, larger than the log's latest checkpoint (size %d)", big, f.log.Size())) {
		t.Fatalf("Build with consistent_from_size %d: %v", big, err)
	}
}

// buildConsistency gives the ledger's own consistency proof for every
// size, and a from_root that is the ledger's root at that size.
func TestConsistencyProofsMatchLog(t *testing.T) {
	f := newFixture(t)
	l := f.log
	n := l.Size()
	top, err := l.RootAt(n)
	if err != nil {
		t.Fatal(err)
	}
	nodes := func(level uint, index uint64) (hash, error) {
		h, err := l.NodeHash(level, index)
		return hash(h), err
	}
	for k := uint64(1); k <= n; k++ {
		b, err := buildConsistency(nodes, k, n, hash(top))
		if err != nil {
			t.Fatalf("from %d: %v", k, err)
		}
		var cf ConsistencyFile
		if err := strictJSON(b, &cf); err != nil {
			t.Fatal(err)
		}
		want, err := l.ConsistencyProof(k, n)
		if err != nil {
			t.Fatal(err)
		}
		root, err := l.RootAt(k)
		if err != nil {
			t.Fatal(err)
		}
		if cf.FromRoot != base64.StdEncoding.EncodeToString(root[:]) || len(cf.Hashes) != len(want) {
			t.Fatalf("from %d: root %s, %d hashes; the ledger has root %x and %d hashes", k, cf.FromRoot, len(cf.Hashes), root, len(want))
		}
		for i := range want {
			if cf.Hashes[i] != base64.StdEncoding.EncodeToString(want[i][:]) {
				t.Fatalf("from %d: hash %d differs from the ledger's", k, i)
			}
		}
	}
}

// forkOf plays a server that holds the log key and keeps a second log: the
// same entries as f's, signed with the same key, but for entry j, which
// edit rewrites.
func forkOf(t *testing.T, f *fixture, j uint64, edit func([]byte) []byte) *fixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	l, err := ledger.Open(filepath.Join(dir, "ledger"), ledger.Options{KeyFile: filepath.Join(f.dir, "ledger", "log.key"), NewLogWithExistingKey: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if l.VerifierKey() != f.log.VerifierKey() {
		t.Fatal("the fork has another log key")
	}
	err = f.log.Entries(ctx, 0, f.log.Size(), func(i uint64, e []byte) error {
		if i == j {
			e = edit(bytes.Clone(e))
		}
		_, err := l.AppendEntry(ctx, e)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)}
	reg, err := registry.Open(l, f.blobs, registry.Options{Trust: f.reg.TrustStore(), Now: c.Now})
	if err != nil {
		t.Fatalf("opening the fork's registry: %v", err)
	}
	return &fixture{dir: dir, log: l, blobs: f.blobs, reg: reg, signer: f.signer}
}

// A server with the log key shows this auditor a fork: a log whose entry
// K-1 differs from the one the auditor's kept checkpoint (size K) covers.
// Every fork bundle verifies alone; against the kept checkpoint it fails
// whichever way it would be settled.
func TestConsistencyCatchesFork(t *testing.T) {
	f := newFixture(t)
	key := f.log.VerifierKey()
	kept := f.log.Checkpoint()
	k := f.log.Size()
	j := findEntryIndex(t, f, `"requires role admin"`)
	if j >= k {
		t.Fatalf("the entry to fork at, %d, is not below the kept size %d", j, k)
	}
	fork := forkOf(t, f, j, func(e []byte) []byte {
		return bytes.Replace(e, []byte("requires role admin"), []byte("requires role auditor"), 1)
	})

	// Same size, other root.
	b := fork.build(t, Scope{}).Bundle
	if rep := verify(t, b, key); !rep.OK() {
		t.Fatalf("the fork's bundle does not verify alone:\n%s", problems(rep))
	}
	if fork.log.Size() != k {
		t.Fatalf("fork has size %d, want %d", fork.log.Size(), k)
	}
	wantProblems(t, verifyKept(t, b, key, kept), fmt.Sprintf("checkpoint: has root %s at size %d, your kept checkpoint (kept.checkpoint) has root", b64(cpRoot(t, b)), k), "(a fork)")

	// The fork grows; its consistency proof leads from its own tree of size K.
	if err := fork.reg.RecordDenial(context.Background(), ci, "/hallmark.registry.v1.RegistryService/RevokeVersion", "requires role admin"); err != nil {
		t.Fatal(err)
	}
	n := fork.log.Size()
	withProof := fork.buildFrom(t, fromIndex(k), k).Bundle
	if rep := verify(t, withProof, key); !rep.OK() {
		t.Fatalf("the fork's bundle with a proof does not verify alone:\n%s", problems(rep))
	}
	rep := verifyKept(t, withProof, key, kept)
	wantProblems(t, rep, fmt.Sprintf("proofs/consistency.json: proves that the bundle's checkpoint extends a tree of size %d with root", k),
		"but your kept checkpoint (kept.checkpoint) has root", "(a fork)")
	if rep.Consistency == nil || rep.Consistency.KeptSize != k || rep.Consistency.BundleSize != n || rep.Consistency.How != "" {
		t.Errorf("consistency %+v", rep.Consistency)
	}

	// The whole fork, recomputed from its entries.
	rep = verifyKept(t, fork.build(t, Scope{}).Bundle, key, kept)
	wantProblems(t, rep, fmt.Sprintf("entries.jsonl: entries 0 to %d give root", k-1), fmt.Sprintf("for tree size %d, your kept checkpoint (kept.checkpoint) has root", k), "(a fork)")
}

func findEntryIndex(t *testing.T, f *fixture, s string) uint64 {
	t.Helper()
	var at uint64
	found := false
	err := f.log.Entries(context.Background(), 0, f.log.Size(), func(i uint64, e []byte) error {
		if bytes.Contains(e, []byte(s)) {
			at, found = i, true
		}
		return nil
	})
	if err != nil || !found {
		t.Fatalf("no entry contains %q (%v)", s, err)
	}
	return at
}

func cpRoot(t *testing.T, b *Bundle) hash {
	t.Helper()
	m, err := parseManifest(b.Files[ManifestName])
	if err != nil {
		t.Fatal(err)
	}
	r, err := decodeHash(m.Log.RootHash)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// The kept checkpoint must be the bundle's log's: signed by the key the
// bundle is verified with, and naming the same origin.
func TestKeptCheckpointMustBeTheLogs(t *testing.T) {
	f := newFixture(t)
	key := f.log.VerifierKey()
	b := f.build(t, Scope{}).Bundle

	other := openFixture(t, false)
	if _, _, err := other.reg.Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	if other.log.Origin() != f.log.Origin() {
		t.Fatal("the other log should share the origin")
	}
	wantProblems(t, verifyKept(t, b, key, other.log.Checkpoint()), "kept.checkpoint: is not signed by the log key given, "+f.log.Origin())
	rep := verifyKept(t, b, "", other.log.Checkpoint())
	wantProblems(t, rep, "is not signed by the bundle's own log key (trusted on first use)")
	if rep.Consistency != nil {
		t.Errorf("consistency reported for a kept checkpoint that did not verify: %+v", rep.Consistency)
	}

	// The log key signs any text: a checkpoint of another origin by it.
	skey, err := os.ReadFile(filepath.Join(f.dir, "ledger", "log.key"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(strings.TrimSpace(string(skey)))
	if err != nil {
		t.Fatal(err)
	}
	cp := f.log.Checkpoint()
	body := string(cp[:bytes.Index(cp, []byte("\n\n"))+1])
	foreign, err := note.Sign(&note.Note{Text: strings.Replace(body, f.log.Origin(), "elsewhere.example/log", 1)}, s)
	if err != nil {
		t.Fatal(err)
	}
	wantProblems(t, verifyKept(t, b, key, foreign), fmt.Sprintf("kept.checkpoint: is not a checkpoint of the bundle's log %q", f.log.Origin()))
	wantProblems(t, verifyKept(t, b, key, []byte("not a note")), "kept.checkpoint: not a signed checkpoint")
}

// A consistency proof changed after export fails its sums and its proof;
// re-signed by a server holding the log key, it still fails its proof.
// A proofs/ file outside the layout fails the layout check.
func TestConsistencyFileTampered(t *testing.T) {
	f := newFixture(t)
	key := f.log.VerifierKey()
	kept := f.log.Checkpoint()
	k := f.log.Size()
	f.push(t, "credit-risk", "2.0.0", true)
	res := f.buildFrom(t, fromIndex(k), k)

	flipHash := func(b *Bundle) {
		var cf ConsistencyFile
		if err := strictJSON(b.Files[ConsistencyName], &cf); err != nil {
			t.Fatal(err)
		}
		h, _ := base64.StdEncoding.DecodeString(cf.Hashes[0])
		h[0] ^= 1
		cf.Hashes[0] = base64.StdEncoding.EncodeToString(h)
		d, err := encodeJSON(&cf)
		if err != nil {
			t.Fatal(err)
		}
		b.Files[ConsistencyName] = d
	}
	b := clone(res.Bundle)
	flipHash(b)
	wantProblems(t, verifyKept(t, b, key, kept), "proofs/consistency.json: SHA-256", "does not match the signed manifest's",
		fmt.Sprintf("proofs/consistency.json: does not prove that the tree of size %d with root", k),
		"carries a consistency proof that does not verify (see consistency proof)")

	b = clone(res.Bundle)
	flipHash(b)
	resign(t, f, b, nil)
	rep := verifyKept(t, b, key, kept)
	wantProblems(t, rep, fmt.Sprintf("proofs/consistency.json: does not prove that the tree of size %d with root", k))
	if got := problems(rep); strings.Contains(got, "SHA-256") {
		t.Errorf("re-signed bundle fails its sums:\n%s", got)
	}

	b = clone(res.Bundle)
	b.Files["proofs/consistency-2.json"] = bytes.Clone(b.Files[ConsistencyName])
	resign(t, f, b, nil)
	wantProblems(t, verify(t, b, key), "proofs/consistency-2.json: is not a file of the bundle layout")
}

// A server holding the log key can sign any consistency file: every field
// is held to the checkpoint, and a file too large for any proof is not
// parsed.
func TestConsistencyFileHostile(t *testing.T) {
	f := newFixture(t)
	key := f.log.VerifierKey()
	kept := f.log.Checkpoint()
	k := f.log.Size()
	f.push(t, "credit-risk", "2.0.0", true)
	n := f.log.Size()
	res := f.buildFrom(t, fromIndex(k), k)
	var good ConsistencyFile
	if err := strictJSON(res.Bundle.Files[ConsistencyName], &good); err != nil {
		t.Fatal(err)
	}
	h := good.Hashes[0]
	for _, tc := range []struct {
		name string
		file func() []byte
		want []string
	}{
		{"too large", func() []byte { return bytes.Repeat([]byte(" "), maxConsistencyBytes+1) },
			[]string{fmt.Sprintf("proofs/consistency.json: is %d bytes, more than the %d a consistency proof can need: not read", maxConsistencyBytes+1, maxConsistencyBytes)}},
		{"too many hashes", func() []byte {
			c := good
			c.Hashes = slices.Repeat([]string{h}, maxConsistencyHashes+1)
			return mustJSON(t, &c)
		}, []string{fmt.Sprintf("proofs/consistency.json: has %d hashes; a consistency proof has at most %d", maxConsistencyHashes+1, maxConsistencyHashes)}},
		{"one hash too many", func() []byte {
			c := good
			c.Hashes = append(slices.Clone(good.Hashes), h)
			return mustJSON(t, &c)
		}, []string{"does not prove that the tree of size", "wrong proof size"}},
		{"to_size is not the checkpoint's", func() []byte {
			c := good
			c.ToSize = n + 1
			return mustJSON(t, &c)
		}, []string{fmt.Sprintf("proofs/consistency.json: to_size is %d, the bundle's checkpoint has size %d", n+1, n)}},
		{"from_size beyond to_size", func() []byte {
			c := good
			c.FromSize = n + 1
			return mustJSON(t, &c)
		}, []string{fmt.Sprintf("proofs/consistency.json: from_size is %d, want 1 to to_size %d", n+1, n)}},
		{"from_size 0", func() []byte {
			c := good
			c.FromSize, c.Hashes = 0, []string{}
			return mustJSON(t, &c)
		}, []string{fmt.Sprintf("proofs/consistency.json: from_size is 0, want 1 to to_size %d", n)}},
		{"from_size of another proof", func() []byte {
			c := good
			c.FromSize = k - 1
			return mustJSON(t, &c)
		}, []string{fmt.Sprintf("does not prove that the tree of size %d with root", k-1)}},
		{"short root", func() []byte {
			c := good
			c.FromRoot = "AAAA"
			return mustJSON(t, &c)
		}, []string{"proofs/consistency.json: from_root: 3 bytes, want 32"}},
		{"hash not base64", func() []byte {
			c := good
			c.Hashes = append([]string{"!"}, good.Hashes[1:]...)
			return mustJSON(t, &c)
		}, []string{"proofs/consistency.json: hash 1: not standard base64"}},
		{"unknown field", func() []byte {
			return bytes.Replace(res.Bundle.Files[ConsistencyName], []byte(`"from_size"`), []byte(`"from_root_hint": "x", "from_size"`), 1)
		}, []string{`proofs/consistency.json: not a consistency proof: json: unknown field "from_root_hint"`}},
		{"removed", nil, []string{"kept.checkpoint: cannot be compared with the bundle offline", "carries no consistency proof"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := clone(res.Bundle)
			if tc.file == nil {
				delete(b.Files, ConsistencyName)
			} else {
				b.Files[ConsistencyName] = tc.file()
			}
			resign(t, f, b, func(m *Manifest) { b.Files[VerifyName] = verifyMarkdown(m, tc.file != nil) })
			rep := verifyKept(t, b, key, kept)
			wantProblems(t, rep, tc.want...)
			if got := problems(rep); strings.Contains(got, "SHA-256") || strings.Contains(got, "VERIFY.md") {
				t.Errorf("the hostile bundle is not consistently re-signed:\n%s", got)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := encodeJSON(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
