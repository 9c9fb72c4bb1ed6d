package blobhttp

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hallmark-dev/hallmark/registry/blob"
)

// newUpload starts an upload session and returns its location.
func newUpload(tb testing.TB, f *fixture) string {
	tb.Helper()
	resp, body := sendRaw(tb, f, http.MethodPost, "/v1/blobs/uploads", nil, nil)
	if resp.StatusCode != http.StatusCreated {
		tb.Fatalf("POST /v1/blobs/uploads: %d %s", resp.StatusCode, body)
	}
	return resp.Header.Get("Location")
}

// rawRequest sends head (request line and headers, without the blank line)
// on a new connection and returns the connection and a reader of it.
func rawRequest(tb testing.TB, f *fixture, head string) (*net.TCPConn, *bufio.Reader) {
	tb.Helper()
	c, err := net.Dial("tcp", f.srv.Listener.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, head+"\r\nHost: test\r\n\r\n"); err != nil {
		tb.Fatal(err)
	}
	return c.(*net.TCPConn), bufio.NewReader(c)
}

func readResponse(tb testing.TB, br *bufio.Reader) (*http.Response, []byte) {
	tb.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// A PATCH without Content-Length is held to MaxBlobSize while it is read:
// the bytes up to the limit are kept, the rest refused with 413.
func TestPatchWithoutLengthHeldToMaxBlobSize(t *testing.T) {
	f := newFixture(t, Options{MaxBlobSize: 1000})
	loc := newUpload(t, f)
	data := randBytes(6, 5000)
	// io.MultiReader hides the length, so net/http sends the body chunked.
	resp, body := sendRaw(t, f, http.MethodPatch, loc, io.MultiReader(bytes.NewReader(data)), map[string]string{HeaderUploadOffset: "0"})
	wantAPIError(t, resp, body, http.StatusRequestEntityTooLarge, "resource_exhausted", "past the limit of 1000 bytes per blob")
	if got := resp.Header.Get(HeaderUploadOffset); got != "1000" {
		t.Errorf("Upload-Offset after the refused PATCH: got %q, want 1000 (the bytes within the limit)", got)
	}
	resp, body = sendRaw(t, f, http.MethodPut, loc+"?digest="+blob.Sum(data).String(), nil, nil)
	if resp.StatusCode == http.StatusCreated {
		t.Fatalf("commit of an upload sent past the limit: %d %s", resp.StatusCode, body)
	}

	// Exactly the limit, chunked, is fine.
	loc = newUpload(t, f)
	data = data[:1000]
	resp, body = sendRaw(t, f, http.MethodPatch, loc, io.MultiReader(bytes.NewReader(data)), map[string]string{HeaderUploadOffset: "0"})
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("chunked PATCH of exactly MaxBlobSize: %d %s", resp.StatusCode, body)
	}
	resp, body = sendRaw(t, f, http.MethodPut, loc+"?digest="+blob.Sum(data).String(), nil, nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("commit of exactly MaxBlobSize: %d %s", resp.StatusCode, body)
	}
}

