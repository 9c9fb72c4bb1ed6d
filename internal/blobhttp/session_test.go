package blobhttp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hallmark-dev/hallmark/registry/blob"
)

// bearerPrincipals admits any bearer token and names its text as the
// principal: "Bearer alice" is alice. "Bearer ghost" is refused by
// Principal (as a token revoked between the two hooks would be), and
// "Bearer nobody" gets an empty name.
func bearerPrincipals() Options {
	return Options{
		Authorize: func(r *http.Request, write bool) error {
			if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
				return fmt.Errorf("no bearer token: %w", ErrUnauthenticated)
			}
			return nil
		},
		Principal: func(r *http.Request) (string, error) {
			p := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			switch p {
			case "ghost":
				return "", fmt.Errorf("token revoked: %w", ErrUnauthenticated)
			case "nobody":
				return "", nil
			}
			return p, nil
		},
	}
}

func as(who string) map[string]string { return map[string]string{"Authorization": "Bearer " + who} }

// answer is what a caller learns from a response.
type answer struct {
	status  int
	body    string
	headers string // the protocol's headers, which must not leak a session's state
}

func send(t *testing.T, f *fixture, method, path string, body []byte, hdr map[string]string) answer {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	resp, b := sendRaw(t, f, method, path, r, hdr)
	var h []string
	for _, k := range []string{HeaderUploadOffset, HeaderUploadExpires, "Location", "Retry-After"} {
		if v := resp.Header.Get(k); v != "" {
			h = append(h, k+": "+v)
		}
	}
	return answer{resp.StatusCode, string(b), strings.Join(h, "; ")}
}

// A resumable upload session belongs to the principal that created it.
// Another principal with the same rights gets, for every request on it,
// the answer an id that does not exist gets, byte for byte, and changes
// nothing; the owner carries on.
func TestUploadSessionBoundToPrincipal(t *testing.T) {
	f := newFixture(t, bearerPrincipals())
	data := randBytes(30, 3*testChunk+17)
	d := blob.Sum(data)
	resp, body := sendRaw(t, f, http.MethodPost, "/v1/blobs/uploads", nil, as("alice"))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST as alice: %d %s", resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	const kept = testChunk + 5
	if a := send(t, f, http.MethodPatch, loc, data[:kept], map[string]string{"Authorization": "Bearer alice", HeaderUploadOffset: "0"}); a.status != http.StatusNoContent {
		t.Fatalf("PATCH as alice: %+v", a)
	}

	// bob's requests, each as a session's owner would make it.
	type request struct {
		name, method, path string
		body               []byte
		hdr                map[string]string
	}
	bob := func(extra map[string]string) map[string]string {
		h := as("bob")
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	requests := []request{
		{"HEAD", http.MethodHead, loc, nil, bob(nil)},
		{"PATCH at the session's offset", http.MethodPatch, loc, data[kept:], bob(map[string]string{HeaderUploadOffset: fmt.Sprint(kept)})},
		{"PATCH at another offset", http.MethodPatch, loc, data, bob(map[string]string{HeaderUploadOffset: "0"})},
		{"PUT", http.MethodPut, loc + "?digest=" + d.String(), nil, bob(nil)},
		{"PUT with the size", http.MethodPut, loc + "?digest=" + d.String() + "&size=" + fmt.Sprint(kept), nil, bob(nil)},
		{"DELETE", http.MethodDelete, loc, nil, bob(nil)},
	}
	refused := make([]answer, len(requests))
	for i, rq := range requests {
		refused[i] = send(t, f, rq.method, rq.path, rq.body, rq.hdr)
		if refused[i].status != http.StatusNotFound || refused[i].headers != "" {
			t.Errorf("%s as bob: got %+v, want 404 without the protocol's headers", rq.name, refused[i])
		}
	}
	if a := send(t, f, http.MethodHead, loc, nil, as("alice")); a.status != http.StatusNoContent || !strings.Contains(a.headers, fmt.Sprintf("%s: %d", HeaderUploadOffset, kept)) {
		t.Fatalf("HEAD as alice after bob's attempts: %+v, want the session untouched at %d", a, kept)
	}
	// A caller Principal refuses, or cannot name, gets nothing either.
	for who, want := range map[string]int{"ghost": http.StatusUnauthorized, "nobody": http.StatusInternalServerError} {
		if a := send(t, f, http.MethodHead, loc, nil, as(who)); a.status != want || a.headers != "" {
			t.Errorf("HEAD as %s: got %+v, want %d without the protocol's headers", who, a, want)
		}
	}

	if a := send(t, f, http.MethodPatch, loc, data[kept:], map[string]string{"Authorization": "Bearer alice", HeaderUploadOffset: fmt.Sprint(kept)}); a.status != http.StatusNoContent {
		t.Fatalf("PATCH as alice: %+v", a)
	}
	if a := send(t, f, http.MethodPut, loc+"?digest="+d.String()+"&size="+fmt.Sprint(len(data)), nil, as("alice")); a.status != http.StatusCreated {
		t.Fatalf("PUT as alice: %+v", a)
	}
	var buf bytes.Buffer
	c := f.client()
	c.Token = "bob" // reads are not bound to anyone
	if _, err := c.Download(context.Background(), d, int64(len(data)), &buf); err != nil || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("download of the committed blob: %d bytes, %v", buf.Len(), err)
	}

	// The session no longer exists: bob's requests now get the answers of
	// an unknown id, and those are exactly what he got before.
	for i, rq := range requests {
		if a := send(t, f, rq.method, rq.path, rq.body, rq.hdr); a != refused[i] {
			t.Errorf("%s: on alice's live session bob got\n\t%+v\nand on an id that does not exist\n\t%+v", rq.name, refused[i], a)
		}
	}
}

