package blobhttp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hallmark-dev/hallmark/registry/blob"
)

// fakeDisk is an Options.FreeSpace that reports free bytes and counts the
// questions.
type fakeDisk struct {
	free  atomic.Int64
	calls atomic.Int64
	// after, when positive, is the number of questions answered with free;
	// the later ones are answered with 0.
	after atomic.Int64
}

func (d *fakeDisk) FreeSpace() (int64, error) {
	n := d.calls.Add(1)
	if a := d.after.Load(); a > 0 && n > a {
		return 0, nil
	}
	return d.free.Load(), nil
}

const testMargin = 64 << 10

// newSpaceFixture is a fixture whose disk has free bytes, with a margin of
// testMargin.
func newSpaceFixture(t *testing.T, free int64) (*fixture, *fakeDisk) {
	disk := &fakeDisk{}
	disk.free.Store(free)
	f := newFixture(t, Options{MinFreeBytes: testMargin, FreeSpace: disk.FreeSpace})
	disk.calls.Store(0) // NewHandler's own look
	return f, disk
}

// Before reading a byte of an upload body, the handler refuses it with 507
// when the disk would be left with less than the margin: the requests below
// send their headers only, so an answer proves nothing was read, and the
// store holds nothing new.
func TestUploadRefusedBeforeAnyByteWhenDiskIsLow(t *testing.T) {
	data := randBytes(1, 4*testChunk)
	d := blob.Sum(data)
	// Room for the margin and one chunk: a body of unknown length may
	// start, one of 4 chunks may not.
	f, disk := newSpaceFixture(t, testMargin+testChunk+testChunk/2)
	loc := newUpload(t, f)

	c, br := rawRequest(t, f, fmt.Sprintf("PUT /v1/blobs/%s HTTP/1.1\r\nContent-Length: %d", d, len(data)))
	resp, body := readResponse(t, br)
	c.Close()
	wantAPIError(t, resp, body, http.StatusInsufficientStorage, "resource_exhausted", "insufficient storage")
	for _, want := range []string{fmt.Sprintf("has %d bytes free", testMargin+testChunk+testChunk/2), "needs 4096 bytes more", "keeps 65536 bytes free"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("PUT refusal %s does not say %q", body, want)
		}
	}
	if ok, err := f.store.Has(context.Background(), d); ok || err != nil {
		t.Errorf("after the refused PUT the store has the blob: %v, %v", ok, err)
	}

	c, br = rawRequest(t, f, fmt.Sprintf("PATCH %s HTTP/1.1\r\nUpload-Offset: 0\r\nContent-Length: %d", loc, len(data)))
	resp, body = readResponse(t, br)
	c.Close()
	wantAPIError(t, resp, body, http.StatusInsufficientStorage, "resource_exhausted", "needs 4096 bytes more")

	// A chunked body reserves a chunk at a time: one fits, so it may start.
	// With less room it may not.
	disk.free.Store(testMargin + testChunk/2)
	c, br = rawRequest(t, f, fmt.Sprintf("PATCH %s HTTP/1.1\r\nUpload-Offset: 0\r\nTransfer-Encoding: chunked", loc))
	resp, body = readResponse(t, br)
	c.Close()
	wantAPIError(t, resp, body, http.StatusInsufficientStorage, "resource_exhausted", fmt.Sprintf("needs %d bytes more", testChunk))

	id := strings.TrimPrefix(loc, "/v1/blobs/uploads/")
	if up, err := f.store.Upload(context.Background(), id, ""); err != nil || up.Offset != 0 {
		t.Errorf("after the refused PATCHes the session is %+v, %v; want offset 0", up, err)
	}

	// Once space is freed, the same uploads go through.
	disk.free.Store(1 << 40)
	resp, body = sendRaw(t, f, http.MethodPatch, loc, bytes.NewReader(data), map[string]string{HeaderUploadOffset: "0"})
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH with room: %d %s", resp.StatusCode, body)
	}
	resp, body = sendRaw(t, f, http.MethodPut, "/v1/blobs/"+d.String(), bytes.NewReader(data), nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT with room: %d %s", resp.StatusCode, body)
	}
	if got := f.h.reservedBytes(); got != 0 {
		t.Errorf("after the uploads %d bytes are still reserved", got)
	}
}

