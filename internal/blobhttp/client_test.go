package blobhttp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hallmark-dev/hallmark/registry/blob"
)

func TestUploadDigest(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()
	// 3 chunks: one PUT; 9 chunks: a resumable upload (SinglePutMax is 2 chunks).
	for _, n := range []int{3 * testChunk, 9*testChunk + 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			data := randBytes(uint64(100+n), n)
			path := writeFile(t, data)
			d := blob.Sum(data)
			c := f.client()
			if err := c.UploadDigest(ctx, path, d, int64(n)); err != nil {
				t.Fatalf("UploadDigest with the right digest: %v", err)
			}
			if got, err := c.Stat(ctx, d); err != nil || got != int64(n) {
				t.Fatalf("Stat after upload: %d, %v; want %d", got, err, n)
			}

			// The file changed after it was hashed: same size, other bytes.
			changed := randBytes(uint64(200+n), n)
			stale := blob.Sum(changed[:n-1]) // any digest but the bytes'
			if err := os.WriteFile(path, changed, 0o600); err != nil {
				t.Fatal(err)
			}
			err := c.UploadDigest(ctx, path, stale, int64(n))
			if !errors.Is(err, blob.ErrDigestMismatch) {
				t.Fatalf("UploadDigest of changed bytes: got %v, want ErrDigestMismatch", err)
			}
			var e *Error
			if !errors.As(err, &e) || e.Mismatch == nil || e.Mismatch.Expected != stale.String() || e.Mismatch.Actual != blob.Sum(changed).String() {
				t.Errorf("got error %#v, want a server *Error whose Mismatch declares %s and received %s", e, stale, blob.Sum(changed))
			}
			if _, err := c.Stat(ctx, stale); !errors.Is(err, blob.ErrNotFound) {
				t.Errorf("Stat of the refused blob: got %v, want ErrNotFound", err)
			}

			// A size that differs from the file's is refused before sending.
			err = c.UploadDigest(ctx, path, blob.Sum(changed), int64(n+1))
			if !errors.Is(err, blob.ErrSizeMismatch) {
				t.Errorf("UploadDigest with the wrong size: got %v, want ErrSizeMismatch", err)
			}
		})
	}
}

// cuttingTransport ends the body of the first GET after n bytes, as a
// dropped connection would, and records the Range of every GET.
type cuttingTransport struct {
	base   http.RoundTripper
	n      int64
	cut    atomic.Bool
	ranges []string
}

func (c *cuttingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet {
		return resp, err
	}
	c.ranges = append(c.ranges, req.Header.Get("Range"))
	if !c.cut.Swap(true) {
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(io.LimitReader(resp.Body, c.n), errReader{}), resp.Body}
	}
	return resp, nil
}

func TestDownloadResumesAfterCut(t *testing.T) {
	f := newFixture(t, Options{})
	// More than a few of the client's receive buffers, cut mid-buffer.
	data := randBytes(7, 4*copyBufSize+3*testChunk)
	d := mustUpload(t, f, data)
	ct := &cuttingTransport{base: f.srv.Client().Transport, n: 2*copyBufSize + 1234}
	c := f.client()
	c.HTTP = &http.Client{Transport: ct}
	var last atomic.Int64
	c.Progress = func(done, _ int64) { last.Store(done) }
	var buf bytes.Buffer
	n, err := c.Download(context.Background(), d, int64(len(data)), &buf)
	if err != nil || n != int64(len(data)) || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("Download after a cut: %d bytes (equal %v), %v", n, bytes.Equal(buf.Bytes(), data), err)
	}
	want := fmt.Sprintf("bytes=%d-", ct.n)
	if len(ct.ranges) != 2 || ct.ranges[0] != "" || ct.ranges[1] != want {
		t.Errorf("GET ranges %q, want a whole GET and then %q", ct.ranges, want)
	}
	if last.Load() != int64(len(data)) {
		t.Errorf("last progress %d, want %d", last.Load(), len(data))
	}
}

// failingWriter accepts n bytes, then fails.
type failingWriter struct{ n int }

var errDiskFull = errors.New("disk full")

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		m := w.n
		w.n = 0
		return m, errDiskFull
	}
	w.n -= len(p)
	return len(p), nil
}