// Client uploads work unchanged when sessions are bound: the client sends
// the same credential with every request of a resumable upload.
func TestClientResumableUploadWithPrincipal(t *testing.T) {
	f := newFixture(t, bearerPrincipals())
	c := f.client()
	c.Token = "alice"
	data := randBytes(31, 5*testChunk+3) // over SinglePutMax: resumable
	d, err := c.Upload(context.Background(), writeFile(t, data))
	if err != nil {
		t.Fatal(err)
	}
	if d != blob.Sum(data) {
		t.Fatalf("Upload returned %s, want %s", d, blob.Sum(data))
	}
	if ok, err := f.store.Has(context.Background(), d); !ok || err != nil {
		t.Fatalf("blob after a resumable upload: stored %v, %v", ok, err)
	}
}

// heldWriter is a ResponseWriter whose writes block until released: a
// download in progress, for as long as the test wants.
type heldWriter struct {
	header  http.Header
	once    sync.Once
	started chan struct{} // closed at the first Write
	release chan struct{}
	buf     bytes.Buffer
}

func newHeldWriter() *heldWriter {
	return &heldWriter{header: http.Header{}, started: make(chan struct{}), release: make(chan struct{})}
}

func (w *heldWriter) Header() http.Header { return w.header }
func (w *heldWriter) WriteHeader(int)     {}
func (w *heldWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.started) })
	<-w.release
	return w.buf.Write(p)
}

// holdDownload starts a GET of path (with the Authorization header auth,
// if any) whose response writer blocks, and returns once the handler holds
// its download slot: the writer (close its release to let it finish) and a
// channel closed when the handler has returned.
func holdDownload(f *fixture, path, auth string) (*heldWriter, chan struct{}) {
	w := newHeldWriter()
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequest(http.MethodGet, path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		f.h.ServeHTTP(w, req)
	}()
	<-w.started
	return w, done
}

// transportFunc makes a function an http.RoundTripper.
type transportFunc func(*http.Request) (*http.Response, error)

func (f transportFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// With MaxConcurrentDownloads 1, a download while another streams gets
// 429 with Retry-After (a HEAD and a 404 do not count), and Client.Download
// retries it and succeeds once the first download has ended.
func TestDownloadLimit(t *testing.T) {
	f := newFixture(t, Options{MaxConcurrentDownloads: 1})
	data := randBytes(32, 3*testChunk+1)
	d := blob.Sum(data)
	if err := f.store.Put(context.Background(), d, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	path := "/v1/blobs/" + d.String()

	first, firstDone := holdDownload(f, path, "") // holds the only slot

	resp, body := sendRaw(t, f, http.MethodGet, path, nil, nil)
	wantAPIError(t, resp, body, http.StatusTooManyRequests, "resource_exhausted", "1 downloads already in progress")
	if resp.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	if resp, body := sendRaw(t, f, http.MethodHead, path, nil, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD while the slot is taken: %d %s, want 200", resp.StatusCode, body)
	}
	resp, body = sendRaw(t, f, http.MethodGet, "/v1/blobs/"+blob.Sum([]byte("absent")).String(), nil, nil)
	wantAPIError(t, resp, body, http.StatusNotFound, "not_found", "not found")

	// The client's first attempt gets 429; its retry waits (in the
	// transport, so that nothing depends on timing) until the first
	// download has ended.
	saw429 := make(chan struct{})
	var once sync.Once
	var attempts int
	base := f.srv.Client().Transport
	c := f.client()
	c.HTTP = &http.Client{Transport: transportFunc(func(r *http.Request) (*http.Response, error) {
		attempts++ // the client's attempts come one at a time
		if attempts > 1 {
			<-firstDone
		}
		resp, err := base.RoundTrip(r)
		if err == nil && resp.StatusCode == http.StatusTooManyRequests {
			once.Do(func() { close(saw429) })
		}
		return resp, err
	})}
	type result struct {
		n   int64
		err error
	}
	got := make(chan result, 1)
	var buf bytes.Buffer
	go func() {
		n, err := c.Download(context.Background(), d, int64(len(data)), &buf)
		got <- result{n, err}
	}()
	<-saw429
	close(first.release)
	r := <-got
	if r.err != nil || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("Download after a 429: %d bytes, %v", r.n, r.err)
	}
	if attempts != 2 {
		t.Errorf("Download made %d attempts, want 2 (one 429, one success)", attempts)
	}
	if !bytes.Equal(first.buf.Bytes(), data) {
		t.Errorf("the held download sent %d bytes, want the whole blob", first.buf.Len())
	}
	// Both slots' holders are done: the slot is free again.
	if resp, body := sendRaw(t, f, http.MethodGet, path, nil, nil); resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Errorf("GET after both downloads: %d, %d bytes", resp.StatusCode, len(body))
	}
}

