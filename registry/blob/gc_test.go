package blob

import (
	"bytes"
	"context"
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
