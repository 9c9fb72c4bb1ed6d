package blob

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// Reader reads one blob. Every chunk is checked against its digest before
// any of its bytes are returned; reads that cover the blob sequentially from
// offset 0 also check the whole blob's digest before the last bytes are
// returned. A mismatch, or a missing chunk, is a
// *CorruptError naming the blob and the chunk: wrong bytes are never
// returned as good ones.
//
// Read and Seek share a position and must not be called concurrently;
// ReadAt may be called concurrently with anything. Memory: one chunk (two
// during WriteTo).
type Reader struct {
	s   *Store
	d   Digest
	rec *blobRecord
	ctx context.Context

	mu     sync.Mutex // guards the chunk cache
	buf    *[]byte
	bufIdx int // index of the chunk in buf, or -1

	off    int64
	whole  hash.Hash
	hashed int64 // bytes fed to whole: Read has been sequential from 0 while hashed == off
	bad    error // sticky whole-digest failure
}

// Open returns a Reader for blob d, or ErrNotFound. ctx bounds every read.
// The caller must Close it.
func (s *Store) Open(ctx context.Context, d Digest) (*Reader, error) {
	rec, err := s.blobRecord(ctx, d)
	if err != nil {
		return nil, err
	}
	return &Reader{s: s, d: d, rec: rec, ctx: ctx, bufIdx: -1, whole: sha256.New()}, nil
}

// SkipWholeDigest turns off the whole-file check for this Reader; every
// chunk is still checked against its digest, and the chunk list against the
// record's checksum (which covers the blob's digest), which together prove
// the bytes are the ones whose whole digest was verified when the blob was
// stored. What only the whole-file check would catch is a chunk list
// deliberately rewritten, checksum and all, by someone with write access to
// the store; a client that checks the digest end to end (as
// blobhttp.Client does) catches that too. It saves one SHA-256 pass per
// read. Call it before reading.
func (r *Reader) SkipWholeDigest() { r.whole = nil }

// Digest returns the blob's digest.
func (r *Reader) Digest() Digest { return r.d }

// Size returns the blob's size in bytes.
func (r *Reader) Size() int64 { return r.rec.size }

// Info returns the blob's description.
func (r *Reader) Info() Info { return r.rec.info(r.d) }

// Close releases the chunk buffer.
func (r *Reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.buf != nil {
		r.s.putBuf(r.buf)
		r.buf = nil
		r.bufIdx = -1
	}
	return nil
}

// Read reads from the current position.
func (r *Reader) Read(p []byte) (int, error) {
	if r.bad != nil {
		return 0, r.bad
	}
	if r.off >= r.rec.size {
		return 0, io.EOF
	}
	n, err := r.readAt(p, r.off)
	if n > 0 {
		if cerr := r.hashSequential(p[:n], r.off); cerr != nil {
			return 0, cerr
		}
	}
	r.off += int64(n)
	if err == io.EOF {
		err = nil // the next Read reports it
	}
	return n, err
}

// hashSequential feeds bytes read at off to the whole-file hash while reads
// have been sequential from 0. When they reach the end it checks the digest
// and, on a mismatch, withholds these last bytes: a caller never receives
// the complete body of a blob whose whole digest is wrong (which is how the
// bytes are still unchecked, callers such as http.ServeContent stop at the
// size and never ask for io.EOF).
func (r *Reader) hashSequential(p []byte, off int64) error {
	if r.whole == nil || r.hashed != off {
		return nil
	}
	r.whole.Write(p)
	r.hashed += int64(len(p))
	if r.hashed < r.rec.size {
		return nil
	}
	got := Digest(r.whole.Sum(nil))
	r.whole = nil
	if got != r.d {
		r.bad = &CorruptError{Blob: r.d, Chunk: -1, Detail: fmt.Sprintf("whole-file digest is %s although every chunk matched", got)}
		return r.bad
	}
	return nil
}

// Seek sets the position for the next Read.
func (r *Reader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.off + offset
	case io.SeekEnd:
		abs = r.rec.size + offset
	default:
		return r.off, fmt.Errorf("seeking blob %s: invalid whence %d", r.d, whence)
	}
	if abs < 0 {
		return r.off, fmt.Errorf("seeking blob %s: negative position %d", r.d, abs)
	}
	r.off = abs
	return abs, nil
}

// ReadAt reads len(p) bytes at off, checking each chunk it touches.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("reading blob %s: negative offset %d", r.d, off)
	}
	return r.readAt(p, off)
}

