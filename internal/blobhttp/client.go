package blobhttp

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hallmark-dev/hallmark/registry/blob"
)

// Error is a non-success answer from the server.
type Error struct {
	StatusCode int
	Code       string // Connect code name, e.g. "invalid_argument"
	Message    string
	// Mismatch is set when the server refused an upload because the bytes
	// it received differ from the declared digest or size; errors.Is(err,
	// blob.ErrDigestMismatch) and blob.ErrSizeMismatch see it.
	Mismatch *blob.MismatchError
	// RetryAfter is the server's Retry-After (seconds form), if it sent
	// one; retries wait at least that long (capped at maxRetryAfter).
	RetryAfter time.Duration
}

// maxRetryAfter caps how long one wait for a busy server may be, whatever
// its Retry-After says.
const maxRetryAfter = 30 * time.Second

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%s (HTTP %d)", e.Code, e.StatusCode)
	}
	return fmt.Sprintf("%s: %s (HTTP %d)", e.Code, e.Message, e.StatusCode)
}

// Unwrap returns the mismatch the server reported, if any.
func (e *Error) Unwrap() error {
	if e.Mismatch == nil {
		return nil
	}
	return e.Mismatch
}

// Client talks the blob protocol. Its zero value is not usable: set BaseURL.
type Client struct {
	// BaseURL is the server's root, e.g. "http://127.0.0.1:7070".
	BaseURL string
	// Token, if set, is sent as "Authorization: Bearer <Token>".
	Token string
	// HTTP is the client used; the default is http.DefaultClient.
	HTTP *http.Client
	// Progress, if set, is called as bytes are sent or received, with the
	// bytes done so far and the total. Calls for one transfer come one at a
	// time, but not necessarily from the caller's goroutine.
	Progress func(done, total int64)
	// SinglePutMax is the largest file sent in one PUT; larger files use a
	// resumable upload. The default is 64 MiB.
	SinglePutMax int64
	// Retries is how many consecutive failed attempts without progress an
	// Upload or Download tolerates before giving up. The default is 5.
	Retries int
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

func (c *Client) retries() int {
	if c.Retries <= 0 {
		return 5
	}
	return c.Retries
}

func (c *Client) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.BaseURL, "/")+path, body)
	if err != nil {
		return nil, err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	return req, nil
}

// do sends req and turns a status other than want into an *Error.
func (c *Client) do(req *http.Request, want ...int) (*http.Response, error) {
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, err
	}
	for _, w := range want {
		if resp.StatusCode == w {
			return resp, nil
		}
	}
	defer resp.Body.Close()
	e := &Error{StatusCode: resp.StatusCode}
	var body apiError
	if b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10)); json.Unmarshal(b, &body) == nil {
		e.Code, e.Message = body.Code, body.Message
		if m := body.Mismatch; m != nil && (m.Field == "digest" || m.Field == "size") {
			e.Mismatch = &blob.MismatchError{Field: m.Field, Expected: m.Expected, Actual: m.Actual}
		}
	}
	if e.Code == "" {
		e.Code = strings.ToLower(strings.ReplaceAll(http.StatusText(resp.StatusCode), " ", "_"))
	}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		e.RetryAfter = min(time.Duration(secs)*time.Second, maxRetryAfter)
	}
	return resp, e
}

