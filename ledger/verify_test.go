package ledger

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// tamperFixture is a closed store of 600 entries (two full bundles, a
// partial one of 88) plus a copy of the same store at 300 entries.
type tamperFixture struct {
	dir, old string
	cps      []uint64 // stored checkpoint sizes
}

var (
	fixtureOnce sync.Once
	fixture     tamperFixture
	fixtureErr  error
)

func copyDir(tb testing.TB, from string) string {
	tb.Helper()
	to := filepath.Join(tb.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		tb.Fatalf("cp: %v: %s", err, out)
	}
	return to
}

func getFixture(t *testing.T) tamperFixture {
	t.Helper()
	fixtureOnce.Do(func() {
		base, err := os.MkdirTemp("", "ledger-tamper")
		if err != nil {
			fixtureErr = err
			return
		}
		dir := filepath.Join(base, "store")
		l, err := Open(dir, Options{})
		if err != nil {
			fixtureErr = err
			return
		}
		for _, n := range []int{1, 7, 50, 100, 42, 100} { // 300
			appendN(t, l, n, n)
		}
		l.Close()
		old := filepath.Join(base, "old")
		if out, err := exec.Command("cp", "-a", dir, old).CombinedOutput(); err != nil {
			fixtureErr = errors.New(string(out))
			return
		}
		if l, err = Open(dir, Options{}); err != nil {
			fixtureErr = err
			return
		}
		for _, n := range []int{3, 200, 97} { // 600
			appendN(t, l, n, n)
		}
		l.Close()
		fixture = tamperFixture{dir: dir, old: old}
		db, err := openPebble(filepath.Join(dir, dbDirName), nil, 0, true)
		if err != nil {
			fixtureErr = err
			return
		}
		it, _ := db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfxCheckpoint}, UpperBound: []byte{pfxCheckpoint + 1}})
		for ok := it.First(); ok; ok = it.Next() {
			fixture.cps = append(fixture.cps, beUint64(it.Key()[1:]))
		}
		it.Close()
		db.Close()
	})
	if fixtureErr != nil {
		t.Fatalf("building fixture: %v", fixtureErr)
	}
	return fixture
}

// rawStore edits a closed store's pebble keys directly, as an attacker or
// a disk fault would.
type rawStore struct {
	tb  testing.TB
	db  *pebble.DB
	old *pebble.DB
}

func (r *rawStore) get(k []byte) []byte {
	r.tb.Helper()
	v, err := dbGet(r.db, k)
	if err != nil {
		r.tb.Fatalf("get %x: %v", k, err)
	}
	return v
}

func (r *rawStore) getOld(k []byte) ([]byte, bool) {
	v, err := dbGet(r.old, k)
	return v, err == nil
}

func (r *rawStore) set(k, v []byte) {
	r.tb.Helper()
	if err := r.db.Set(k, v, pebble.Sync); err != nil {
		r.tb.Fatal(err)
	}
}

func (r *rawStore) del(k []byte) {
	r.tb.Helper()
	if err := r.db.Delete(k, pebble.Sync); err != nil {
		r.tb.Fatal(err)
	}
}

func (r *rawStore) flip(k []byte, off int) {
	v := r.get(k)
	if off < 0 {
		off += len(v)
	}
	v[off] ^= 0x40
	r.set(k, v)
}

func (r *rawStore) truncate(k []byte) {
	v := r.get(k)
	r.set(k, v[:len(v)-3])
}

func (r *rawStore) dup(from, to []byte) { r.set(to, r.get(from)) }

func (r *rawStore) swap(a, b []byte) {
	va, vb := r.get(a), r.get(b)
	r.set(a, vb)
	r.set(b, va)
}

// rollback restores k's value from the older store (deleting it if the
// older store did not have it).
func (r *rawStore) rollback(k []byte) {
	if v, ok := r.getOld(k); ok {
		r.set(k, v)
	} else {
		r.del(k)
	}
}

func TestVerifyClean(t *testing.T) {
	f := getFixture(t)
	var progress uint64
	rep, err := VerifyStore(context.Background(), f.dir, VerifyOptions{Progress: func(done, total uint64) { progress = done }})
	if err != nil {
		t.Fatalf("VerifyStore: %v", err)
	}
	if rep.Size != 600 || rep.Entries != 600 || rep.Bundles != 2 || rep.Checkpoints != uint64(len(f.cps)) || progress != 600 {
		t.Errorf("report: got %+v (progress %d), want size 600, 600 entries, 2 bundles, %d checkpoints", rep, progress, len(f.cps))
	}
	// Tiles: level 0: 0, 1 and the partial 2; level 1: the partial 0.
	if rep.Tiles != 4 {
		t.Errorf("tiles checked: got %d, want 4", rep.Tiles)
	}
	if rep.Root == (Hash{}) {
		t.Error("report has no root")
	}
}

