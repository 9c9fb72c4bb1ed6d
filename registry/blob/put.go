package blob

import (
	"context"
	"crypto/sha256"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"

	"github.com/dgraph-io/badger/v4"
)

// errOverLimit is the producer's signal that the body went past its limit;
// callers turn it into a size mismatch or ErrTooLarge.
var errOverLimit = errors.New("over limit")

// Put stores the blob read from r, which must be exactly size bytes whose
// SHA-256 is want. It streams: memory use is a few chunks whatever the size.
//
// Put MUST NOT return nil before the blob's chunks and record are durably
// synced; after it returns nil, Stat, Open and Has see the blob. If r yields
// other bytes, Put returns a *MismatchError (errors.Is ErrDigestMismatch or
// ErrSizeMismatch) with the declared and received values, and no blob becomes
// visible; chunks it wrote are referenced by nothing and go at the next
// Collect. A body longer than size is refused as soon as the extra byte
// arrives. Storing a blob that is already stored verifies the bytes again and
// restarts its grace period. Concurrent Puts of the same blob are fine.
func (s *Store) Put(ctx context.Context, want Digest, size int64, r io.Reader) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("putting blob %s: negative size %d", want, size)
	}
	if size > s.opts.MaxBlobSize {
		return fmt.Errorf("putting blob %s: %w: size %d exceeds the limit of %d bytes", want, ErrTooLarge, size, s.opts.MaxBlobSize)
	}
	var chunks, pinned []Digest
	defer func() { s.unpin(pinned...) }()
	h := sha256.New()
	total, readErr, err := s.ingest(ctx, r, h, nil, size, false, func(data, _ []byte, final bool) error {
		if len(data) == 0 {
			return nil
		}
		d, err := s.writeChunk(data)
		if err != nil {
			return fmt.Errorf("chunk %d: %w", len(chunks), err)
		}
		pinned = append(pinned, d)
		chunks = append(chunks, d)
		return nil
	})
	if err != nil {
		return fmt.Errorf("putting blob %s: %w", want, err)
	}
	if errors.Is(readErr, errOverLimit) {
		return &MismatchError{Field: "size", Expected: strconv.FormatInt(size, 10), Actual: "more than " + strconv.FormatInt(size, 10)}
	}
	if readErr != nil {
		return fmt.Errorf("putting blob %s: reading body after %d bytes: %w", want, total, readErr)
	}
	if total != size {
		return &MismatchError{Field: "size", Expected: strconv.FormatInt(size, 10), Actual: strconv.FormatInt(total, 10)}
	}
	if got := Digest(h.Sum(nil)); got != want {
		return &MismatchError{Field: "digest", Expected: want.String(), Actual: got.String()}
	}
	if err := s.commitBlob(want, size, chunks, nil); err != nil {
		return fmt.Errorf("putting blob %s: %w", want, err)
	}
	return nil
}

// commitBlob makes the chunks durable, then writes the blob record (and
// deletes the upload record named by upload, if any) and syncs again: a
// record is never durable before the chunks it lists.
func (s *Store) commitBlob(d Digest, size int64, chunks []Digest, upload []byte) error {
	if err := s.sync(); err != nil {
		return err
	}
	now := s.opts.Now()
	for {
		err := s.db.Update(func(txn *badger.Txn) error {
			rec := &blobRecord{size: size, chunkSize: s.opts.ChunkSize, created: now, touched: now, chunks: chunks}
			// An existing sound record keeps its creation time. A damaged
			// one is replaced: the new chunk list was just verified.
			if old, err := readBlobRecord(txn, d); err == nil {
				rec.created = old.created
			}
			if err := txn.Set(blobKey(d), rec.encode(d)); err != nil {
				return err
			}
			if upload != nil {
				return txn.Delete(upload)
			}
			return nil
		})
		if errors.Is(err, badger.ErrConflict) {
			continue // a concurrent Put, Touch or Collect; redo on fresh state
		}
		if err != nil {
			return fmt.Errorf("writing blob record: %w", err)
		}
		return s.sync()
	}
}

