package blob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

const testChunk = 1024

// openTest opens a store with small chunks in a temporary directory.
func openTest(tb testing.TB, dir string, opts Options) *Store {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	if opts.ChunkSize == 0 {
		opts.ChunkSize = testChunk
	}
	s, err := Open(dir, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func mustPut(tb testing.TB, s *Store, data []byte) Digest {
	tb.Helper()
	d := Sum(data)
	if err := s.Put(context.Background(), d, int64(len(data)), bytes.NewReader(data)); err != nil {
		tb.Fatalf("Put(%d bytes): %v", len(data), err)
	}
	return d
}

func readAll(tb testing.TB, s *Store, d Digest) ([]byte, error) {
	tb.Helper()
	r, err := s.Open(context.Background(), d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func countChunks(tb testing.TB, s *Store) int {
	tb.Helper()
	n := 0
	if err := s.scanKeys(context.Background(), []byte{kindChunk}, func([]byte) error { n++; return nil }); err != nil {
		tb.Fatal(err)
	}
	return n
}

func TestPutOpenRoundTrip(t *testing.T) {
	s := openTest(t, "", Options{})
	for _, n := range []int{0, 1, testChunk - 1, testChunk, testChunk + 1, 3*testChunk + 7} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			data := randBytes(uint64(n), n)
			d := mustPut(t, s, data)
			got, err := readAll(t, s, d)
			if err != nil {
				t.Fatalf("reading: %v", err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("got %d bytes, want the %d put", len(got), len(data))
			}
			info, err := s.Stat(context.Background(), d)
			if err != nil {
				t.Fatal(err)
			}
			if info.Size != int64(n) || int64(info.Chunks) != chunkCount(int64(n), testChunk) {
				t.Errorf("Stat = size %d, %d chunks; want %d, %d", info.Size, info.Chunks, n, chunkCount(int64(n), testChunk))
			}
			// WriteTo (io.Copy) takes the other read path.
			r, err := s.Open(context.Background(), d)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if _, err := io.Copy(&buf, r); err != nil {
				t.Fatalf("io.Copy: %v", err)
			}
			r.Close()
			if !bytes.Equal(buf.Bytes(), data) {
				t.Errorf("WriteTo got %d bytes, want the %d put", buf.Len(), len(data))
			}
		})
	}
}

func TestPutDefaultChunkSize(t *testing.T) {
	s := openTest(t, "", Options{ChunkSize: DefaultChunkSize})
	data := randBytes(7, 2*DefaultChunkSize+5)
	d := mustPut(t, s, data)
	got, err := readAll(t, s, d)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("round trip: %d bytes, err %v", len(got), err)
	}
}

func TestPutMismatch(t *testing.T) {
	data := randBytes(1, 3*testChunk+5)
	tests := []struct {
		name   string
		digest Digest
		size   int64
		body   []byte
		want   error
		field  string
	}{
		{"wrong digest", Sum([]byte("other")), int64(len(data)), data, ErrDigestMismatch, "digest"},
		{"short body", Sum(data), int64(len(data)) + 1, data, ErrSizeMismatch, "size"},
		{"long body", Sum(data), int64(len(data)) - 1, data, ErrSizeMismatch, "size"},
		{"long body, chunk-aligned size", Sum(data), testChunk, data, ErrSizeMismatch, "size"},
		{"empty body", Sum(data), int64(len(data)), nil, ErrSizeMismatch, "size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t, "", Options{})
			err := s.Put(context.Background(), tt.digest, tt.size, bytes.NewReader(tt.body))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Put error = %v, want %v", err, tt.want)
			}
			var me *MismatchError
			if !errors.As(err, &me) || me.Field != tt.field {
				t.Fatalf("Put error = %#v, want a *MismatchError about %s", err, tt.field)
			}
			if ok, _ := s.Has(context.Background(), tt.digest); ok {
				t.Errorf("blob %s visible after a refused Put", tt.digest)
			}
			// Whatever chunks were written are garbage, and Collect takes them.
			if _, err := s.Collect(context.Background(), func(Digest) bool { return true }, time.Hour); err != nil {
				t.Fatal(err)
			}
			if n := countChunks(t, s); n != 0 {
				t.Errorf("got %d chunks after Collect, want 0", n)
			}
		})
	}
}

