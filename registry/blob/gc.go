package blob

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// CollectStats reports what a collection removed.
type CollectStats struct {
	BlobsDeleted   int
	ChunksDeleted  int
	UploadsExpired int
	BlobsKept      int
}

// Collect removes every blob for which isReferenced returns false and whose
// grace period (since its last Put, commit or Touch) is over, every expired
// upload session, and then every chunk that no remaining blob or session
// lists, and finally runs badger's value-log GC to give the space back.
//
// Rules that make it safe to run beside uploads and readers:
//   - a chunk that an uncommitted writer relies on (written or found by a Put
//     or an append in progress) is never deleted;
//   - a blob committed from an upload session while Collect runs keeps its
//     chunks: blobs and sessions are marked from one snapshot, which holds
//     either the session or the blob;
//   - a blob whose record changes while Collect decides about it (a Put or
//     Touch of the same digest) is kept: the decision is a transaction that
//     conflicts with the change;
//   - isReferenced is the caller's view of what versions reference; the
//     grace period must cover the time between a Put (or Touch) and the
//     reference becoming visible to isReferenced.
//
// Only one Collect runs at a time; a second returns ErrBusy. Memory: one
// digest per live chunk for the mark set.
//
// Collect stops early, returning ctx's error, when ctx is done, and with
// ErrClosed when Close is called: it checks both between its phases and
// while it scans, deletes and sweeps, so that a shutdown does not wait for
// a whole collection. Whatever it deleted before stopping stays deleted;
// nothing it keeps is lost. Close waits for a Collect in progress to
// return before it closes the database.
func (s *Store) Collect(ctx context.Context, isReferenced func(Digest) bool, grace time.Duration) (CollectStats, error) {
	var st CollectStats
	if err := s.checkOpen(); err != nil {
		return st, err
	}
	if !s.gcRun.TryLock() {
		return st, ErrBusy
	}
	defer s.gcRun.Unlock()
	// Checked under gcRun: Close sets closed before it takes gcRun, so a
	// Collect that gets the lock after Close has begun stops here.
	if err := s.checkOpen(); err != nil {
		return st, err
	}

	now := s.opts.Now()
	if err := s.expireUploads(ctx, now, &st); err != nil {
		return st, fmt.Errorf("collecting: expiring uploads: %w", err)
	}
	if err := s.gcStopped(ctx); err != nil {
		return st, err
	}

	// From here on, every pin is remembered in gcSeen, so a chunk that a
	// writer relies on after the mark snapshot below is kept.
	s.mu.Lock()
	s.gcSeen = make(map[Digest]struct{}, len(s.pins))
	for d := range s.pins {
		s.gcSeen[d] = struct{}{}
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.gcSeen = nil
		s.mu.Unlock()
	}()

	// Decide about blobs.
	var doomed []Digest
	err := s.scan(ctx, []byte{kindBlob}, func(key []byte, item *badger.Item) error {
		d := Digest(key[1:])
		return item.Value(func(v []byte) error {
			rec, err := decodeBlobRecord(d, v)
			if err != nil {
				return nil // a damaged record keeps its chunks; Open reports it
			}
			if now.Sub(rec.touched) >= grace && !isReferenced(d) {
				doomed = append(doomed, d)
			}
			return nil
		})
	})
	if err != nil {
		return st, fmt.Errorf("collecting: scanning blobs: %w", err)
	}
	for _, d := range doomed {
		if err := s.gcStopped(ctx); err != nil {
			return st, err
		}
		deleted := false
		err := s.db.Update(func(txn *badger.Txn) error {
			// Re-read inside the transaction: a Put or Touch since the scan
			// either shows here or makes this commit conflict.
			rec, err := readBlobRecord(txn, d)
			if errors.Is(err, ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			if now.Sub(rec.touched) < grace {
				return nil
			}
			deleted = true
			return txn.Delete(blobKey(d))
		})
		if errors.Is(err, badger.ErrConflict) {
			continue // changed meanwhile: keep it this time
		}
		if err != nil {
			return st, fmt.Errorf("collecting: deleting blob %s: %w", d, err)
		}
		if deleted {
			st.BlobsDeleted++
		}
	}
	if err := s.sync(); err != nil {
		return st, fmt.Errorf("collecting: %w", err)
	}
	if err := s.gcStopped(ctx); err != nil {
		return st, err
	}

	// Mark the chunks that remaining blobs and live sessions list, both
	// from ONE snapshot. A Commit turns a session into a blob in a single
	// transaction, so one snapshot holds either the session or the blob and
	// marks its chunks either way; with two snapshots, a Commit between them
	// hides its chunks from both (the blob scan ran before it, the session
	// scan after), and the sweep would delete a committed blob's chunks.
	// Chunks written after the snapshot are pinned, hence in gcSeen.
	marked := make(map[Digest]struct{})
	err = s.db.View(func(txn *badger.Txn) error {
		err := s.scanTxn(ctx, txn, []byte{kindBlob}, func(key []byte, item *badger.Item) error {
			d := Digest(key[1:])
			return item.Value(func(v []byte) error {
				rec, err := decodeBlobRecord(d, v)
				if err != nil {
					// The chunk list cannot be trusted; keep every chunk
					// rather than guess.
					return errUnsafeBlob
				}
				st.BlobsKept++
				for _, c := range rec.chunks {
					marked[c] = struct{}{}
				}
				return nil
			})
		})
		if err != nil {
			return err
		}
		return s.scanTxn(ctx, txn, []byte{kindUpload}, func(key []byte, item *badger.Item) error {
			id := string(key[1:])
			return item.Value(func(v []byte) error {
				rec, err := decodeUploadRecord(id, v)
				if err != nil {
					return errUnsafeUpload
				}
				for _, c := range rec.chunks {
					marked[c] = struct{}{}
				}
				return nil
			})
		})
	})
	switch {
	case errors.Is(err, errUnsafeBlob):
		return st, fmt.Errorf("collecting: a blob record is damaged; not deleting chunks: %w", ErrCorrupt)
	case errors.Is(err, errUnsafeUpload):
		return st, fmt.Errorf("collecting: an upload record is damaged; not deleting chunks: %w", ErrCorrupt)
	case err != nil:
		return st, fmt.Errorf("collecting: marking chunks: %w", err)
	}
	if err := s.gcStopped(ctx); err != nil {
		return st, err
	}

	// Sweep.
	var batch []Digest
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		// Holding mu across the check and the delete: a writer pins before
		// it looks for a chunk, so it either sees the chunk gone (and writes
		// it again) or its pin stops the delete.
		s.mu.Lock()
		defer s.mu.Unlock()
		wb := s.db.NewWriteBatch()
		defer wb.Cancel()
		n := 0
		for _, d := range batch {
			if _, seen := s.gcSeen[d]; seen {
				continue
			}
			if err := wb.Delete(chunkKey(d)); err != nil {
				return err
			}
			n++
		}
		if err := wb.Flush(); err != nil {
			return err
		}
		st.ChunksDeleted += n
		batch = batch[:0]
		return nil
	}
	var candidates []Digest
	err = s.scanKeys(ctx, []byte{kindChunk}, func(key []byte) error {
		d := Digest(key[1:])
		if _, ok := marked[d]; !ok {
			candidates = append(candidates, d)
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("collecting: scanning chunks: %w", err)
	}
	for _, d := range candidates {
		batch = append(batch, d)
		if len(batch) == 256 {
			if err := s.gcStopped(ctx); err != nil {
				return st, err
			}
			if err := flush(); err != nil {
				return st, fmt.Errorf("collecting: deleting chunks: %w", err)
			}
		}
	}
	if err := flush(); err != nil {
		return st, fmt.Errorf("collecting: deleting chunks: %w", err)
	}
	if err := s.sync(); err != nil {
		return st, fmt.Errorf("collecting: %w", err)
	}

	// Give value-log space back; ErrNoRewrite means nothing was worth it.
	// One round may rewrite a whole value-log file, so the stop check runs
	// between rounds only.
	for ctx.Err() == nil && !s.closed.Load() {
		err := s.db.RunValueLogGC(0.5)
		if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
			break
		}
		if err != nil {
			return st, fmt.Errorf("collecting: value-log gc: %w", err)
		}
	}
	return st, s.gcStopped(ctx)
}

// gcStopped returns why a collection must stop now: ctx's error, or
// ErrClosed once Close has begun; nil to go on. It watches ctx.Done rather
// than calling ctx.Err, so that the stop checks between phases leave the
// count of Err calls (one per scanned key, which tests step on) unchanged.
func (s *Store) gcStopped(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	default:
	}
	return s.checkOpen()
}