// retryable reports whether err is worth another attempt: the network, a
// busy server or a session still held by a broken request. Any other answer
// of the server is final, among them 507 Insufficient Storage: the disk
// stays full until an operator frees space, and retrying would only resend
// the bytes.
func retryable(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.StatusCode == http.StatusTooManyRequests || e.StatusCode == http.StatusServiceUnavailable ||
			e.StatusCode == http.StatusBadGateway || e.StatusCode == http.StatusGatewayTimeout ||
			// The server gave up on a body that stalled or was too slow; an
			// upload resumes from what it kept.
			e.StatusCode == http.StatusRequestTimeout ||
			(e.StatusCode == http.StatusConflict && e.Code == "aborted")
	}
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// backoff waits before another attempt: doubling from 200 ms to 3.2 s,
// and at least what the server's Retry-After asked for (a busy server's
// 429 or 503), so that retries do not come back sooner than told.
func backoff(ctx context.Context, attempt int, cause error) error {
	d := time.Duration(1<<min(attempt, 5)) * 100 * time.Millisecond
	var e *Error
	if errors.As(cause, &e) && e.RetryAfter > d {
		d = e.RetryAfter
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Stat returns the size of blob d on the server, or an error matching
// blob.ErrNotFound.
func (c *Client) Stat(ctx context.Context, d blob.Digest) (int64, error) {
	req, err := c.newRequest(ctx, http.MethodHead, "/v1/blobs/"+d.String(), nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.do(req, http.StatusOK)
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.StatusCode == http.StatusNotFound {
			return 0, fmt.Errorf("blob %s: %w", d, blob.ErrNotFound)
		}
		return 0, fmt.Errorf("checking blob %s: %w", d, err)
	}
	resp.Body.Close()
	return resp.ContentLength, nil
}

// Upload sends the file at path and returns its digest. It hashes the file
// first, then sends it as UploadDigest does. A caller that has already
// hashed the file calls UploadDigest and saves a pass over it.
func (c *Client) Upload(ctx context.Context, path string) (blob.Digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return blob.Digest{}, fmt.Errorf("uploading: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	// Hidden behind a plain Reader so that CopyBuffer uses the large buffer
	// rather than *os.File's WriteTo and its 32 KiB one.
	size, err := io.CopyBuffer(h, struct{ io.Reader }{f}, make([]byte, copyBufSize))
	if err != nil {
		return blob.Digest{}, fmt.Errorf("uploading %s: hashing: %w", path, err)
	}
	d := blob.Digest(h.Sum(nil))
	return d, c.upload(ctx, f, path, d, size)
}

// UploadDigest sends the file at path as blob d of size bytes, digest and
// size the caller computed earlier (a push has them from its manifest). It
// does not read the file twice: the server hashes the body as it streams
// and stores nothing unless the bytes match d and size, so a file that
// changed since it was hashed fails with an error matching
// blob.ErrDigestMismatch or blob.ErrSizeMismatch and nothing is stored.
//
// It skips the transfer if the server already has the blob. Files up to
// SinglePutMax go in one PUT; larger ones in a resumable upload that, after a
// broken connection, asks the server how much it kept and continues from
// there.
func (c *Client) UploadDigest(ctx context.Context, path string, d blob.Digest, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("uploading: %w", err)
	}
	defer f.Close()
	return c.upload(ctx, f, path, d, size)
}

func (c *Client) upload(ctx context.Context, f *os.File, path string, d blob.Digest, size int64) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("uploading %s: %w", path, err)
	}
	if fi.Size() != size {
		return fmt.Errorf("uploading %s as %s: %w", path, d, &blob.MismatchError{
			Field: "size", Expected: strconv.FormatInt(size, 10), Actual: strconv.FormatInt(fi.Size(), 10)})
	}
	if n, err := c.Stat(ctx, d); err == nil && n == size {
		c.progress(size, size)
		return nil
	} else if err != nil && !errors.Is(err, blob.ErrNotFound) {
		return fmt.Errorf("uploading %s: %w", path, err)
	}
	max := c.SinglePutMax
	if max <= 0 {
		max = 64 << 20
	}
	if size <= max {
		err = c.putWhole(ctx, f, d, size)
	} else {
		err = c.putResumable(ctx, f, d, size)
	}
	if err != nil {
		return fmt.Errorf("uploading %s as %s: %w", path, d, err)
	}
	return nil
}

func (c *Client) progress(done, total int64) {
	if c.Progress != nil {
		c.Progress(done, total)
	}
}

// progressReader reports bytes read, counting from base.
type progressReader struct {
	r     io.Reader
	c     *Client
	done  int64
	total int64
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	p.c.progress(p.done, p.total)
	return n, err
}

func (c *Client) putWhole(ctx context.Context, f *os.File, d blob.Digest, size int64) error {
	for attempt := 0; ; attempt++ {
		body := &progressReader{r: io.NewSectionReader(f, 0, size), c: c, total: size}
		req, err := c.newRequest(ctx, http.MethodPut, "/v1/blobs/"+d.String(), body)
		if err != nil {
			return err
		}
		req.ContentLength = size
		if size == 0 {
			req.Body = http.NoBody
		}
		resp, err := c.do(req, http.StatusCreated)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if !retryable(err) || attempt+1 >= c.retries() {
			return err
		}
		if berr := backoff(ctx, attempt, err); berr != nil {
			return berr
		}
	}
}

