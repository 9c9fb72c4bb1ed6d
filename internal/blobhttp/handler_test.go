package blobhttp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hallmark-dev/hallmark/registry/blob"
)

const testChunk = 1024

type fixture struct {
	dir   string
	store *blob.Store
	h     *Handler
	srv   *httptest.Server
}

// newFixture starts a handler over a fresh store on 127.0.0.1.
func newFixture(tb testing.TB, opts Options) *fixture {
	tb.Helper()
	dir := tb.TempDir()
	s, err := blob.Open(dir, blob.Options{ChunkSize: testChunk})
	if err != nil {
		tb.Fatal(err)
	}
	h := NewHandler(s, opts)
	srv := httptest.NewServer(h)
	tb.Cleanup(func() {
		srv.Close()
		s.Close()
	})
	return &fixture{dir: dir, store: s, h: h, srv: srv}
}

func (f *fixture) client() *Client {
	return &Client{BaseURL: f.srv.URL, HTTP: f.srv.Client(), SinglePutMax: 2 * testChunk}
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func writeFile(tb testing.TB, data []byte) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "f")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

func sendRaw(tb testing.TB, f *fixture, method, path string, body io.Reader, hdr map[string]string) (*http.Response, []byte) {
	tb.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, body)
	if err != nil {
		tb.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if b, ok := body.(*bytes.Reader); ok {
		req.ContentLength = int64(b.Len())
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func wantAPIError(tb testing.TB, resp *http.Response, body []byte, status int, code, contains string) {
	tb.Helper()
	if resp.StatusCode != status {
		tb.Fatalf("got status %d (%s), want %d", resp.StatusCode, body, status)
	}
	var e apiError
	if err := json.Unmarshal(body, &e); err != nil {
		tb.Fatalf("error body %q is not JSON: %v", body, err)
	}
	if e.Code != code || !strings.Contains(e.Message, contains) {
		tb.Errorf("got error %+v, want code %q and a message containing %q", e, code, contains)
	}
}

func TestRoundTrip(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()
	for _, n := range []int{0, 1, testChunk - 1, testChunk, testChunk + 1, 2 * testChunk, 5*testChunk + 3} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			data := randBytes(uint64(n), n)
			c := f.client()
			var last atomic.Int64
			c.Progress = func(done, total int64) {
				if total != int64(n) {
					t.Errorf("progress total %d, want %d", total, n)
				}
				last.Store(done)
			}
			d, err := c.Upload(ctx, writeFile(t, data))
			if err != nil {
				t.Fatal(err)
			}
			if d != blob.Sum(data) {
				t.Fatalf("Upload returned %s, want %s", d, blob.Sum(data))
			}
			if n > 0 && last.Load() != int64(n) {
				t.Errorf("last progress %d, want %d", last.Load(), n)
			}
			var buf bytes.Buffer
			got, err := c.Download(ctx, d, int64(n), &buf)
			if err != nil {
				t.Fatal(err)
			}
			if got != int64(n) || !bytes.Equal(buf.Bytes(), data) {
				t.Fatalf("downloaded %d bytes (equal %v), want %d", got, bytes.Equal(buf.Bytes(), data), n)
			}
			// A second upload is skipped: the server has it.
			var sent atomic.Int64
			c.Progress = func(done, total int64) { sent.Add(1) }
			if _, err := c.Upload(ctx, writeFile(t, data)); err != nil {
				t.Fatal(err)
			}
			if sent.Load() != 1 {
				t.Errorf("re-upload reported progress %d times, want once (skipped)", sent.Load())
			}
		})
	}
}