func TestPutTooLarge(t *testing.T) {
	s := openTest(t, "", Options{MaxBlobSize: 10})
	data := randBytes(1, 11)
	if err := s.Put(context.Background(), Sum(data), 11, bytes.NewReader(data)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
}

func TestDedupe(t *testing.T) {
	s := openTest(t, "", Options{})
	a := randBytes(1, 4*testChunk)
	b := append(append([]byte(nil), a[:2*testChunk]...), randBytes(2, testChunk+3)...)
	mustPut(t, s, a)
	mustPut(t, s, b)
	mustPut(t, s, a) // again
	if got, want := countChunks(t, s), 4+2; got != want {
		t.Errorf("got %d chunks, want %d", got, want)
	}
}

func TestCorruptChunkDetected(t *testing.T) {
	s := openTest(t, "", Options{})
	data := randBytes(3, 3*testChunk+9)
	d := mustPut(t, s, data)
	rec, err := s.blobRecord(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	// Flip one byte of chunk 1 inside badger, keeping its key.
	bad := append([]byte(nil), data[testChunk:2*testChunk]...)
	bad[17] ^= 0x40
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(chunkKey(rec.chunks[1]), bad) }); err != nil {
		t.Fatal(err)
	}
	_, err = readAll(t, s, d)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Chunk != 1 || ce.Blob != d {
		t.Fatalf("reading a corrupted blob: got %v, want a CorruptError for chunk 1 of %s", err, d)
	}
	r, err := s.Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := make([]byte, 10)
	if _, err := r.ReadAt(p, 0); err != nil {
		t.Errorf("ReadAt in a sound chunk: %v", err)
	}
	if _, err := r.ReadAt(p, testChunk+5); !errors.Is(err, ErrCorrupt) {
		t.Errorf("ReadAt in the corrupted chunk: got %v, want ErrCorrupt", err)
	}
	// A missing chunk too.
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(chunkKey(rec.chunks[2])) }); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadAt(p, 2*testChunk); !errors.As(err, &ce) || ce.Chunk != 2 {
		t.Errorf("ReadAt in a missing chunk: got %v, want a CorruptError for chunk 2", err)
	}
}

func TestCorruptRecordDetected(t *testing.T) {
	s := openTest(t, "", Options{})
	d := mustPut(t, s, randBytes(4, 2*testChunk))
	err := s.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(blobKey(d))
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		v[40] ^= 1
		return txn.Set(blobKey(d), v)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(context.Background(), d); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with a damaged record: got %v, want ErrCorrupt", err)
	}
	// Collect refuses to sweep when it cannot trust a chunk list.
	if _, err := s.Collect(context.Background(), func(Digest) bool { return false }, 0); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Collect with a damaged record: got %v, want ErrCorrupt", err)
	}
}

func TestReadAtAndSeek(t *testing.T) {
	s := openTest(t, "", Options{})
	data := randBytes(5, 5*testChunk+100)
	d := mustPut(t, s, data)
	r, err := s.Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tests := []struct{ off, n int }{
		{0, 1}, {0, testChunk}, {testChunk - 1, 2}, {testChunk, testChunk}, {100, 3 * testChunk}, {len(data) - 1, 1}, {len(data) - 50, 50},
	}
	for _, tt := range tests {
		p := make([]byte, tt.n)
		n, err := r.ReadAt(p, int64(tt.off))
		if err != nil && !(err == io.EOF && tt.off+tt.n == len(data)) {
			t.Errorf("ReadAt(%d, %d): %v", tt.off, tt.n, err)
		}
		if n != tt.n || !bytes.Equal(p, data[tt.off:tt.off+tt.n]) {
			t.Errorf("ReadAt(%d, %d) got %d bytes (equal %v), want %d", tt.off, tt.n, n, bytes.Equal(p[:n], data[tt.off:tt.off+n]), tt.n)
		}
	}
	if _, err := r.ReadAt(make([]byte, 10), int64(len(data)-5)); err != io.EOF {
		t.Errorf("ReadAt past the end: got %v, want io.EOF", err)
	}
	if _, err := r.Seek(int64(-10), io.SeekEnd); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(rest, data[len(data)-10:]) {
		t.Errorf("read after Seek: %d bytes, %v", len(rest), err)
	}
}