func TestDownloadWriterFails(t *testing.T) {
	f := newFixture(t, Options{})
	data := randBytes(8, 3*copyBufSize)
	d := mustUpload(t, f, data)
	c := f.client()
	c.Retries = 1
	n, err := c.Download(context.Background(), d, int64(len(data)), &failingWriter{n: copyBufSize + 10})
	if !errors.Is(err, errDiskFull) {
		t.Fatalf("Download into a failing writer: got %v, want errDiskFull", err)
	}
	if n != copyBufSize+10 {
		t.Errorf("Download reported %d bytes written, want the %d the writer took", n, copyBufSize+10)
	}
}

// TestWholeDigestOption serves with the server's whole-file check on: the
// bytes are the same (TestCorruptChunkDetectedOnGet covers corruption).
func TestWholeDigestOption(t *testing.T) {
	f := newFixture(t, Options{WholeDigest: true})
	data := randBytes(9, 5*testChunk+17)
	d := mustUpload(t, f, data)
	var buf bytes.Buffer
	if _, err := f.client().Download(context.Background(), d, int64(len(data)), &buf); err != nil || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("Download: %d bytes, %v", buf.Len(), err)
	}
}

func mustUpload(tb testing.TB, f *fixture, data []byte) blob.Digest {
	tb.Helper()
	d := blob.Sum(data)
	if err := f.store.Put(context.Background(), d, int64(len(data)), bytes.NewReader(data)); err != nil {
		tb.Fatal(err)
	}
	return d
}

// hostileServer answers every GET with n bytes, announced or chunked, and
// counts what it managed to write.
func hostileServer(t *testing.T, n int, announce bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if announce {
			w.Header().Set("Content-Length", strconv.Itoa(n))
		}
		buf := make([]byte, 1<<20)
		for sent := 0; sent < n; sent += len(buf) {
			if _, err := w.Write(buf[:min(len(buf), n-sent)]); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// Download never takes more than the expected size plus one byte, whatever
// the server sends, and refuses an announced wrong size before reading.
func TestDownloadStopsAtExpectedSize(t *testing.T) {
	want := []byte("a 14-byte file")
	d := blob.Sum(want)
	for _, tc := range []struct {
		name     string
		announce bool
		most     int64 // bytes w may receive
	}{
		{"chunked", false, int64(len(want)) + 1},
		{"announced", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := hostileServer(t, 64<<20, tc.announce)
			c := &Client{BaseURL: srv.URL, HTTP: srv.Client()}
			var buf bytes.Buffer
			n, err := c.Download(t.Context(), d, int64(len(want)), &buf)
			if !errors.Is(err, blob.ErrSizeMismatch) {
				t.Errorf("got %v, want ErrSizeMismatch", err)
			}
			if n > tc.most || int64(buf.Len()) > tc.most {
				t.Errorf("received %d bytes (wrote %d), want at most %d", n, buf.Len(), tc.most)
			}
		})
	}
}

// DownloadAtMost refuses a blob larger than its limit the same way.
func TestDownloadAtMostStopsAtLimit(t *testing.T) {
	const limit = 1 << 20
	d := blob.Sum([]byte("bundle"))
	for _, announce := range []bool{false, true} {
		srv := hostileServer(t, 64<<20, announce)
		c := &Client{BaseURL: srv.URL, HTTP: srv.Client()}
		n, err := c.DownloadAtMost(t.Context(), d, limit, io.Discard)
		if !errors.Is(err, blob.ErrTooLarge) || !strings.Contains(err.Error(), "limit of 1048576 bytes") {
			t.Errorf("announce %v: got %v, want ErrTooLarge naming the limit", announce, err)
		}
		if n > limit+1 {
			t.Errorf("announce %v: received %d bytes, want at most %d", announce, n, limit+1)
		}
	}
	// Within the limit it is a plain download.
	f := newFixture(t, Options{})
	data := randBytes(12, 3*testChunk)
	var buf bytes.Buffer
	if _, err := f.client().DownloadAtMost(t.Context(), mustUpload(t, f, data), limit, &buf); err != nil || !bytes.Equal(buf.Bytes(), data) {
		t.Errorf("DownloadAtMost within the limit: %d bytes, %v", buf.Len(), err)
	}
}