func TestPutMismatch(t *testing.T) {
	f := newFixture(t, Options{})
	data := randBytes(1, 3*testChunk)
	other := blob.Sum([]byte("other"))
	resp, body := sendRaw(t, f, http.MethodPut, "/v1/blobs/"+other.String(), bytes.NewReader(data), nil)
	wantAPIError(t, resp, body, http.StatusBadRequest, "invalid_argument", "digest mismatch: declared "+other.String())
	resp, body = sendRaw(t, f, http.MethodPut, "/v1/blobs/sha256:abc", bytes.NewReader(data), nil)
	wantAPIError(t, resp, body, http.StatusBadRequest, "invalid_argument", "invalid digest")
	// Body longer than the blob whose digest is named.
	d := blob.Sum(data[:testChunk])
	resp, body = sendRaw(t, f, http.MethodPut, "/v1/blobs/"+d.String(), bytes.NewReader(data), nil)
	wantAPIError(t, resp, body, http.StatusBadRequest, "invalid_argument", "digest mismatch")
	for _, d := range []blob.Digest{other, d, blob.Sum(data)} {
		if ok, _ := f.store.Has(context.Background(), d); ok {
			t.Errorf("blob %s stored after a refused PUT", d)
		}
	}
	// Chunked bodies (no Content-Length) are refused.
	resp, body = sendRaw(t, f, http.MethodPut, "/v1/blobs/"+blob.Sum(data).String(), io.MultiReader(bytes.NewReader(data)), nil)
	wantAPIError(t, resp, body, http.StatusLengthRequired, "invalid_argument", "Content-Length is required")
}

func TestHeadRangeAndConditional(t *testing.T) {
	f := newFixture(t, Options{})
	data := randBytes(2, 4*testChunk+10)
	d, err := f.client().Upload(context.Background(), writeFile(t, data))
	if err != nil {
		t.Fatal(err)
	}
	path := "/v1/blobs/" + d.String()
	resp, _ := sendRaw(t, f, http.MethodHead, path, nil, nil)
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(data)) || resp.Header.Get("ETag") != `"`+d.String()+`"` {
		t.Errorf("HEAD: status %d, length %d, ETag %q", resp.StatusCode, resp.ContentLength, resp.Header.Get("ETag"))
	}
	for _, r := range []struct{ hdr, from, to string }{{"bytes=0-0", "0", "1"}, {"bytes=1000-3000", "1000", "3001"}, {"bytes=-5", "", ""}} {
		resp, body := sendRaw(t, f, http.MethodGet, path, nil, map[string]string{"Range": r.hdr})
		var want []byte
		switch r.hdr {
		case "bytes=0-0":
			want = data[:1]
		case "bytes=1000-3000":
			want = data[1000:3001]
		default:
			want = data[len(data)-5:]
		}
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, want) {
			t.Errorf("GET %s: status %d, %d bytes, want 206 and %d bytes", r.hdr, resp.StatusCode, len(body), len(want))
		}
	}
	resp, _ = sendRaw(t, f, http.MethodGet, path, nil, map[string]string{"If-None-Match": `"` + d.String() + `"`})
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("conditional GET: status %d, want 304", resp.StatusCode)
	}
	resp, _ = sendRaw(t, f, http.MethodGet, path, nil, map[string]string{"Range": fmt.Sprintf("bytes=%d-", len(data)+5)})
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("range past the end: status %d, want 416", resp.StatusCode)
	}
	missing := blob.Sum([]byte("missing"))
	resp, body := sendRaw(t, f, http.MethodGet, "/v1/blobs/"+missing.String(), nil, nil)
	wantAPIError(t, resp, body, http.StatusNotFound, "not_found", missing.String())
}

// TestCorruptChunkDetectedOnGet flips a byte of a chunk inside badger: a
// whole download and a range over that chunk fail, with the server
// checking chunk digests only (the default) and with WholeDigest.
func TestCorruptChunkDetectedOnGet(t *testing.T) {
	for _, opts := range []Options{{}, {WholeDigest: true}} {
		t.Run(fmt.Sprintf("WholeDigest=%v", opts.WholeDigest), func(t *testing.T) { testCorruptChunkDetectedOnGet(t, opts) })
	}
}

