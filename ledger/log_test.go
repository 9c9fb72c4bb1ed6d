package ledger

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var errPrecondition = errors.New("precondition failed")

func TestAppendAndRead(t *testing.T) {
	l, dir := openTest(t, Options{})
	if got := l.Size(); got != 0 {
		t.Fatalf("new log size: got %d, want 0", got)
	}
	if _, err := ParseCheckpoint(l.Checkpoint(), DefaultOrigin, l.Verifier()); err != nil {
		t.Fatalf("empty checkpoint: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, "log.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v, want 0600", err, fi.Mode())
	}
	for i := uint64(0); i < 600; i++ {
		r, err := l.AppendEntry(context.Background(), testEntry(i))
		if err != nil {
			t.Fatal(err)
		}
		if r.First != i || r.Count != 1 || r.Size != i+1 {
			t.Fatalf("receipt %d: got %+v", i, r)
		}
		cp, err := ParseCheckpoint(r.Checkpoint, l.Origin(), l.Verifier())
		if err != nil || cp.Size != i+1 || cp.Root != r.Root {
			t.Fatalf("receipt %d checkpoint: %+v, %v", i, cp, err)
		}
	}
	for _, i := range []uint64{0, 255, 256, 511, 512, 599} {
		e, err := l.Entry(i)
		if err != nil || string(e) != string(testEntry(i)) {
			t.Errorf("Entry(%d): got %q, %v, want %q", i, e, err, testEntry(i))
		}
	}
	if _, err := l.Entry(600); !errors.Is(err, ErrNotFound) {
		t.Errorf("Entry(600): got %v, want ErrNotFound", err)
	}
	var n uint64 = 250
	err = l.Entries(context.Background(), 250, 520, func(i uint64, e []byte) error {
		if i != n || string(e) != string(testEntry(i)) {
			return fmt.Errorf("entry %d: got index %d %q", n, i, e)
		}
		n++
		return nil
	})
	if err != nil || n != 520 {
		t.Fatalf("Entries: %v (stopped at %d)", err, n)
	}
	// Bundles: full ones are written once, the partial one is assembled.
	b, err := l.ReadEntryBundle(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	es, err := DecodeEntryBundle(b)
	if err != nil || len(es) != 256 || string(es[0]) != "entry 256" {
		t.Fatalf("bundle 1: %d entries, %v", len(es), err)
	}
	b, err = l.ReadEntryBundle(2, 10)
	if err != nil {
		t.Fatal(err)
	}
	if es, _ := DecodeEntryBundle(b); len(es) != 10 || string(es[9]) != "entry 521" {
		t.Fatalf("partial bundle 2 width 10: %q", es)
	}
	if _, err := l.ReadEntryBundle(2, 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("full bundle 2: got %v, want ErrNotFound", err)
	}
	if _, err := l.ReadEntryBundle(2, 89); !errors.Is(err, ErrNotFound) {
		t.Errorf("bundle 2 width 89: got %v, want ErrNotFound", err)
	}
	if b, err := l.ReadEntryBundle(0, 3); err != nil || len(b) != 3*(2+7) {
		t.Errorf("partial view of full bundle 0: %d bytes, %v", len(b), err)
	}
	// Leaf hashes come from the tiles.
	for _, i := range []uint64{0, 300, 599} {
		h, err := l.LeafHash(i)
		if err != nil || h != LeafHashOf(testEntry(i)) {
			t.Errorf("LeafHash(%d): %s, %v", i, h, err)
		}
	}
	if _, err := l.ReadTile(0, 2, 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("full tile 0/2 of a 600 tree: got %v, want ErrNotFound", err)
	}
	if tile, err := l.ReadTile(1, 0, 2); err != nil || len(tile) != 64 {
		t.Errorf("tile 1/0.p/2: %d bytes, %v", len(tile), err)
	}
	if _, err := l.CheckpointAt(599); err != nil {
		t.Errorf("CheckpointAt(599): %v", err)
	}
	if _, err := l.CheckpointAt(601); !errors.Is(err, ErrNotFound) {
		t.Errorf("CheckpointAt(601): got %v, want ErrNotFound", err)
	}
	// Reopen: same tree, appends continue.
	root := l.head.Load().root
	l.Close()
	if _, err := l.AppendEntry(context.Background(), []byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("append after close: got %v, want ErrClosed", err)
	}
	l2, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if l2.Size() != 600 || l2.head.Load().root != root {
		t.Fatalf("reopened: size %d", l2.Size())
	}
	r, err := l2.AppendEntry(context.Background(), testEntry(600))
	if err != nil || r.First != 600 {
		t.Fatalf("append after reopen: %+v, %v", r, err)
	}
	if rep, err := l2.Verify(context.Background(), VerifyOptions{}); err != nil || rep.Size != 601 {
		t.Fatalf("live verify: %+v, %v", rep, err)
	}
	l2.Close()
	if _, err := VerifyStore(context.Background(), dir, VerifyOptions{}); err != nil {
		t.Fatalf("verify: %v", err)
	}
}

func TestOpenOrigin(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{Origin: "example.com/log"})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := Open(dir, Options{Origin: "other.example/log"}); !errors.Is(err, ErrOriginMismatch) {
		t.Fatalf("reopen with another origin: got %v, want ErrOriginMismatch", err)
	}
	l, err = Open(dir, Options{})
	if err != nil {
		t.Fatalf("reopen without origin: %v", err)
	}
	if got := l.Origin(); got != "example.com/log" {
		t.Errorf("origin: got %q, want example.com/log", got)
	}
	if !strings.HasPrefix(l.VerifierKey(), "example.com/log+") {
		t.Errorf("verifier key %q not named for the origin", l.VerifierKey())
	}
	l.Close()
	// A key named for another origin is refused.
	skey, _, _ := GenerateKey("someone.else")
	kf := filepath.Join(t.TempDir(), "k")
	os.WriteFile(kf, []byte(skey), 0o600)
	if _, err := Open(t.TempDir(), Options{KeyFile: kf, NewLogWithExistingKey: true}); !errors.Is(err, ErrOriginMismatch) {
		t.Fatalf("key of another name: got %v, want ErrOriginMismatch", err)
	}
}

func TestAppendTx(t *testing.T) {
	l, _ := openTest(t, Options{})
	ctx := context.Background()
	// A failing fn keeps nothing and its error comes back unchanged.
	_, err := l.Append(ctx, func(tx *Tx) error {
		tx.Set([]byte("a"), []byte("1"))
		tx.Add([]byte("lost"))
		return fmt.Errorf("checking: %w", errPrecondition)
	})
	if !errors.Is(err, errPrecondition) {
		t.Fatalf("failing fn: got %v, want errPrecondition", err)
	}
	if _, err := l.Get([]byte("a")); !errors.Is(err, ErrNotFound) || l.Size() != 0 {
		t.Fatalf("after failing fn: Get a: %v, size %d", err, l.Size())
	}
	// Entry size limit.
	if _, err := l.AppendEntry(ctx, make([]byte, MaxEntrySize+1)); !errors.Is(err, ErrEntryTooLarge) || !strings.Contains(err.Error(), "65536") {
		t.Fatalf("oversized entry: got %v", err)
	}
	if _, err := l.AppendEntry(ctx, make([]byte, MaxEntrySize)); err != nil {
		t.Fatalf("entry of MaxEntrySize: %v", err)
	}
	// Read-your-writes, deletes, NextIndex, state-only commits.
	r, err := l.Append(ctx, func(tx *Tx) error {
		if tx.NextIndex() != 1 {
			return fmt.Errorf("NextIndex %d, want 1", tx.NextIndex())
		}
		tx.Set([]byte("k1"), []byte("v1"))
		tx.Set([]byte("k2"), []byte("v2"))
		tx.Set([]byte("k3"), []byte("v3"))
		tx.Delete([]byte("k2"))
		if v, err := tx.Get([]byte("k1")); err != nil || string(v) != "v1" {
			return fmt.Errorf("own write: %q %v", v, err)
		}
		if _, err := tx.Get([]byte("k2")); !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("own delete: %v", err)
		}
		return nil
	})
	if err != nil || r.Count != 0 || r.First != 1 || r.Size != 1 {
		t.Fatalf("state-only append: %+v, %v", r, err)
	}
	var keys []string
	l.Scan([]byte("k"), func(k, v []byte) error { keys = append(keys, string(k)+"="+string(v)); return nil })
	if got := strings.Join(keys, ","); got != "k1=v1,k3=v3" {
		t.Fatalf("Scan: got %s, want k1=v1,k3=v3", got)
	}
	// ScanFrom starts at the first key not below start, within the prefix.
	for _, tc := range []struct{ start, want string }{
		{"", "k1,k3"}, {"a", "k1,k3"}, {"k2", "k3"}, {"k3", "k3"}, {"k4", ""}, {"z", ""},
	} {
		var got []string
		l.ScanFrom([]byte("k"), []byte(tc.start), func(k, v []byte) error { got = append(got, string(k)); return nil })
		if s := strings.Join(got, ","); s != tc.want {
			t.Errorf("ScanFrom(k, %q): got %s, want %s", tc.start, s, tc.want)
		}
	}
	// Tx.Scan merges committed state with pending writes.
	_, err = l.Append(ctx, func(tx *Tx) error {
		tx.Set([]byte("k0"), []byte("v0"))
		tx.Delete([]byte("k3"))
		tx.Set([]byte("k1"), []byte("new"))
		var got []string
		tx.Scan([]byte("k"), func(k, v []byte) error { got = append(got, string(k)+"="+string(v)); return nil })
		if s := strings.Join(got, ","); s != "k0=v0,k1=new" {
			return fmt.Errorf("Tx.Scan: got %s, want k0=v0,k1=new", s)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A Tx used after its fn returned is refused.
	var saved *Tx
	l.Append(ctx, func(tx *Tx) error { saved = tx; return nil })
	if err := saved.Set([]byte("late"), nil); !errors.Is(err, ErrTxDone) {
		t.Errorf("Set after fn: got %v, want ErrTxDone", err)
	}
	// A panicking fn is an error, not a crash, and the log goes on.
	if _, err := l.Append(ctx, func(tx *Tx) error { panic("boom") }); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("panicking fn: got %v", err)
	}
}

// TestAppendCompareAndSwap: concurrent check-then-act on one key never
// loses an update, because fn runs inside the sequencer and sees earlier
// Txs of the same group batch.
func TestAppendCompareAndSwap(t *testing.T) {
	l, _ := openTest(t, Options{})
	const writers, each = 16, 20
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range each {
				_, err := l.Append(context.Background(), func(tx *Tx) error {
					n := 0
					if v, err := tx.Get([]byte("counter")); err == nil {
						fmt.Sscan(string(v), &n)
					} else if !errors.Is(err, ErrNotFound) {
						return err
					}
					if _, err := tx.Add(fmt.Appendf(nil, "counter %d", n+1)); err != nil {
						return err
					}
					return tx.Set([]byte("counter"), fmt.Appendf(nil, "%d", n+1))
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	v, _ := l.Get([]byte("counter"))
	if got, want := string(v), fmt.Sprint(writers*each); got != want || l.Size() != writers*each {
		t.Fatalf("counter: got %s (size %d), want %s", got, l.Size(), want)
	}
	// Entries record the counter in order: entry i says "counter i+1".
	l.Entries(context.Background(), 0, l.Size(), func(i uint64, e []byte) error {
		if want := fmt.Sprintf("counter %d", i+1); string(e) != want {
			t.Errorf("entry %d: got %q, want %q", i, e, want)
		}
		return nil
	})
}

func TestAppendContext(t *testing.T) {
	l, _ := openTest(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ran := false
	if _, err := l.Append(ctx, func(tx *Tx) error { ran = true; return nil }); !errors.Is(err, context.Canceled) || ran {
		t.Fatalf("cancelled ctx: got %v (ran %v), want context.Canceled without running fn", err, ran)
	}
	// Cancelled while fn runs: the outcome stands.
	ctx, cancel = context.WithCancel(context.Background())
	r, err := l.Append(ctx, func(tx *Tx) error {
		cancel()
		_, err := tx.Add([]byte("kept"))
		return err
	})
	if err != nil || r.Count != 1 || l.Size() != 1 {
		t.Fatalf("cancel inside fn: %+v, %v, size %d", r, err, l.Size())
	}
}

func TestCommitFailure(t *testing.T) {
	fail := errors.New("disk on fire")
	var failing bool
	var mu sync.Mutex
	l, dir := openTest(t, Options{commitHook: func() error {
		mu.Lock()
		defer mu.Unlock()
		if failing {
			return fail
		}
		return nil
	}})
	ctx := context.Background()
	appendN(t, l, 300, 100)
	before := l.Checkpoint()
	mu.Lock()
	failing = true
	mu.Unlock()
	_, err := l.Append(ctx, func(tx *Tx) error {
		tx.Set([]byte("s"), []byte("x"))
		for range 300 {
			tx.Add([]byte("doomed"))
		}
		return nil
	})
	if !errors.Is(err, fail) {
		t.Fatalf("failed commit: got %v, want the disk error", err)
	}
	if l.Size() != 300 || string(l.Checkpoint()) != string(before) {
		t.Fatalf("after failed commit: size %d, want 300 and the old checkpoint", l.Size())
	}
	if _, err := l.Get([]byte("s")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("state of failed commit visible: %v", err)
	}
	mu.Lock()
	failing = false
	mu.Unlock()
	appendN(t, l, 300, 77)
	if l.Size() != 600 {
		t.Fatalf("size after recovery: %d", l.Size())
	}
	for _, i := range []uint64{299, 300, 599} {
		if e, err := l.Entry(i); err != nil || string(e) != string(testEntry(i)) {
			t.Fatalf("entry %d after recovery: %q, %v", i, e, err)
		}
	}
	l.Close()
	if _, err := VerifyStore(ctx, dir, VerifyOptions{}); err != nil {
		t.Fatalf("verify after recovery: %v", err)
	}
}

func TestRebuildState(t *testing.T) {
	l, _ := openTest(t, Options{})
	ctx := context.Background()
	appendN(t, l, 700, 100)
	l.Append(ctx, func(tx *Tx) error { return tx.Set([]byte("stale"), []byte("x")) })
	apply := func(tx *Tx, i uint64, e []byte) error {
		return tx.Set(fmt.Appendf(nil, "e/%05d", i), e)
	}
	// A failing replay leaves the old state.
	err := l.RebuildState(ctx, func(tx *Tx, i uint64, e []byte) error {
		if i == 500 {
			return errPrecondition
		}
		return apply(tx, i, e)
	})
	if !errors.Is(err, errPrecondition) {
		t.Fatalf("failing rebuild: got %v", err)
	}
	if _, err := l.Get([]byte("stale")); err != nil {
		t.Fatalf("old state lost after failed rebuild: %v", err)
	}
	if err := l.RebuildState(ctx, apply); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Get([]byte("stale")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("old state survived rebuild: %v", err)
	}
	n := 0
	l.Scan([]byte("e/"), func(k, v []byte) error { n++; return nil })
	if v, err := l.Get([]byte("e/00699")); n != 700 || err != nil || string(v) != "entry 699" {
		t.Fatalf("rebuilt state: %d keys, e/00699=%q %v", n, v, err)
	}
	// Appends continue on the new state.
	if _, err := l.Append(ctx, func(tx *Tx) error { return tx.Set([]byte("after"), []byte("1")) }); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Get([]byte("after")); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentReads reads entries, tiles and proofs while appends turn
// partial bundles and tiles into full ones underneath.
func TestConcurrentReads(t *testing.T) {
	l, _ := openTest(t, Options{})
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(done)
		for range 600 {
			if _, err := l.AppendEntry(context.Background(), testEntry(l.Size())); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				size := l.Size()
				if size == 0 {
					continue
				}
				root, err := l.RootAt(size)
				if err != nil {
					t.Errorf("RootAt(%d): %v", size, err)
					return
				}
				for _, i := range []uint64{0, size / 2, size - 1} {
					e, err := l.Entry(i)
					if err != nil || string(e) != string(testEntry(i)) {
						t.Errorf("Entry(%d) at size %d: %q, %v", i, size, e, err)
						return
					}
					p, err := l.InclusionProof(i, size)
					if err != nil {
						t.Errorf("InclusionProof(%d, %d): %v", i, size, err)
						return
					}
					if err := VerifyInclusion(i, size, LeafHashOf(e), p, root); err != nil {
						t.Errorf("proof %d in %d: %v", i, size, err)
						return
					}
				}
				if _, err := l.ReadEntryBundle(size/TileWidth, size%TileWidth); size%TileWidth > 0 && err != nil {
					t.Errorf("ReadEntryBundle at size %d: %v", size, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
