package blob

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

// A non-owner who knows the id and repeats refused requests must not make
// the owner's appends fail busy (its requests used to hold the session
// while the owner was looked up).
func TestNonOwnerCannotMakeOwnerBusy(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir(), Options{ChunkSize: testChunk})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	up, err := s.NewUpload(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				_ = s.Abort(ctx, up.ID, "mallory")
			}
		})
	}
	busy, off := 0, int64(0)
	for range 2000 {
		info, err := s.Append(ctx, up.ID, "alice", off, bytes.NewReader(nil))
		if errors.Is(err, ErrUploadBusy) {
			busy++
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		off = info.Offset
	}
	stop.Store(true)
	wg.Wait()
	if busy > 0 {
		t.Fatalf("owner's Append refused busy %d of 2000 times because a non-owner probed the id", busy)
	}
}