func testCorruptChunkDetectedOnGet(t *testing.T, opts Options) {
	dir := t.TempDir()
	s, err := blob.Open(dir, blob.Options{ChunkSize: testChunk})
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(3, 3*testChunk+7)
	d := blob.Sum(data)
	if err := s.Put(context.Background(), d, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Damage chunk 1 in place, by the documented key layout: 'c' + digest.
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	chunk := data[testChunk : 2*testChunk]
	bad := append([]byte(nil), chunk...)
	bad[100] ^= 0xff
	key := append([]byte{'c'}, func() []byte { c := blob.Sum(chunk); return c[:] }()...)
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set(key, bad) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err = blob.Open(dir, blob.Options{ChunkSize: testChunk})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewHandler(s, opts))
	defer func() { srv.Close(); s.Close() }()
	c := &Client{BaseURL: srv.URL, HTTP: srv.Client(), Retries: 2}
	var buf bytes.Buffer
	n, err := c.Download(context.Background(), d, int64(len(data)), &buf)
	if err == nil {
		t.Fatal("Download of a corrupted blob succeeded")
	}
	if n > testChunk || bytes.Contains(buf.Bytes(), bad[90:110]) {
		t.Errorf("corrupted bytes were served: got %d bytes", n)
	}
	// A range inside the bad chunk fails too; one in a sound chunk works.
	f := &fixture{srv: srv, store: s}
	resp, body := sendRaw(t, f, http.MethodGet, "/v1/blobs/"+d.String(), nil, map[string]string{"Range": "bytes=0-99"})
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[:100]) {
		t.Errorf("range in a sound chunk: status %d, %d bytes", resp.StatusCode, len(body))
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/blobs/"+d.String(), nil)
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", testChunk+50, testChunk+150))
	resp, err = srv.Client().Do(req)
	if err == nil {
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Errorf("range in the corrupted chunk: got a complete %d-byte body, want a broken response", len(body))
		}
	}
}

// breakingTransport cuts the body of the first PATCH after n bytes, as a
// dropped connection would.
type breakingTransport struct {
	base    http.RoundTripper
	n       int64
	broken  atomic.Bool
	offsets []string
	mu      sync.Mutex
}

func (b *breakingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPatch {
		b.mu.Lock()
		b.offsets = append(b.offsets, req.Header.Get(HeaderUploadOffset))
		b.mu.Unlock()
		if !b.broken.Swap(true) {
			req = req.Clone(req.Context())
			req.Body = io.NopCloser(io.MultiReader(io.LimitReader(req.Body, b.n), errReader{}))
		}
	}
	return b.base.RoundTrip(req)
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection dropped") }

func TestResumeAfterInterruptedUpload(t *testing.T) {
	f := newFixture(t, Options{})
	data := randBytes(4, 9*testChunk+77)
	bt := &breakingTransport{base: f.srv.Client().Transport, n: 4*testChunk + 300}
	c := f.client()
	c.HTTP = &http.Client{Transport: bt}
	d, err := c.Upload(context.Background(), writeFile(t, data))
	if err != nil {
		t.Fatal(err)
	}
	if len(bt.offsets) < 2 || bt.offsets[0] != "0" || bt.offsets[len(bt.offsets)-1] == "0" {
		t.Errorf("PATCH offsets %v: want a first PATCH at 0 and a resumed one past it", bt.offsets)
	}
	var buf bytes.Buffer
	if _, err := c.Download(context.Background(), d, int64(len(data)), &buf); err != nil || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("after resume: %d bytes, %v", buf.Len(), err)
	}
}

func TestUploadProtocolErrors(t *testing.T) {
	f := newFixture(t, Options{})
	resp, body := sendRaw(t, f, http.MethodPost, "/v1/blobs/uploads", nil, nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST uploads: %d %s", resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	data := randBytes(5, 2*testChunk+5)
	resp, body = sendRaw(t, f, http.MethodPatch, loc, bytes.NewReader(data[:100]), map[string]string{HeaderUploadOffset: "0"})
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get(HeaderUploadOffset) != "100" {
		t.Fatalf("PATCH: %d %s, offset %q", resp.StatusCode, body, resp.Header.Get(HeaderUploadOffset))
	}
	resp, body = sendRaw(t, f, http.MethodPatch, loc, bytes.NewReader(data[50:]), map[string]string{HeaderUploadOffset: "50"})
	wantAPIError(t, resp, body, http.StatusConflict, "failed_precondition", "upload is at offset 100")
	if resp.Header.Get(HeaderUploadOffset) != "100" {
		t.Errorf("offset conflict: Upload-Offset %q, want 100", resp.Header.Get(HeaderUploadOffset))
	}
	resp, body = sendRaw(t, f, http.MethodPatch, loc, bytes.NewReader(data[100:]), nil)
	wantAPIError(t, resp, body, http.StatusBadRequest, "invalid_argument", HeaderUploadOffset)
	resp, body = sendRaw(t, f, http.MethodPatch, loc, bytes.NewReader(data[100:]), map[string]string{HeaderUploadOffset: "100"})
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH: %d %s", resp.StatusCode, body)
	}
	resp, _ = sendRaw(t, f, http.MethodHead, loc, nil, nil)
	if resp.Header.Get(HeaderUploadOffset) != fmt.Sprint(len(data)) {
		t.Errorf("HEAD upload: offset %q, want %d", resp.Header.Get(HeaderUploadOffset), len(data))
	}
	wrong := blob.Sum([]byte("wrong"))
	resp, body = sendRaw(t, f, http.MethodPut, loc+"?digest="+wrong.String(), nil, nil)
	wantAPIError(t, resp, body, http.StatusBadRequest, "invalid_argument", "digest mismatch")
	resp, _ = sendRaw(t, f, http.MethodHead, loc, nil, nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("upload after a refused commit: status %d, want 404", resp.StatusCode)
	}
	resp, body = sendRaw(t, f, http.MethodPatch, "/v1/blobs/uploads/nope", bytes.NewReader(data), map[string]string{HeaderUploadOffset: "0"})
	wantAPIError(t, resp, body, http.StatusNotFound, "not_found", "nope")
}