func (c *Client) putResumable(ctx context.Context, f *os.File, d blob.Digest, size int64) error {
	req, err := c.newRequest(ctx, http.MethodPost, "/v1/blobs/uploads", nil)
	if err != nil {
		return err
	}
	resp, err := c.do(req, http.StatusCreated)
	if err != nil {
		return fmt.Errorf("starting upload: %w", err)
	}
	var up uploadJSON
	err = json.NewDecoder(resp.Body).Decode(&up)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("starting upload: decoding answer: %w", err)
	}
	loc := "/v1/blobs/uploads/" + up.ID
	var off int64
	failures := 0
	for off < size {
		body := &progressReader{r: io.NewSectionReader(f, off, size-off), c: c, done: off, total: size}
		req, err := c.newRequest(ctx, http.MethodPatch, loc, body)
		if err != nil {
			return err
		}
		req.ContentLength = size - off
		req.Header.Set(HeaderUploadOffset, strconv.FormatInt(off, 10))
		resp, err := c.do(req, http.StatusNoContent)
		if err == nil {
			resp.Body.Close()
			off = size
			break
		}
		var e *Error
		if errors.As(err, &e) && e.Code == "failed_precondition" && resp != nil {
			// The server is somewhere else: continue from where it is.
			if n, perr := strconv.ParseInt(resp.Header.Get(HeaderUploadOffset), 10, 64); perr == nil {
				off = n
				continue
			}
		}
		if !retryable(err) {
			return fmt.Errorf("sending bytes at offset %d: %w", off, err)
		}
		failures++
		if failures >= c.retries() {
			return fmt.Errorf("sending bytes at offset %d: giving up after %d attempts: %w", off, failures, err)
		}
		if berr := backoff(ctx, failures, err); berr != nil {
			return berr
		}
		n, serr := c.uploadOffset(ctx, loc)
		if serr != nil {
			if !retryable(serr) {
				return fmt.Errorf("asking for the upload offset after %w: %w", err, serr)
			}
			continue
		}
		if n > off {
			failures = 0 // progress was kept
		}
		off = n
	}
	q := "?digest=" + d.String() + "&size=" + strconv.FormatInt(size, 10)
	for attempt := 0; ; attempt++ {
		req, err := c.newRequest(ctx, http.MethodPut, loc+q, http.NoBody)
		if err != nil {
			return err
		}
		resp, err := c.do(req, http.StatusCreated)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if !retryable(err) || attempt+1 >= c.retries() {
			return fmt.Errorf("committing upload: %w", err)
		}
		if berr := backoff(ctx, attempt, err); berr != nil {
			return berr
		}
		// A commit whose answer was lost may have succeeded.
		if n, err := c.Stat(ctx, d); err == nil && n == size {
			return nil
		}
	}
}

