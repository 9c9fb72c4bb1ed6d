package blob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// TestWriteToFromOffset covers the pipelined WriteTo from every kind of
// starting point, with and without the whole-file check.
func TestWriteToFromOffset(t *testing.T) {
	s := openTest(t, "", Options{})
	data := randBytes(40, 4*testChunk+123)
	d := mustPut(t, s, data)
	for _, skip := range []bool{false, true} {
		for _, off := range []int{0, 1, testChunk - 1, testChunk, 2*testChunk + 5, len(data) - 1, len(data)} {
			t.Run(fmt.Sprintf("skip=%v/off=%d", skip, off), func(t *testing.T) {
				r, err := s.Open(context.Background(), d)
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close()
				if skip {
					r.SkipWholeDigest()
				}
				if _, err := r.Seek(int64(off), io.SeekStart); err != nil {
					t.Fatal(err)
				}
				var buf bytes.Buffer
				n, err := r.WriteTo(&buf)
				if err != nil {
					t.Fatalf("WriteTo: %v", err)
				}
				if n != int64(len(data)-off) || !bytes.Equal(buf.Bytes(), data[off:]) {
					t.Errorf("WriteTo from %d: got %d bytes (equal %v), want %d", off, n, bytes.Equal(buf.Bytes(), data[off:]), len(data)-off)
				}
			})
		}
	}
}

// TestWriteToStopsAtCorruptChunk flips a byte of chunk 2 inside badger: a
// whole read, with or without the whole-file check, delivers chunks 0 and 1
// and then fails naming chunk 2, without handing out any of its bytes.
func TestWriteToStopsAtCorruptChunk(t *testing.T) {
	s := openTest(t, "", Options{})
	data := randBytes(41, 4*testChunk+9)
	d := mustPut(t, s, data)
	rec, err := s.blobRecord(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), data[2*testChunk:3*testChunk]...)
	bad[3] ^= 0x01
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(chunkKey(rec.chunks[2]), bad) }); err != nil {
		t.Fatal(err)
	}
	for _, skip := range []bool{false, true} {
		t.Run(fmt.Sprintf("skip=%v", skip), func(t *testing.T) {
			r, err := s.Open(context.Background(), d)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if skip {
				r.SkipWholeDigest()
			}
			var buf bytes.Buffer
			n, err := io.Copy(&buf, r)
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.Chunk != 2 || ce.Blob != d {
				t.Fatalf("io.Copy of a corrupted blob: got %v, want a CorruptError for chunk 2 of %s", err, d)
			}
			if n != 2*testChunk || !bytes.Equal(buf.Bytes(), data[:2*testChunk]) {
				t.Errorf("got %d bytes before the error, want the %d of the sound chunks 0 and 1", n, 2*testChunk)
			}
		})
	}
}

// TestForgedRecordCaughtByWholeDigest rewrites blob a's record, checksum
// and all, to list blob b's chunks: every chunk matches its digest, so only
// the whole-file check sees it. By default a sequential read fails before
// the last bytes; with SkipWholeDigest it does not (the caller then checks
// the digest itself, as blobhttp.Client does).
func TestForgedRecordCaughtByWholeDigest(t *testing.T) {
	s := openTest(t, "", Options{})
	a := randBytes(42, 3*testChunk+50)
	b := randBytes(43, len(a))
	da, db := mustPut(t, s, a), mustPut(t, s, b)
	forgeRecord(t, s, da, db)
	for _, read := range []struct {
		name string
		fn   func(r *Reader, w io.Writer) (int64, error)
	}{
		{"WriteTo", func(r *Reader, w io.Writer) (int64, error) { return r.WriteTo(w) }},
		{"Read", func(r *Reader, w io.Writer) (int64, error) {
			return io.CopyBuffer(w, struct{ io.Reader }{r}, make([]byte, 100))
		}},
	} {
		t.Run(read.name, func(t *testing.T) {
			r, err := s.Open(context.Background(), da)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			n, err := read.fn(r, io.Discard)
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.Chunk != -1 {
				t.Fatalf("reading a blob with a forged record: got %v, want a whole-file CorruptError", err)
			}
			if n >= int64(len(a)) {
				t.Errorf("all %d bytes were handed out before the mismatch was reported", n)
			}
		})
	}
	r, err := s.Open(context.Background(), da)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.SkipWholeDigest()
	var buf bytes.Buffer
	if _, err := r.WriteTo(&buf); err != nil || !bytes.Equal(buf.Bytes(), b) {
		t.Errorf("SkipWholeDigest read: got %d bytes, %v; want blob b's bytes (chunks check out)", buf.Len(), err)
	}
}

// forgeRecord makes blob victim's record list the chunks of blob source,
// with a valid checksum.
func forgeRecord(tb testing.TB, s *Store, victim, source Digest) {
	tb.Helper()
	src, err := s.blobRecord(context.Background(), source)
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(blobKey(victim), src.encode(victim)) }); err != nil {
		tb.Fatal(err)
	}
}