func TestLimits(t *testing.T) {
	t.Run("too large", func(t *testing.T) {
		f := newFixture(t, Options{MaxBlobSize: 1000})
		data := randBytes(6, 1001)
		resp, body := sendRaw(t, f, http.MethodPut, "/v1/blobs/"+blob.Sum(data).String(), bytes.NewReader(data), nil)
		wantAPIError(t, resp, body, http.StatusRequestEntityTooLarge, "resource_exhausted", "exceeds the limit of 1000 bytes")
		resp, _ = sendRaw(t, f, http.MethodPost, "/v1/blobs/uploads", nil, nil)
		loc := resp.Header.Get("Location")
		resp, body = sendRaw(t, f, http.MethodPatch, loc, bytes.NewReader(data), map[string]string{HeaderUploadOffset: "0"})
		wantAPIError(t, resp, body, http.StatusRequestEntityTooLarge, "resource_exhausted", "exceeds the limit")
	})
	t.Run("concurrent uploads", func(t *testing.T) {
		f := newFixture(t, Options{MaxConcurrentUploads: 1})
		data := randBytes(7, 3*testChunk)
		pr, pw := io.Pipe()
		done := make(chan *http.Response)
		go func() {
			req, _ := http.NewRequest(http.MethodPut, f.srv.URL+"/v1/blobs/"+blob.Sum(data).String(), pr)
			req.ContentLength = int64(len(data))
			resp, err := f.srv.Client().Do(req)
			if err != nil {
				t.Error(err)
			}
			done <- resp
		}()
		defer pw.Close() // a failure below must not leave the first upload (and the fixture's cleanup) hanging
		pw.Write(data[:10])
		// The pipe hands bytes to the client's transport, not to the
		// handler: wait until the first upload really holds the only slot,
		// or the second could take it first.
		for len(f.h.uploads) == 0 {
			time.Sleep(time.Millisecond)
		}
		resp, body := sendRaw(t, f, http.MethodPut, "/v1/blobs/"+blob.Sum(data).String(), bytes.NewReader(data), nil)
		wantAPIError(t, resp, body, http.StatusTooManyRequests, "resource_exhausted", "uploads already in progress")
		if resp.Header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
		pw.Write(data[10:])
		pw.Close()
		if r := <-done; r == nil || r.StatusCode != http.StatusCreated {
			t.Errorf("first upload: %v", r)
		} else {
			r.Body.Close()
		}
	})
	t.Run("stalled body", func(t *testing.T) {
		f := newFixture(t, Options{StallTimeout: 100 * time.Millisecond})
		data := randBytes(8, 3*testChunk)
		pr, pw := io.Pipe()
		defer pw.Close()
		req, _ := http.NewRequest(http.MethodPut, f.srv.URL+"/v1/blobs/"+blob.Sum(data).String(), pr)
		req.ContentLength = int64(len(data))
		go pw.Write(data[:10]) // then nothing
		resp, err := f.srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 400 {
				t.Errorf("stalled upload: status %d, want a failure", resp.StatusCode)
			}
		}
		if ok, _ := f.store.Has(context.Background(), blob.Sum(data)); ok {
			t.Error("stalled upload stored")
		}
	})
	t.Run("authorize", func(t *testing.T) {
		f := newFixture(t, Options{Authorize: func(r *http.Request, write bool) error {
			switch {
			case r.Header.Get("Authorization") == "":
				return fmt.Errorf("no bearer token: %w", ErrUnauthenticated)
			case write && r.Header.Get("Authorization") != "Bearer writer":
				return fmt.Errorf("token may not upload: %w", ErrPermissionDenied)
			}
			return nil
		}})
		data := randBytes(9, 100)
		p := writeFile(t, data)
		c := f.client()
		var e *Error
		if _, err := c.Upload(context.Background(), p); !errors.As(err, &e) || e.StatusCode != 401 {
			t.Errorf("no token: got %v, want 401", err)
		}
		c.Token = "reader"
		if _, err := c.Upload(context.Background(), p); !errors.As(err, &e) || e.StatusCode != 403 || e.Code != "permission_denied" {
			t.Errorf("read token: got %v, want 403", err)
		}
		c.Token = "writer"
		d, err := c.Upload(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		c.Token = "reader"
		if _, err := c.Download(context.Background(), d, int64(len(data)), io.Discard); err != nil {
			t.Errorf("read token download: %v", err)
		}
	})
}