// A session that holds more than the handler's MaxBlobSize (filled before
// the limit was lowered) is not committed.
func TestCommitRefusesUploadOverMaxBlobSize(t *testing.T) {
	f := newFixture(t, Options{MaxBlobSize: 1000})
	data := randBytes(7, 2000)
	up, err := f.store.NewUpload(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Append(t.Context(), up.ID, "", 0, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	resp, body := sendRaw(t, f, http.MethodPut, "/v1/blobs/uploads/"+up.ID+"?digest="+blob.Sum(data).String(), nil, nil)
	wantAPIError(t, resp, body, http.StatusRequestEntityTooLarge, "resource_exhausted", "holds 2000 bytes, more than the limit of 1000 bytes")
	if ok, _ := f.store.Has(t.Context(), blob.Sum(data)); ok {
		t.Error("a blob over MaxBlobSize was committed")
	}
}

func TestRangesCheap(t *testing.T) {
	many := make([]string, maxRanges+1)
	for i := range many {
		many[i] = fmt.Sprintf("%d-%d", 2*i, 2*i)
	}
	for _, tc := range []struct {
		header string
		want   bool
	}{
		{"bytes=0-99", true},
		{"bytes=500-", true},
		{"bytes=-10", true},
		{"bytes=0-0,10-19,2000-2999", true},
		{"bytes=0-0, 5000-6000", true}, // the second satisfies nothing
		{"bytes=" + strings.Join(many[:maxRanges], ","), true},
		{"bytes=" + strings.Join(many, ","), false},
		{"bytes=1100-1100,0-0", false}, // descending: chunk 1, then chunk 0 again
		{"bytes=0-100,50-60", false},   // overlapping
		{"bytes=-10,0-5", false},       // the suffix is the blob's end
		{"bytes=0-9223372036854775807", true},
		{"bytes=junk", true}, // ServeContent refuses it
		{"items=0-1,0-1", true},
	} {
		if got := rangesCheap(tc.header, 3000); got != tc.want {
			t.Errorf("rangesCheap(%q): got %v, want %v", tc.header, got, tc.want)
		}
	}
}

// Range headers that would load chunks more than once (too many ranges,
// descending or overlapping ones) get the whole blob, as a plain GET would;
// a few ascending ranges get their parts.
func TestCostlyRangesServedWhole(t *testing.T) {
	f := newFixture(t, Options{})
	data := randBytes(8, 2*testChunk)
	d := mustUpload(t, f, data)
	var alternating []string
	for i := range 1000 {
		alternating = append(alternating, fmt.Sprintf("%d-%d", i, i), fmt.Sprintf("%d-%d", testChunk+i, testChunk+i))
	}
	for _, rng := range []string{
		"bytes=" + strings.Join(alternating, ","),
		fmt.Sprintf("bytes=%d-%d,0-0", testChunk, testChunk),
		"bytes=0-100,50-60",
	} {
		resp, body := sendRaw(t, f, http.MethodGet, "/v1/blobs/"+d.String(), nil, map[string]string{"Range": rng})
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
			t.Errorf("Range %.40q...: got %d with %d bytes, want 200 with the whole blob", rng, resp.StatusCode, len(body))
		}
	}
	resp, body := sendRaw(t, f, http.MethodGet, "/v1/blobs/"+d.String(), nil, map[string]string{"Range": "bytes=0-0,1100-1101"})
	if resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("two ascending ranges: got %d, want 206", resp.StatusCode)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "multipart/byteranges" ||
		!bytes.Contains(body, data[1100:1102]) {
		t.Errorf("two ascending ranges: got %s with %d bytes", resp.Header.Get("Content-Type"), len(body))
	}
}

// A download whose client stops reading is cut off after
// DownloadStallTimeout, so its handler returns and gives its chunk buffers
// back.
func TestStalledDownloadIsCutOff(t *testing.T) {
	dir := t.TempDir()
	// Large chunks and a blob larger than loopback socket buffers can
	// absorb, so that the server's writes block.
	s, err := blob.Open(dir, blob.Options{ChunkSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := bytes.Repeat(randBytes(9, 1<<20), 48)
	d := blob.Sum(data)
	if err := s.Put(t.Context(), d, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	h := NewHandler(s, Options{DownloadStallTimeout: 100 * time.Millisecond})
	returned := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		close(returned)
	}))
	defer srv.Close()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /v1/blobs/%s HTTP/1.1\r\nHost: test\r\n\r\n", d) // and read nothing
	select {
	case <-returned:
	case <-time.After(30 * time.Second):
		t.Fatal("the handler of a download whose client reads nothing did not return")
	}
	n, _ := io.Copy(io.Discard, c)
	if n >= int64(len(data)) {
		t.Errorf("the stalled client still received %d bytes, the whole blob", n)
	}
}

// An upload body that trickles in slower than MinUploadRate fails with 408
// and frees its slot, although it never stops for StallTimeout.
func TestSlowUploadTimesOut(t *testing.T) {
	f := newFixture(t, Options{MaxConcurrentUploads: 1, StallTimeout: 200 * time.Millisecond, MinUploadRate: 10 << 10})
	data := randBytes(10, 3*testChunk)
	conn, br := rawRequest(t, f, fmt.Sprintf("PUT /v1/blobs/%s HTTP/1.1\r\nContent-Length: %d", blob.Sum(data), len(data)))
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		// One byte every 10 ms: never a pause of StallTimeout, but 20 bytes
		// per 200 ms where 2 KiB are due.
		for i := range data {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if _, err := conn.Write(data[i : i+1]); err != nil {
				return
			}
		}
	}()
	resp, body := readResponse(t, br)
	wantAPIError(t, resp, body, http.StatusRequestTimeout, "deadline_exceeded", "fewer than the minimum of 10240 bytes per second")
	resp, body = sendRaw(t, f, http.MethodPut, "/v1/blobs/"+blob.Sum(data).String(), bytes.NewReader(data), nil)
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("upload after the slow one was cut: got %d %s, want 201", resp.StatusCode, body)
	}
}

// A PATCH whose body ends before its Content-Length is the client's error
// (400); the bytes that arrived are kept and Upload-Offset says so.
func TestPatchCutShortIsClientError(t *testing.T) {
	f := newFixture(t, Options{})
	loc := newUpload(t, f)
	data := randBytes(11, 3000)
	conn, br := rawRequest(t, f, fmt.Sprintf("PATCH %s HTTP/1.1\r\nContent-Length: %d\r\n%s: 0", loc, len(data), HeaderUploadOffset))
	if _, err := conn.Write(data[:1500]); err != nil {
		t.Fatal(err)
	}
	if err := conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	resp, body := readResponse(t, br)
	wantAPIError(t, resp, body, http.StatusBadRequest, "invalid_argument", "ended after 1500 bytes")
	if got := resp.Header.Get(HeaderUploadOffset); got != "1500" {
		t.Errorf("Upload-Offset: got %q, want 1500", got)
	}
	resp, _ = sendRaw(t, f, http.MethodHead, loc, nil, nil)
	if got, _ := strconv.Atoi(resp.Header.Get(HeaderUploadOffset)); got != 1500 {
		t.Errorf("the session kept %d bytes, want 1500", got)
	}
}