// failingReader yields n bytes of data, then fails.
type failingReader struct {
	data []byte
	n    int
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("connection reset")
	}
	m := min(len(p), f.n, len(f.data))
	copy(p, f.data[:m])
	f.data, f.n = f.data[m:], f.n-m
	return m, nil
}

func TestUploadResumeAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	data := randBytes(6, 4*testChunk+321)
	s, err := Open(dir, Options{ChunkSize: testChunk})
	if err != nil {
		t.Fatal(err)
	}
	up, err := s.NewUpload(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	cut := 2*testChunk + 500
	info, err := s.Append(ctx, up.ID, "alice", 0, &failingReader{data: data, n: cut})
	if err == nil {
		t.Fatal("Append with a failing body returned nil")
	}
	if info.Offset != int64(cut) {
		t.Fatalf("after a broken append, offset = %d, want %d", info.Offset, cut)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, Options{})
	info, err = s.Upload(ctx, up.ID, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if info.Offset != int64(cut) {
		t.Fatalf("after restart, offset = %d, want %d", info.Offset, cut)
	}
	// Appending at a stale offset is refused and says where to resume.
	var oe *OffsetError
	if _, err := s.Append(ctx, up.ID, "alice", 0, bytes.NewReader(data)); !errors.As(err, &oe) || oe.Offset != int64(cut) {
		t.Fatalf("append at offset 0: got %v, want an OffsetError at %d", err, cut)
	}
	// Resume in two pieces, the first ending mid-chunk.
	mid := cut + 700
	if _, err := s.Append(ctx, up.ID, "alice", int64(cut), bytes.NewReader(data[cut:mid])); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, up.ID, "alice", int64(mid), bytes.NewReader(data[mid:])); err != nil {
		t.Fatal(err)
	}
	d := Sum(data)
	if ok, _ := s.Has(ctx, d); ok {
		t.Fatal("blob visible before Commit")
	}
	if _, err := s.Commit(ctx, up.ID, "alice", d, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t, s, d)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after commit: %d bytes, %v", len(got), err)
	}
	if _, err := s.Upload(ctx, up.ID, "alice"); !errors.Is(err, ErrNotFound) {
		t.Errorf("session after commit: got %v, want ErrNotFound", err)
	}
}

func TestUploadCommitMismatch(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, "", Options{})
	data := randBytes(8, 2*testChunk+1)
	for _, tt := range []struct {
		name   string
		digest Digest
		size   int64
		want   error
	}{
		{"digest", Sum([]byte("x")), -1, ErrDigestMismatch},
		{"size", Sum(data), int64(len(data)) + 1, ErrSizeMismatch},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up, err := s.NewUpload(ctx, "alice")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Append(ctx, up.ID, "alice", 0, bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Commit(ctx, up.ID, "alice", tt.digest, tt.size); !errors.Is(err, tt.want) {
				t.Fatalf("Commit: got %v, want %v", err, tt.want)
			}
			if ok, _ := s.Has(ctx, tt.digest); ok {
				t.Error("blob visible after a refused commit")
			}
			if _, err := s.Upload(ctx, up.ID, "alice"); !errors.Is(err, ErrNotFound) {
				t.Errorf("session after a refused commit: got %v, want ErrNotFound", err)
			}
		})
	}
	if _, err := s.Collect(ctx, func(Digest) bool { return true }, 0); err != nil {
		t.Fatal(err)
	}
	if n := countChunks(t, s); n != 0 {
		t.Errorf("got %d chunks after Collect, want 0", n)
	}
}