func TestConcurrentUploads(t *testing.T) {
	f := newFixture(t, Options{MaxConcurrentUploads: 64})
	files := make([][]byte, 4)
	for i := range files {
		files[i] = randBytes(uint64(10+i), 3*testChunk+i)
	}
	var wg sync.WaitGroup
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := files[i%len(files)]
			c := f.client()
			c.SinglePutMax = int64(i%2) * 1 << 20 // half resumable, half single PUT
			if _, err := c.Upload(context.Background(), writeFile(t, data)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for _, data := range files {
		var buf bytes.Buffer
		if _, err := f.client().Download(context.Background(), blob.Sum(data), int64(len(data)), &buf); err != nil || !bytes.Equal(buf.Bytes(), data) {
			t.Errorf("blob %s: %d bytes, %v", blob.Sum(data), buf.Len(), err)
		}
	}
}

func TestCollectThenGet(t *testing.T) {
	f := newFixture(t, Options{})
	keep, drop := randBytes(20, 2*testChunk), randBytes(21, 2*testChunk)
	c := f.client()
	kd, err := c.Upload(context.Background(), writeFile(t, keep))
	if err != nil {
		t.Fatal(err)
	}
	dd, err := c.Upload(context.Background(), writeFile(t, drop))
	if err != nil {
		t.Fatal(err)
	}
	// A long grace protects both; none protects the unreferenced one.
	if st, err := f.store.Collect(context.Background(), func(d blob.Digest) bool { return d == kd }, time.Hour); err != nil || st.BlobsDeleted != 0 {
		t.Fatalf("Collect with grace: %+v, %v", st, err)
	}
	if st, err := f.store.Collect(context.Background(), func(d blob.Digest) bool { return d == kd }, 0); err != nil || st.BlobsDeleted != 1 {
		t.Fatalf("Collect without grace: %+v, %v", st, err)
	}
	if _, err := c.Stat(context.Background(), dd); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("collected blob: got %v, want ErrNotFound", err)
	}
	if _, err := c.Download(context.Background(), kd, int64(len(keep)), io.Discard); err != nil {
		t.Errorf("kept blob: %v", err)
	}
}

func TestDownloadDetectsWrongBytes(t *testing.T) {
	data := randBytes(30, 5000)
	d := blob.Sum(data)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bad := append([]byte(nil), data...)
		bad[4000] ^= 1
		w.Write(bad)
	}))
	defer srv.Close()
	c := &Client{BaseURL: srv.URL, HTTP: srv.Client()}
	if _, err := c.Download(context.Background(), d, int64(len(data)), io.Discard); !errors.Is(err, blob.ErrDigestMismatch) {
		t.Errorf("got %v, want ErrDigestMismatch", err)
	}
}
