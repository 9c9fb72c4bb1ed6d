package blob

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// stepCtx calls hook on the n-th call of Err. Collect's scans call Err once
// per key, so a test can act at a precise point of a collection without a
// hook in the store's code.
type stepCtx struct {
	context.Context
	calls atomic.Int32
	n     int32
	hook  func()
}

func (c *stepCtx) Err() error {
	if c.calls.Add(1) == c.n {
		c.hook()
	}
	return c.Context.Err()
}

// A blob committed from an upload session while Collect is marking keeps
// its chunks: Collect sees either the session or the blob, never neither.
func TestCollectKeepsChunksOfUploadCommittedWhileMarking(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, "", Options{})
	mustPut(t, s, randBytes(1, 100)) // exactly one blob: one Err call per blob scan

	data := randBytes(2, 3*testChunk+10) // three chunks in the session, the tail written by Commit
	want := Sum(data)
	up, err := s.NewUpload(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, up.ID, "alice", 0, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}

	committed := false
	var commitErr error
	// Err calls: 1 the expiry scan (the session), 2 the blob decision scan,
	// 3 the blob mark scan. Committing there, before the sessions are
	// marked, is the interleaving that lost chunks when blobs and sessions
	// were marked from two snapshots.
	sc := &stepCtx{Context: ctx, n: 3, hook: func() {
		committed = true
		_, commitErr = s.Commit(ctx, up.ID, "alice", want, int64(len(data)))
	}}
	if _, err := s.Collect(sc, func(Digest) bool { return true }, time.Hour); err != nil {
		t.Fatal(err)
	}
	if !committed || commitErr != nil {
		t.Fatalf("commit during Collect: ran %v, error %v", committed, commitErr)
	}
	got, err := readAll(t, s, want)
	if err != nil {
		t.Fatalf("blob committed during Collect: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("blob committed during Collect: got %d other bytes", len(got))
	}
}

// Close waits for a Collect in progress, which stops at its next check
// instead of finishing: badger is never closed under a collection, and the
// store reopens with everything the stopped collection had not deleted.
func TestCloseWaitsForCollect(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	var digests []Digest
	for i := range 3 {
		digests = append(digests, mustPut(t, s, randBytes(uint64(10+i), 2*testChunk+1)))
	}

	entered, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	var dbClosedInCollect atomic.Bool
	referenced := func(Digest) bool {
		if calls.Add(1) == 1 {
			close(entered)
			<-release
		}
		dbClosedInCollect.Store(dbClosedInCollect.Load() || s.db.IsClosed())
		return false // unreferenced with grace 0: only the stop keeps them
	}
	type result struct {
		st  CollectStats
		err error
	}
	collected := make(chan result, 1)
	go func() {
		st, err := s.Collect(context.Background(), referenced, 0)
		collected <- result{st, err}
	}()
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	// Let the collection go on only once Close has begun.
	for s.checkOpen() == nil {
		time.Sleep(time.Millisecond)
	}
	close(release)

	r := <-collected
	if !errors.Is(r.err, ErrClosed) {
		t.Fatalf("Collect during Close: got %v, want ErrClosed", r.err)
	}
	if r.st.BlobsDeleted != 0 || r.st.ChunksDeleted != 0 {
		t.Errorf("Collect stopped by Close deleted %+v", r.st)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if dbClosedInCollect.Load() {
		t.Error("badger was closed while Collect still ran")
	}
	if _, err := s.Collect(context.Background(), referenced, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Collect after Close: got %v, want ErrClosed", err)
	}

	s2 := openTest(t, dir, Options{})
	for _, d := range digests {
		if _, err := readAll(t, s2, d); err != nil {
			t.Errorf("blob %s after reopening: %v", d, err)
		}
	}
}

// A cancelled context stops Collect before its next deletion.
func TestCollectStopsOnCancel(t *testing.T) {
	s := openTest(t, "", Options{})
	d := mustPut(t, s, randBytes(20, 100))
	ctx, cancel := context.WithCancel(context.Background())
	_, err := s.Collect(ctx, func(Digest) bool { cancel(); return false }, 0)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Collect with its context cancelled while deciding: got %v, want context.Canceled", err)
	}
	if _, err := readAll(t, s, d); err != nil {
		t.Errorf("blob after a cancelled Collect: %v", err)
	}
}