// Damaged records found while marking: their chunk lists cannot be trusted,
// so nothing is swept.
var (
	errUnsafeBlob   = errors.New("damaged blob record")
	errUnsafeUpload = errors.New("damaged upload record")
)

// expireUploads deletes sessions whose expiry has passed and that are not
// in use right now.
func (s *Store) expireUploads(ctx context.Context, now time.Time, st *CollectStats) error {
	var expired []string
	err := s.scan(ctx, []byte{kindUpload}, func(key []byte, item *badger.Item) error {
		id := string(key[1:])
		return item.Value(func(v []byte) error {
			rec, err := decodeUploadRecord(id, v)
			if err == nil && !now.Before(rec.expires) {
				expired = append(expired, id)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, id := range expired {
		if err := s.gcStopped(ctx); err != nil {
			return err
		}
		if s.acquire(id) != nil {
			continue // in use: not expired after all
		}
		err := s.deleteUpload(id)
		s.releaseSession(id)
		if err != nil {
			return err
		}
		st.UploadsExpired++
	}
	return nil
}

// scan calls fn for every key with prefix, values included.
func (s *Store) scan(ctx context.Context, prefix []byte, fn func(key []byte, item *badger.Item) error) error {
	return s.db.View(func(txn *badger.Txn) error { return s.scanTxn(ctx, txn, prefix, fn) })
}

// scanTxn is scan inside txn, so that several scans can share one snapshot.
func (s *Store) scanTxn(ctx context.Context, txn *badger.Txn, prefix []byte, fn func(key []byte, item *badger.Item) error) error {
	o := badger.DefaultIteratorOptions
	o.Prefix = prefix
	o.PrefetchValues = false
	it := txn.NewIterator(o)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Collection stops at once when the store is closing (Close waits
		// for it), whichever scan it is in.
		if s.closed.Load() {
			return ErrClosed
		}
		item := it.Item()
		if err := fn(item.KeyCopy(nil), item); err != nil {
			return err
		}
	}
	return nil
}

// scanKeys calls fn for every key with prefix, without reading values.
func (s *Store) scanKeys(ctx context.Context, prefix []byte, fn func(key []byte) error) error {
	return s.scan(ctx, prefix, func(key []byte, _ *badger.Item) error { return fn(key) })
}