// retryable is what makes Download retry a 429; pin it.
func TestRetryableTooManyRequests(t *testing.T) {
	if !retryable(fmt.Errorf("downloading: %w", &Error{StatusCode: http.StatusTooManyRequests, Code: "resource_exhausted"})) {
		t.Error("a 429 is not retryable")
	}
	if retryable(&Error{StatusCode: http.StatusNotFound, Code: "not_found"}) {
		t.Error("a 404 is retryable")
	}
}

// TestDownloadLimitPerPrincipal: one principal streams at most its share of
// downloads at once (so many slow connections of one reader cannot hold
// every slot); another principal still gets one, and the share frees when a
// download ends.
func TestDownloadLimitPerPrincipal(t *testing.T) {
	opts := bearerPrincipals()
	opts.MaxConcurrentDownloads, opts.MaxDownloadsPerPrincipal = 4, 1
	f := newFixture(t, opts)
	data := randBytes(33, 2*testChunk+1)
	d := blob.Sum(data)
	if err := f.store.Put(context.Background(), d, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	path := "/v1/blobs/" + d.String()
	first, firstDone := holdDownload(f, path, "Bearer alice")

	resp, body := sendRaw(t, f, http.MethodGet, path, nil, as("alice"))
	wantAPIError(t, resp, body, http.StatusTooManyRequests, "resource_exhausted", "1 downloads by this principal already in progress")
	if resp.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	if resp, body := sendRaw(t, f, http.MethodGet, path, nil, as("bob")); resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("bob's download while alice holds hers: %d, %d bytes", resp.StatusCode, len(body))
	}
	close(first.release)
	<-firstDone
	if resp, body := sendRaw(t, f, http.MethodGet, path, nil, as("alice")); resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("alice's download after hers ended: %d, %d bytes", resp.StatusCode, len(body))
	}
	// The handler counts a download done after its last byte went out,
	// which can be just after the client has read it.
	for i := 0; ; i++ {
		f.h.perMu.Lock()
		n := len(f.h.perDownload)
		f.h.perMu.Unlock()
		if n == 0 {
			break
		}
		if i == 1000 {
			t.Fatalf("%d principals still counted after every download ended", n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestBackoffHonoursRetryAfter: a retry waits at least what the server's
// Retry-After asked (capped), not just the client's own short backoff.
func TestBackoffHonoursRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		header string
		want   time.Duration
	}{
		{"2", 2 * time.Second},
		{"3600", maxRetryAfter},
		{"", 0},
		{"soon", 0},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if tc.header != "" {
				w.Header().Set("Retry-After", tc.header)
			}
			writeError(w, r, http.StatusTooManyRequests, "resource_exhausted", "busy")
		}))
		c := &Client{BaseURL: srv.URL, HTTP: srv.Client()}
		req, _ := c.newRequest(context.Background(), http.MethodGet, "/v1/blobs/x", nil)
		_, err := c.do(req, http.StatusOK)
		srv.Close()
		var e *Error
		if !errors.As(err, &e) || e.RetryAfter != tc.want {
			t.Errorf("Retry-After %q: got %v, want RetryAfter %v", tc.header, err, tc.want)
		}
	}
	// The wait is the larger of the two: cancelled before Retry-After.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := backoff(ctx, 0, &Error{StatusCode: http.StatusTooManyRequests, RetryAfter: time.Minute}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("backoff with Retry-After 1m returned %v before the context ended", err)
	}
}