func (c *Client) uploadOffset(ctx context.Context, loc string) (int64, error) {
	req, err := c.newRequest(ctx, http.MethodHead, loc, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.do(req, http.StatusNoContent)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	n, err := strconv.ParseInt(resp.Header.Get(HeaderUploadOffset), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad %s header %q", HeaderUploadOffset, resp.Header.Get(HeaderUploadOffset))
	}
	return n, nil
}

// Download writes blob d, which the caller knows to be size bytes (a pull
// has the size from its manifest), to w and returns the bytes written. It
// hashes while streaming and fails with an error matching
// blob.ErrDigestMismatch or blob.ErrSizeMismatch if the bytes are not the
// blob's; w has then received them already, so write to a temporary file
// and rename it only on success. A server that announces another size is
// refused before any byte is read, and one that sends more than size bytes
// is cut off at size+1: w never receives more than that. A broken
// connection is resumed with a range request; a server at its download
// limit (429) is asked again after a backoff, like any retryable failure.
//
// Receiving overlaps with hashing and writing: a goroutine reads the next
// buffer from the connection while the last one is hashed and written, so
// the download runs at about the speed of one SHA-256 pass. Memory: a few
// MiB of buffers.
func (c *Client) Download(ctx context.Context, d blob.Digest, size int64, w io.Writer) (int64, error) {
	return c.download(ctx, d, size, true, w)
}

// DownloadAtMost is Download for a blob whose size the caller does not know
// but bounds (a signature bundle, for one): a blob larger than limit fails
// with an error matching blob.ErrTooLarge, refused before any byte is read
// if the server announces its size, else cut off at limit+1 bytes.
func (c *Client) DownloadAtMost(ctx context.Context, d blob.Digest, limit int64, w io.Writer) (int64, error) {
	return c.download(ctx, d, limit, false, w)
}

// download is Download when exact, else DownloadAtMost.
func (c *Client) download(ctx context.Context, d blob.Digest, limit int64, exact bool, w io.Writer) (int64, error) {
	if limit < 0 {
		return 0, fmt.Errorf("downloading blob %s: negative size %d", d, limit)
	}
	h := sha256.New()
	var done int64
	size := int64(-1) // the blob's size, once known
	if exact {
		size = limit
	}
	failures := 0
	for {
		req, err := c.newRequest(ctx, http.MethodGet, "/v1/blobs/"+d.String(), nil)
		if err != nil {
			return done, err
		}
		want := http.StatusOK
		if done > 0 {
			req.Header.Set("Range", "bytes="+strconv.FormatInt(done, 10)+"-")
			req.Header.Set("If-Range", `"`+d.String()+`"`)
			want = http.StatusPartialContent
		}
		resp, err := c.do(req, want)
		if err == nil {
			if resp.ContentLength >= 0 {
				if err := tooMuch(d, done+resp.ContentLength, limit, exact); err != nil {
					resp.Body.Close()
					return done, fmt.Errorf("downloading blob %s: the server announces %d bytes: %w", d, done+resp.ContentLength, err)
				}
				size = done + resp.ContentLength
			}
			var n int64
			// One byte past the limit is enough to know the body is too long.
			n, err = c.receive(w, h, io.LimitReader(resp.Body, limit-done+1), done, size)
			resp.Body.Close()
			done += n
			if done > limit {
				return done, fmt.Errorf("downloading blob %s: %w", d, tooMuch(d, done, limit, exact))
			}
			if err == nil && size >= 0 && done < size {
				err = io.ErrUnexpectedEOF
			}
			if n > 0 {
				failures = 0
			}
			if err == nil {
				break
			}
		}
		if !retryable(err) {
			return done, fmt.Errorf("downloading blob %s: %w", d, err)
		}
		failures++
		if failures >= c.retries() {
			return done, fmt.Errorf("downloading blob %s: giving up at byte %d after %d attempts: %w", d, done, failures, err)
		}
		if berr := backoff(ctx, failures, err); berr != nil {
			return done, berr
		}
	}
	if size >= 0 && done != size {
		return done, fmt.Errorf("downloading blob %s: %w", d, &blob.MismatchError{Field: "size", Expected: strconv.FormatInt(size, 10), Actual: strconv.FormatInt(done, 10)})
	}
	if got := blob.Digest(h.Sum(nil)); got != d {
		return done, fmt.Errorf("downloading blob %s: %w", d, &blob.MismatchError{Field: "digest", Expected: d.String(), Actual: got.String()})
	}
	return done, nil
}

// tooMuch returns the error for a blob of n bytes when the caller expects
// limit bytes exactly (a size mismatch if they differ) or at most (too large
// if n exceeds it), or nil.
func tooMuch(d blob.Digest, n, limit int64, exact bool) error {
	switch {
	case exact && n != limit:
		actual := strconv.FormatInt(n, 10)
		if n > limit {
			actual = "more than " + strconv.FormatInt(limit, 10)
		}
		return &blob.MismatchError{Field: "size", Expected: strconv.FormatInt(limit, 10), Actual: actual}
	case !exact && n > limit:
		return fmt.Errorf("%w: blob %s is more than the limit of %d bytes", blob.ErrTooLarge, d, limit)
	}
	return nil
}

// copyBufSize is the size of the buffers files and bodies are read in: large
// enough that syscalls and goroutine hand-offs cost little per byte, small
// enough that a buffer is still in the CPU's cache when it is hashed and
// then written. In one interleaved series on the 2-core bench machine, a
// 1 GiB download into a file took 1.0-1.1 s of client CPU with 256 KiB
// buffers, 1.2-1.4 s with the former 32 KiB io.Copy, and 1.8-2.3 s with
// 1 MiB buffers (64 and 128 KiB were no better than 256).
const copyBufSize = 256 << 10

// receive copies body to w and h until body ends and returns the bytes that
// both w and h received (the point a resumed download continues from). The
// calling goroutine reads from the body while another hashes and writes the
// previous buffer; if w fails, reading stops at the next buffer.
func (c *Client) receive(w io.Writer, h hash.Hash, body io.Reader, done, total int64) (int64, error) {
	const nbuf = 4
	bufSize := int64(copyBufSize)
	if total >= 0 && total-done < bufSize {
		bufSize = max(total-done, 512) // small files need no MiB buffers
	}
	full := make(chan []byte, nbuf)
	free := make(chan []byte, nbuf)
	for range nbuf {
		free <- make([]byte, bufSize)
	}
	failed := make(chan struct{}) // closed when w fails
	var written int64             // owned by the consumer until result is received
	var werr error
	result := make(chan struct{})
	go func() {
		defer close(result)
		for b := range full {
			if werr == nil {
				m, err := w.Write(b)
				h.Write(b[:m])
				written += int64(m)
				if err == nil && m < len(b) {
					err = io.ErrShortWrite
				}
				if err != nil {
					werr = err
					close(failed)
				} else {
					c.progress(done+written, total)
				}
			}
			free <- b[:cap(b)]
		}
	}()
	var rerr error
	for rerr == nil {
		var b []byte
		select {
		case b = <-free:
		case <-failed:
			rerr = errConsumerFailed
			continue
		}
		n := 0
		for n < len(b) && rerr == nil {
			var k int
			k, rerr = body.Read(b[n:])
			n += k
		}
		if n > 0 {
			full <- b[:n]
		}
	}
	close(full)
	<-result
	if werr != nil {
		return written, werr
	}
	if rerr == io.EOF {
		rerr = nil
	}
	return written, rerr
}

// errConsumerFailed stops receive's reading; the consumer's error is what
// receive returns.
var errConsumerFailed = errors.New("writer failed")