func TestVerifyTamperMatrix(t *testing.T) {
	f := getFixture(t)
	cpMid, cpMid2 := f.cps[3], f.cps[4]
	ts := func(r *rawStore, edit func(ts *treeState)) {
		s, err := decodeTreeState(r.get(keyTreeState))
		if err != nil {
			r.tb.Fatal(err)
		}
		edit(&s)
		r.set(keyTreeState, s.encode())
	}
	type tc struct {
		name   string
		tamper func(r *rawStore)
		kind   string
		index  uint64
		object string
		reason string
	}
	cases := []tc{
		// Entries of the partial bundle (512..599), stored one by one.
		{"entry/flip", func(r *rawStore) { r.flip(entryKey(530), 2) }, kindEntry, 530, "entry/530", "does not hash"},
		{"entry/truncate", func(r *rawStore) { r.truncate(entryKey(530)) }, kindEntry, 530, "entry/530", "does not hash"},
		{"entry/delete", func(r *rawStore) { r.del(entryKey(530)) }, kindEntry, 530, "entry/530", "missing"},
		{"entry/duplicate", func(r *rawStore) { r.dup(entryKey(530), entryKey(531)) }, kindEntry, 531, "entry/531", "does not hash"},
		{"entry/reorder", func(r *rawStore) { r.swap(entryKey(530), entryKey(540)) }, kindEntry, 530, "entry/530", "does not hash"},
		{"entry/extra", func(r *rawStore) { r.dup(entryKey(530), entryKey(600)) }, kindEntry, 600, "entry/600", "beyond the tree size 600"},
		// The older store had none of 512..599: rolling them back removes them.
		{"entry/rollback", func(r *rawStore) {
			for i := uint64(512); i < 600; i++ {
				r.rollback(entryKey(i))
			}
		}, kindEntry, 512, "entry/512", "missing"},
		// Full bundles.
		{"bundle/flip", func(r *rawStore) { r.flip(bundleKey(1), 4) }, kindEntryBundle, 1, "tile/entries/001", "entry 256 (position 0) does not hash"},
		{"bundle/flip-length", func(r *rawStore) { r.flip(bundleKey(1), 0) }, kindEntryBundle, 1, "tile/entries/001", "malformed entry bundle"},
		{"bundle/truncate", func(r *rawStore) { r.truncate(bundleKey(1)) }, kindEntryBundle, 1, "tile/entries/001", "malformed entry bundle"},
		{"bundle/delete", func(r *rawStore) { r.del(bundleKey(1)) }, kindEntryBundle, 1, "tile/entries/001", "missing"},
		{"bundle/duplicate", func(r *rawStore) { r.dup(bundleKey(0), bundleKey(1)) }, kindEntryBundle, 1, "tile/entries/001", "entry 256 (position 0) does not hash"},
		{"bundle/duplicate-entry", func(r *rawStore) {
			b := r.get(bundleKey(0))
			r.set(bundleKey(0), append(b, EncodeEntryBundle([][]byte{testEntry(0)})...))
		}, kindEntryBundle, 0, "tile/entries/000", "more than 256 entries"},
		{"bundle/reorder", func(r *rawStore) { r.swap(bundleKey(0), bundleKey(1)) }, kindEntryBundle, 0, "tile/entries/000", "entry 0 (position 0) does not hash"},
		{"bundle/reorder-entries", func(r *rawStore) {
			es, _ := DecodeEntryBundle(r.get(bundleKey(0)))
			es[10], es[11] = es[11], es[10]
			r.set(bundleKey(0), EncodeEntryBundle(es))
		}, kindEntryBundle, 0, "tile/entries/000", "entry 10 (position 10) does not hash"},
		// In the older store bundle 1 was not full yet: entries 256..299
		// were stored one by one.
		{"bundle/rollback", func(r *rawStore) {
			r.rollback(bundleKey(1))
			for i := uint64(256); i < 300; i++ {
				r.rollback(entryKey(i))
			}
		}, kindEntryBundle, 1, "tile/entries/001", "missing"},
		// Hash tiles.
		{"tile/flip", func(r *rawStore) { r.flip(tileKey(0, 1), 40) }, kindHashTile, 1, "tile/0/001", "hash 1 is"},
		{"tile/flip-level1", func(r *rawStore) { r.flip(tileKey(1, 0), 33) }, kindHashTile, 0, "tile/1/000.p/2", "hash 1 is"},
		{"tile/truncate", func(r *rawStore) { r.truncate(tileKey(0, 2)) }, kindHashTile, 2, "tile/0/002.p/88", "bytes, want 2816"},
		{"tile/delete", func(r *rawStore) { r.del(tileKey(0, 1)) }, kindHashTile, 1, "tile/0/001", "missing"},
		{"tile/duplicate", func(r *rawStore) { r.dup(tileKey(0, 0), tileKey(0, 1)) }, kindHashTile, 1, "tile/0/001", "hash 0 is"},
		{"tile/extra", func(r *rawStore) { r.dup(tileKey(0, 0), tileKey(0, 3)) }, kindHashTile, 3, "tile/0/003", "beyond the tree size"},
		{"tile/reorder", func(r *rawStore) { r.swap(tileKey(0, 0), tileKey(0, 1)) }, kindHashTile, 0, "tile/0/000", "hash 0 is"},
		{"tile/rollback", func(r *rawStore) { r.rollback(tileKey(1, 0)) }, kindHashTile, 0, "tile/1/000.p/2", "32 bytes, want 64"},
		// Checkpoints.
		{"checkpoint/flip", func(r *rawStore) { r.flip(checkpointKey(600), -10) }, kindCheckpoint, 600, "checkpoint/600", "verify"},
		{"checkpoint/flip-body", func(r *rawStore) { r.flip(checkpointKey(600), 30) }, kindCheckpoint, 600, "checkpoint/600", "verify"},
		{"checkpoint/truncate", func(r *rawStore) { r.truncate(checkpointKey(600)) }, kindCheckpoint, 600, "checkpoint/600", "checkpoint"},
		{"checkpoint/delete-latest", func(r *rawStore) { r.del(checkpointKey(600)) }, kindCheckpoint, 600, "checkpoint/600", "missing"},
		{"checkpoint/delete", func(r *rawStore) { r.del(checkpointKey(cpMid)) }, kindCheckpoint, cpMid, "", "missing"},
		{"checkpoint/duplicate", func(r *rawStore) { r.dup(checkpointKey(cpMid), checkpointKey(cpMid2)) }, kindCheckpoint, cpMid2, "", "signed for size"},
		{"checkpoint/reorder", func(r *rawStore) { r.swap(checkpointKey(cpMid), checkpointKey(cpMid2)) }, kindCheckpoint, cpMid, "", "signed for size"},
		{"checkpoint/rollback", func(r *rawStore) {
			v, _ := r.getOld(checkpointKey(300))
			r.set(checkpointKey(600), v)
		}, kindCheckpoint, 600, "checkpoint/600", "signed for size 300"},
		// Tree state.
		{"tree state/flip", func(r *rawStore) { r.flip(keyTreeState, 20) }, kindTreeState, 600, "tree state", "differs from checkpoint"},
		{"tree state/flip-hash", func(r *rawStore) { r.flip(keyTreeState, -1) }, kindTreeState, 600, "tree state", "compact range hash"},
		{"tree state/truncate", func(r *rawStore) { r.truncate(keyTreeState) }, kindTreeState, 0, "tree state", "malformed tree state"},
		{"tree state/delete", func(r *rawStore) { r.del(keyTreeState) }, kindTreeState, 0, "tree state", "missing"},
		{"tree state/duplicate", func(r *rawStore) { ts(r, func(s *treeState) { s.hashes[1] = s.hashes[0] }) }, kindTreeState, 600, "tree state", "compact range hash 1"},
		{"tree state/reorder", func(r *rawStore) { ts(r, func(s *treeState) { s.hashes[0], s.hashes[1] = s.hashes[1], s.hashes[0] }) }, kindTreeState, 600, "tree state", "compact range hash 0"},
		{"tree state/rollback", func(r *rawStore) { r.rollback(keyTreeState) }, kindTreeState, 300, "tree state", "behind the latest checkpoint 600"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyDir(t, f.dir)
			db, err := openPebble(filepath.Join(dir, dbDirName), nil, 0, false)
			if err != nil {
				t.Fatal(err)
			}
			old, err := openPebble(filepath.Join(f.old, dbDirName), nil, 0, true)
			if err != nil {
				t.Fatal(err)
			}
			c.tamper(&rawStore{tb: t, db: db, old: old})
			db.Close()
			old.Close()
			_, err = VerifyStore(context.Background(), dir, VerifyOptions{})
			var ve *VerifyError
			if !errors.As(err, &ve) || !errors.Is(err, ErrTampered) {
				t.Fatalf("VerifyStore: got %v, want a *VerifyError matching ErrTampered", err)
			}
			if ve.Kind != c.kind || ve.Index != c.index || (c.object != "" && ve.Object != c.object) || !strings.Contains(ve.Reason, c.reason) {
				t.Errorf("got %q (kind %q index %d object %q), want kind %q index %d object %q reason containing %q",
					ve, ve.Kind, ve.Index, ve.Object, c.kind, c.index, c.object, c.reason)
			}
			// The edits must also keep Open from starting on a store whose
			// tree state and checkpoint disagree.
			if c.kind == kindTreeState || strings.HasPrefix(c.name, "checkpoint/") && c.name != "checkpoint/delete" && !strings.Contains(c.name, "dup") && c.name != "checkpoint/reorder" {
				if l, err := Open(dir, Options{}); err == nil {
					l.Close()
					t.Errorf("Open of a store with a bad tree state succeeded")
				} else if !errors.Is(err, ErrInconsistent) {
					t.Errorf("Open: got %v, want ErrInconsistent", err)
				}
			}
		})
	}
}