// writeChunk stores one chunk unless it is already stored, and pins it: the
// caller MUST unpin it once a committed record references it (or it gives
// up).
func (s *Store) writeChunk(data []byte) (Digest, error) {
	d := Sum(data)
	s.pin(d)
	key := chunkKey(d)
	exists := false
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(key)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		exists = err == nil
		return err
	})
	if err == nil && !exists {
		// A blind write: two writers of the same chunk both succeed.
		err = s.db.Update(func(txn *badger.Txn) error { return txn.Set(key, data) })
		if err == nil {
			s.releaseChunk(key)
		}
	}
	if err != nil {
		s.unpin(d)
		return d, fmt.Errorf("writing chunk %s: %w", d, err)
	}
	return d, nil
}

// releaseChunk drops the just-written chunk's pages from this process's
// mappings of badger's value log (see mmap_linux.go). Best effort.
func (s *Store) releaseChunk(key []byte) {
	_ = s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error { release(v); return nil })
	})
}

type piece struct {
	buf   *[]byte
	n     int
	state []byte // whole-hash state after these bytes, when asked for
	err   error  // nil: a full chunk, more follow; io.EOF: the last piece; else a read error after these bytes
}

// ingest cuts prefix followed by r's bytes into chunks. A producer goroutine
// reads and feeds h (which already covers prefix) while the caller's
// goroutine runs consume, so reading, whole-file hashing and chunk
// hashing/writing overlap on separate cores; two chunk buffers bound memory.
//
// consume is called with every full chunk (final false) and then once with
// the remaining bytes (final true, possibly empty). If r fails, the final
// call still happens with the bytes received, and the read error is returned
// as readErr. If r yields more than limit bytes, readErr is errOverLimit and
// the final call does not happen. total counts r's bytes consumed.
func (s *Store) ingest(ctx context.Context, r io.Reader, h hash.Hash, prefix []byte, limit int64, wantState bool,
	consume func(data, state []byte, final bool) error) (total int64, readErr, err error) {
	pieces := make(chan piece, 1)
	free := make(chan *[]byte, 2)
	free <- s.getBuf()
	free <- s.getBuf()
	stop := make(chan struct{})
	done := make(chan struct{})
	var read int64 // owned by the producer until done
	go func() {
		defer close(done)
		lr := &io.LimitedReader{R: r, N: limit + 1}
		first := true
		for {
			var b *[]byte
			select {
			case b = <-free:
			case <-stop:
				return
			}
			buf := *b
			start := 0
			if first {
				start = copy(buf, prefix)
				first = false
			}
			n, rerr := io.ReadFull(lr, buf[start:])
			read += int64(n)
			p := piece{buf: b, n: start + n}
			switch {
			case read > limit:
				p = piece{buf: b, err: errOverLimit}
			case rerr == nil:
			case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
				p.err = io.EOF
			default:
				p.err = rerr
			}
			if p.err != errOverLimit {
				h.Write(buf[start : start+n])
				if wantState {
					st, merr := h.(encoding.BinaryMarshaler).MarshalBinary()
					if merr != nil {
						p = piece{buf: b, err: merr}
					}
					p.state = st
				}
			}
			select {
			case pieces <- p:
			case <-stop:
				free <- b
				return
			}
			if p.err != nil {
				return
			}
		}
	}()

	for err == nil {
		var p piece
		select {
		case p = <-pieces:
		case <-ctx.Done():
			err = ctx.Err()
			continue
		}
		if p.err == errOverLimit {
			readErr = errOverLimit
			free <- p.buf
			break
		}
		final := p.err != nil
		err = consume((*p.buf)[:p.n], p.state, final)
		free <- p.buf
		if final {
			if p.err != io.EOF {
				readErr = p.err
			}
			break
		}
	}
	close(stop)
	<-done
	// Every buffer is now in free or in pieces.
	for len(pieces) > 0 {
		p := <-pieces
		free <- p.buf
	}
	for len(free) > 0 {
		s.putBuf(<-free)
	}
	return read, readErr, err
}