func (r *Reader) readAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	cs := int64(r.rec.chunkSize)
	for n < len(p) {
		if off >= r.rec.size {
			return n, io.EOF
		}
		idx := int(off / cs)
		if err := r.load(idx); err != nil {
			return n, err
		}
		chunk := (*r.buf)[:r.chunkLen(idx)]
		c := copy(p[n:], chunk[off-int64(idx)*cs:])
		n += c
		off += int64(c)
	}
	return n, nil
}

func (r *Reader) chunkLen(idx int) int {
	cs := int64(r.rec.chunkSize)
	return int(min(cs, r.rec.size-int64(idx)*cs))
}

// load fills the buffer with chunk idx, verified.
func (r *Reader) load(idx int) error {
	if r.bufIdx == idx {
		return nil
	}
	if err := r.ctx.Err(); err != nil {
		return err
	}
	if err := r.s.checkOpen(); err != nil {
		return err
	}
	if r.buf == nil {
		r.buf = r.chunkBuf() // a blob's chunk size may exceed this store's
	}
	r.bufIdx = -1
	if err := r.loadChunk(*r.buf, idx); err != nil {
		return err
	}
	r.bufIdx = idx
	return nil
}

// loadChunk reads chunk idx into dst and checks it against its digest.
//
// The bytes are copied out of badger's mapping first and the copy is
// hashed: what is checked is exactly what the caller will hand out, even if
// the mapped file changed underneath.
func (r *Reader) loadChunk(dst []byte, idx int) error {
	want := r.rec.chunks[idx]
	wantLen := r.chunkLen(idx)
	gotLen := -1
	err := r.s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(chunkKey(want))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			gotLen = len(v)
			if len(v) == wantLen {
				copy(dst, v)
			}
			release(v)
			return nil
		})
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return &CorruptError{Blob: r.d, Chunk: idx, Detail: fmt.Sprintf("chunk %s is missing", want)}
	case err != nil:
		return fmt.Errorf("reading blob %s chunk %d: %w", r.d, idx, err)
	case gotLen != wantLen:
		return &CorruptError{Blob: r.d, Chunk: idx, Detail: fmt.Sprintf("chunk %s has %d bytes, want %d", want, gotLen, wantLen)}
	}
	if got := Sum(dst[:wantLen]); got != want {
		return &CorruptError{Blob: r.d, Chunk: idx, Detail: fmt.Sprintf("chunk bytes hash to %s, want %s", got, want)}
	}
	return nil
}

// WriteTo writes the rest of the blob to w (io.Copy uses it). It is
// pipelined: a goroutine reads and checks the next chunk while this one is
// written (and, for a read from offset 0, hashed into the whole digest), so
// checking and sending run on separate cores; w never receives a chunk's
// bytes before that chunk is checked. Memory: two chunks.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	if r.bad != nil {
		return 0, r.bad
	}
	if r.off >= r.rec.size {
		return 0, nil
	}
	type loaded struct {
		buf *[]byte
		idx int
		err error
	}
	cs := int64(r.rec.chunkSize)
	first, n := int(r.off/cs), len(r.rec.chunks)
	full := make(chan loaded, 1)
	free := make(chan *[]byte, 2)
	free <- r.chunkBuf()
	free <- r.chunkBuf()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for idx := first; idx < n; idx++ {
			var b *[]byte
			select {
			case b = <-free:
			case <-stop:
				return
			}
			err := r.ctx.Err()
			if err == nil {
				err = r.s.checkOpen()
			}
			if err == nil {
				err = r.loadChunk(*b, idx)
			}
			select {
			case full <- loaded{b, idx, err}:
			case <-stop:
				free <- b
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var total int64
	var err error
	for i := first; i < n && err == nil; i++ {
		l := <-full
		if err = l.err; err == nil {
			part := (*l.buf)[r.off-int64(l.idx)*cs : r.chunkLen(l.idx)]
			if err = r.hashSequential(part, r.off); err == nil {
				var m int
				m, err = w.Write(part)
				total += int64(m)
				r.off += int64(m)
			}
		}
		free <- l.buf
	}
	close(stop)
	<-done
	for len(full) > 0 {
		free <- (<-full).buf
	}
	for len(free) > 0 {
		r.s.putBuf(<-free)
	}
	return total, err
}

func (r *Reader) chunkBuf() *[]byte {
	b := r.s.getBuf()
	if len(*b) < r.rec.chunkSize {
		nb := make([]byte, r.rec.chunkSize)
		return &nb
	}
	return b
}