func TestVerifyTrustedCheckpoint(t *testing.T) {
	f := getFixture(t)
	l, err := Open(copyDir(t, f.dir), Options{})
	if err != nil {
		t.Fatal(err)
	}
	latest := l.Checkpoint()
	at300, err := l.CheckpointAt(300)
	l.Close()
	if err != nil {
		t.Fatal(err)
	}
	// The whole store rolled back to the older copy is self-consistent...
	if _, err := VerifyStore(context.Background(), f.old, VerifyOptions{}); err != nil {
		t.Fatalf("older store alone: %v", err)
	}
	// ...but not with a checkpoint seen before the rollback.
	_, err = VerifyStore(context.Background(), f.old, VerifyOptions{Trusted: latest})
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Kind != kindRollback || ve.Index != 600 {
		t.Fatalf("rolled-back store with trusted checkpoint 600: got %v, want a rollback error at 600", err)
	}
	// An older trusted checkpoint is fine.
	if _, err := VerifyStore(context.Background(), f.dir, VerifyOptions{Trusted: at300}); err != nil {
		t.Fatalf("trusted checkpoint 300: %v", err)
	}
	// A fork: same key, different entries after 100.
	fork := copyDir(t, f.old)
	l2, err := Open(fork, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for range 400 {
		if _, err := l2.AppendEntry(context.Background(), []byte("fork")); err != nil {
			t.Fatal(err)
		}
	}
	forkCP := l2.Checkpoint()
	l2.Close()
	_, err = VerifyStore(context.Background(), f.dir, VerifyOptions{Trusted: forkCP})
	if !errors.As(err, &ve) || ve.Kind != kindRollback || ve.Index != 700 {
		t.Fatalf("trusted checkpoint from a longer fork: got %v, want rollback at 700", err)
	}
	// Fork at the same size as the store: root differs.
	fork2 := copyDir(t, f.old)
	l3, err := Open(fork2, Options{})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l3, 299, 299)
	if _, err := l3.AppendEntry(context.Background(), []byte("different")); err != nil {
		t.Fatal(err)
	}
	forkCP = l3.Checkpoint()
	l3.Close()
	_, err = VerifyStore(context.Background(), f.dir, VerifyOptions{Trusted: forkCP})
	if !errors.As(err, &ve) || ve.Kind != kindRollback || ve.Index != 600 || !strings.Contains(ve.Reason, "forked") {
		t.Fatalf("trusted checkpoint from a fork of equal size: got %v, want a forked rollback error at 600", err)
	}
	// A trusted checkpoint signed by another key is bad input, not tampering.
	other, _ := openTest(t, Options{})
	_, err = VerifyStore(context.Background(), f.dir, VerifyOptions{Trusted: other.Checkpoint()})
	if err == nil || errors.Is(err, ErrTampered) {
		t.Fatalf("trusted checkpoint of another key: got %v, want a non-tamper error", err)
	}

}

// TestVerifySizes verifies clean stores at sizes around tile boundaries,
// including the first level-2 tile.
func TestVerifySizes(t *testing.T) {
	l, dir := openTest(t, Options{})
	var n uint64
	for _, size := range []uint64{0, 1, 255, 256, 257, 65535, 65536, 65793} {
		if size > n {
			appendN(t, l, int(size-n), 8192)
			n = size
		}
		rep, err := l.Verify(context.Background(), VerifyOptions{})
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		root, _ := l.RootAt(size)
		if rep.Size != size || rep.Entries != size || rep.Root != root {
			t.Fatalf("size %d: report %+v, want root %s", size, rep, root)
		}
	}
	// Level 2 exists at 65536: tamper with its tile through a raw store.
	l.Close()
	db, err := openPebble(filepath.Join(dir, dbDirName), nil, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	r := &rawStore{tb: t, db: db}
	r.flip(tileKey(2, 0), 0)
	db.Close()
	_, err = VerifyStore(context.Background(), dir, VerifyOptions{})
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Kind != kindHashTile || ve.Object != "tile/2/000.p/1" {
		t.Fatalf("flipped level-2 tile: got %v", err)
	}
}