// A chunked PATCH is checked again every chunk: when the disk fills up
// midway, it stops there with 507, keeps the bytes before (as any PATCH
// that fails midway does) and can resume once there is room.
func TestChunkedPatchStopsWhereDiskFillsUp(t *testing.T) {
	data := randBytes(2, 10*testChunk)
	f, disk := newSpaceFixture(t, 1<<40)
	loc := newUpload(t, f)
	// Questions at offsets 0 (admission), 1, 2 and 3 chunks: the fourth
	// finds the disk full.
	disk.after.Store(3)

	// Hiding the reader's type makes the request chunked.
	resp, body := sendRaw(t, f, http.MethodPatch, loc, struct{ io.Reader }{bytes.NewReader(data)}, map[string]string{HeaderUploadOffset: "0"})
	wantAPIError(t, resp, body, http.StatusInsufficientStorage, "resource_exhausted", "has 0 bytes free")
	const kept = 3 * testChunk
	if got := resp.Header.Get(HeaderUploadOffset); got != strconv.Itoa(kept) {
		t.Errorf("Upload-Offset %q after the refusal, want %d", got, kept)
	}
	id := strings.TrimPrefix(loc, "/v1/blobs/uploads/")
	if up, err := f.store.Upload(context.Background(), id, ""); err != nil || up.Offset != kept {
		t.Fatalf("the session is %+v, %v; want offset %d", up, err, kept)
	}

	disk.after.Store(0)
	// The server closes a connection whose body it left unread; the
	// client's pool may still hold it, and a PATCH is not retried on a
	// fresh one (hallmark's client retries; this raw send does not).
	f.srv.Client().CloseIdleConnections()
	resp, body = sendRaw(t, f, http.MethodPatch, loc, bytes.NewReader(data[kept:]), map[string]string{HeaderUploadOffset: strconv.Itoa(kept)})
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("resuming PATCH: %d %s", resp.StatusCode, body)
	}
	d := blob.Sum(data)
	resp, body = sendRaw(t, f, http.MethodPut, loc+"?digest="+d.String(), nil, nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("commit: %d %s", resp.StatusCode, body)
	}
	var buf bytes.Buffer
	if _, err := f.client().Download(context.Background(), d, int64(len(data)), &buf); err != nil || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("Download after resuming: %d bytes, %v", buf.Len(), err)
	}
}

// The client treats 507 as final: one attempt, and the server's message in
// the error, whether the file goes in one PUT or a resumable upload.
func TestClientDoesNotRetryInsufficientStorage(t *testing.T) {
	for _, tc := range []struct {
		name         string
		size         int
		singlePutMax int64
	}{
		{"put", 3 << 20, 4 << 20}, // past what net/http drains after a refusal
		{"resumable", 3 << 20, 2 * testChunk},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, disk := newSpaceFixture(t, testMargin+testChunk)
			c := f.client()
			c.SinglePutMax = tc.singlePutMax
			_, err := c.Upload(context.Background(), writeFile(t, randBytes(3, tc.size)))
			var e *Error
			if !errors.As(err, &e) || e.StatusCode != http.StatusInsufficientStorage || e.Code != "resource_exhausted" {
				t.Fatalf("Upload: %v, want a 507 *Error", err)
			}
			if !strings.Contains(err.Error(), "insufficient storage") || !strings.Contains(err.Error(), "keeps 65536 bytes free") {
				t.Errorf("the error %q does not carry the server's message", err)
			}
			if n := disk.calls.Load(); n != 1 {
				t.Errorf("the server was asked %d times, want once (no retry)", n)
			}
		})
	}
}