// clock is a settable time source for tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestUploadExpiry(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := openTest(t, "", Options{UploadExpiry: time.Hour, Now: clk.Now})
	up, err := s.NewUpload(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, up.ID, "alice", 0, bytes.NewReader(randBytes(9, 3*testChunk))); err != nil {
		t.Fatal(err)
	}
	clk.Add(59 * time.Minute)
	if _, err := s.Upload(ctx, up.ID, "alice"); err != nil {
		t.Fatalf("before expiry: %v", err)
	}
	clk.Add(2 * time.Minute) // the append extended nothing since; expired now
	st, err := s.Collect(ctx, func(Digest) bool { return true }, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.UploadsExpired != 1 || st.ChunksDeleted != 3 {
		t.Errorf("Collect = %+v, want 1 upload expired, 3 chunks deleted", st)
	}
	if _, err := s.Upload(ctx, up.ID, "alice"); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired session: got %v, want ErrNotFound", err)
	}
}

func TestCollectGrace(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := openTest(t, "", Options{Now: clk.Now})
	shared := randBytes(10, testChunk)
	kept := mustPut(t, s, append(append([]byte(nil), shared...), randBytes(11, testChunk)...))
	old := mustPut(t, s, append(append([]byte(nil), shared...), randBytes(12, 2*testChunk)...))
	clk.Add(2 * time.Hour)
	young := mustPut(t, s, randBytes(13, testChunk))
	touched := mustPut(t, s, randBytes(14, testChunk))
	clk.Add(time.Minute)

	referenced := func(d Digest) bool { return d == kept }
	st, err := s.Collect(ctx, referenced, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if st.BlobsDeleted != 1 || st.ChunksDeleted != 2 {
		t.Errorf("Collect = %+v, want 1 blob and 2 chunks deleted", st)
	}
	for d, want := range map[Digest]bool{kept: true, old: false, young: true} {
		if got, _ := s.Has(ctx, d); got != want {
			t.Errorf("Has(%s) = %v, want %v", d, got, want)
		}
	}
	if _, err := readAll(t, s, kept); err != nil {
		t.Errorf("kept blob unreadable after Collect: %v", err)
	}
	// Touch restarts the grace period.
	clk.Add(3 * time.Hour)
	if err := s.Touch(ctx, young); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Collect(ctx, referenced, time.Hour); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.Has(ctx, young); !ok {
		t.Error("touched blob collected within its grace period")
	}
	if ok, _ := s.Has(ctx, touched); ok {
		t.Error("untouched old blob survived Collect")
	}
}

func TestConcurrentPutsWithCollect(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, "", Options{})
	shared := randBytes(20, 2*testChunk)
	blobs := make([][]byte, 8)
	for i := range blobs {
		blobs[i] = append(append([]byte(nil), shared...), randBytes(uint64(21+i%4), 3*testChunk+i%4)...)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for round := 0; round < 3; round++ {
		for i := range blobs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b := blobs[i]
				if err := s.Put(ctx, Sum(b), int64(len(b)), bytes.NewReader(b)); err != nil {
					errs <- err
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Nothing is referenced, but the grace period protects fresh
			// blobs; chunk sweeping races with the Puts.
			if _, err := s.Collect(ctx, func(Digest) bool { return false }, time.Hour); err != nil && !errors.Is(err, ErrBusy) {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if _, err := s.Collect(ctx, func(Digest) bool { return false }, time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, b := range blobs {
		got, err := readAll(t, s, Sum(b))
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("blob %s after concurrent puts: %d bytes, %v", Sum(b), len(got), err)
		}
	}
}

func TestDurableAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{ChunkSize: testChunk})
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(30, 5*testChunk+1)
	d := mustPut(t, s, data)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, Options{})
	got, err := readAll(t, s, d)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after reopen: %d bytes, %v", len(got), err)
	}
}