// Concurrent uploads cannot together overrun the disk: each is checked
// against the free space less what the others may still write.
func TestSpaceReservationsAddUp(t *testing.T) {
	free := int64(1000)
	g := &spaceGuard{free: func() (int64, error) { return free, nil }, margin: 100, log: discardLogger()}
	var a, b int64
	if err := g.reserve(&a, 600, 0); err != nil {
		t.Fatal(err)
	}
	err := g.reserve(&b, 400, 0)
	var se *spaceError
	if !errors.As(err, &se) || se.reserved != 600 || se.need != 400 {
		t.Fatalf("second reservation: %v, want a refusal counting the first's 600 bytes", err)
	}
	if !strings.Contains(err.Error(), "uploads in progress hold 600 bytes") {
		t.Errorf("the refusal %q does not say what others hold", err)
	}
	// a reads 500 bytes, which land on the disk.
	g.consumed(&a, 500)
	free -= 500
	if err := g.reserve(&b, 300, 0); err != nil {
		t.Fatalf("after a's bytes were written: %v", err)
	}
	g.consumed(&a, -1)
	g.consumed(&b, -1)
	if g.reserved != 0 || a != 0 || b != 0 {
		t.Errorf("after release: reserved %d, a %d, b %d", g.reserved, a, b)
	}
	// Where the platform cannot tell, the check is off.
	g.free = func() (int64, error) { return 0, fmt.Errorf("statfs: %w", errors.ErrUnsupported) }
	if err := g.reserve(&a, 1<<40, 0); err != nil {
		t.Errorf("with free space unknown: %v", err)
	}
}

// The default margin is derived from the store's options and the number of
// concurrent uploads, and the store reports real free space.
func TestDefaultMinFree(t *testing.T) {
	f := newFixture(t, Options{MaxConcurrentUploads: 4})
	want := f.store.Headroom() + 4*2*testChunk + ledgerHeadroom
	if f.h.opts.MinFreeBytes != want {
		t.Errorf("default MinFreeBytes %d, want %d", f.h.opts.MinFreeBytes, want)
	}
	if f.store.Headroom() != 320<<20 {
		t.Errorf("store headroom with default options %d, want 320 MiB", f.store.Headroom())
	}
	free, err := f.store.FreeSpace()
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skip("free space unknown on this platform")
	}
	if err != nil || free <= 0 {
		t.Errorf("FreeSpace: %d, %v", free, err)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// reservedBytes reads the bytes the handler holds reserved.
func (h *Handler) reservedBytes() int64 {
	h.space.mu.Lock()
	defer h.space.mu.Unlock()
	return h.space.reserved
}

// TestSpaceGuardHugeLengths: a Content-Length near the largest int64 must
// not wrap the guard's arithmetic into admitting it, and a body of known
// length holds only a window of reservation, not all of it, so one slow
// upload cannot hold the free space that others need.
func TestSpaceGuardHugeLengths(t *testing.T) {
	g := &spaceGuard{free: func() (int64, error) { return 10_000, nil }, margin: 1000, log: discardLogger()}
	var a, b int64
	if err := g.reserve(&a, math.MaxInt64-10, 0); err == nil {
		t.Fatal("a reservation of MaxInt64-10 bytes was admitted")
	}
	if err := g.reserve(&a, 100, math.MaxInt64-10); err == nil {
		t.Fatal("a body of MaxInt64-10 bytes was admitted")
	}
	if a != 0 || g.reserved != 0 {
		t.Fatalf("refusals left %d / %d bytes reserved", a, g.reserved)
	}
	// A body of 8,000 bytes fits whole; it holds only its window (100).
	if err := g.reserve(&a, 100, 8000); err != nil {
		t.Fatal(err)
	}
	if err := g.reserve(&b, 100, 8000); err != nil {
		t.Fatalf("a second upload refused while the first holds only its window: %v", err)
	}
}

// TestPatchHugeContentLength: offset plus a Content-Length near the largest
// int64 wrapped past the size check; it is refused with 413.
func TestPatchHugeContentLength(t *testing.T) {
	f := newFixture(t, Options{})
	resp, _ := sendRaw(t, f, http.MethodPost, "/v1/blobs/uploads", nil, nil)
	loc := resp.Header.Get("Location")
	req, err := http.NewRequest(http.MethodPatch, f.srv.URL+loc, strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(HeaderUploadOffset, "1024")
	req.ContentLength = math.MaxInt64 - 1023
	// The client cannot send that many bytes; the server must answer from
	// the headers. Use a raw connection so net/http does not refuse to send.
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: x\r\n%s: 1024\r\nContent-Length: %d\r\n\r\nx", loc, HeaderUploadOffset, int64(math.MaxInt64-1023))
	br := bufio.NewReader(conn)
	got, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	if got.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("PATCH with offset 1024 and Content-Length MaxInt64-1023: status %d, want 413", got.StatusCode)
	}
}
