package blobhttp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hallmark-dev/hallmark/registry/blob"
)

var (
	// ErrUnauthenticated, returned (wrapped) by Options.Authorize, makes the
	// handler answer 401 with a Bearer challenge.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermissionDenied, returned (wrapped) by Options.Authorize, makes the
	// handler answer 403. Any other Authorize error is also a 403.
	ErrPermissionDenied = errors.New("permission denied")
)

// Header names of the upload protocol.
const (
	HeaderUploadOffset  = "Upload-Offset"
	HeaderUploadExpires = "Upload-Expires"
)

// Options configures the handler. The zero value of a field means its default.
type Options struct {
	// Authorize decides whether r may proceed; write is true for uploads.
	// Return an error wrapping ErrUnauthenticated (401) or anything else
	// (403) to refuse. The default allows everything, which suits tests
	// only.
	Authorize func(r *http.Request, write bool) error

	// Principal names the caller of a resumable-upload request (POST
	// /v1/blobs/uploads, and HEAD, PATCH, PUT and DELETE on
	// /v1/blobs/uploads/<id>), after Authorize has admitted it. A session
	// belongs to the principal that created it: to anyone else its id
	// answers 404 with the very body of an id that does not exist, so an
	// id seen in a Location header, a proxy or a log is of no use to
	// another caller, whatever its rights. Return an error wrapping
	// ErrUnauthenticated (401) or ErrPermissionDenied (403) to refuse; any
	// other error, or an empty name, is a 500. The default binds sessions
	// to nobody: any caller Authorize admits may use any session, which
	// suits tests only.
	Principal func(r *http.Request) (string, error)

	// MaxBlobSize is the largest blob accepted; larger ones get 413 before
	// any byte is read. The default is the store's MaxBlobSize.
	MaxBlobSize int64

	// MaxConcurrentUploads bounds PUT and PATCH requests streaming at once;
	// more get 429 with Retry-After. Each costs two chunks of memory. The
	// default is 8.
	MaxConcurrentUploads int

	// MaxConcurrentDownloads bounds GET requests of blobs being served at
	// once; more get 429 with Retry-After (Client.Download retries them).
	// Each costs two chunks of memory while it streams. HEAD requests and
	// requests of a blob that does not exist (404) do not count. The
	// default is 64.
	MaxConcurrentDownloads int

	// MaxDownloadsPerPrincipal bounds the downloads one principal (as
	// Principal names it) streams at once, so that one reader with many
	// slow connections cannot hold every slot of MaxConcurrentDownloads
	// while the stall timeout lets each crawl. The default is a quarter of
	// MaxConcurrentDownloads, at least 1. Without a Principal hook it does
	// not apply.
	MaxDownloadsPerPrincipal int

	// StallTimeout aborts an upload whose body sends nothing for this long,
	// so a dead client cannot hold an upload slot. The default is one
	// minute.
	StallTimeout time.Duration

	// MinUploadRate is the slowest an upload body may arrive, in bytes per
	// second: for every StallTimeout the handler spends waiting on the body,
	// the client must deliver MinUploadRate × StallTimeout bytes, or the
	// request fails with 408 (a resumable upload keeps what arrived). Time
	// the handler spends storing rather than reading does not count, so a
	// slow disk never fails a client. Without it, one byte per StallTimeout
	// would hold an upload slot forever. The default is 64 KiB/s; a
	// negative value turns the floor off (StallTimeout alone applies).
	MinUploadRate int64

	// DownloadStallTimeout cuts off a download whose client does not take
	// one chunk of the response (4 MiB with the store's default chunk size)
	// within this long; each chunk restarts the clock. A download holds two
	// chunk buffers, so without it a client that stops reading holds them
	// for as long as it keeps the connection open. The default, one minute,
	// means a floor of about 70 KB/s.
	DownloadStallTimeout time.Duration

	// WholeDigest makes the server also re-hash the whole file on every
	// whole download and cut the response short before its last bytes if
	// the digest differs. The default, false, checks every chunk against
	// its digest and the chunk list against the record's checksum (see
	// blob.Reader.SkipWholeDigest), which already proves the bytes are the
	// ones verified at upload; the digest is the URL, and Client.Download
	// checks it end to end. Turning it on costs one SHA-256 pass per
	// download (about a third of a verified pull's CPU).
	WholeDigest bool

	// MinFreeBytes is the free space the store's disk keeps: an upload
	// (PUT, PATCH) is refused with 507 Insufficient Storage, before any of
	// its bytes are read, when the disk's free space minus the bytes it
	// declares (Content-Length; without one, the next chunk), minus what
	// uploads in progress may still write, would fall below it; a body is
	// checked again every chunk, and a PATCH refused midway keeps the bytes
	// before. badger writes through memory-mapped sparse files, so running
	// out of space kills the whole process instead of failing one write.
	// The default is the store's Headroom (320 MiB with its default
	// options: value-log GC, memtable logs, table flushes), plus two chunks
	// per concurrent upload (bytes read but not yet written, 64 MiB by
	// default), plus 64 MiB for the ledger on the same disk: 448 MiB in
	// all. It does not scale with the disk: what badger needs does not.
	MinFreeBytes int64

	// FreeSpace reports the bytes free for the store. The default is the
	// store's FreeSpace; tests set it. An error wrapping
	// errors.ErrUnsupported turns the check off; any other error fails the
	// upload with 500.
	FreeSpace func() (int64, error)

	// Logger receives warnings: the disk is already below MinFreeBytes
	// when the handler is made, and uploads refused for want of space (at
	// most one line a minute). The default discards them.
	Logger *slog.Logger
}

// Handler serves the blob protocol for one store.
type Handler struct {
	store     *blob.Store
	opts      Options
	space     *spaceGuard
	uploads   chan struct{} // a token per upload streaming
	downloads chan struct{} // a token per download streaming
	mux       *http.ServeMux

	perMu       sync.Mutex
	perDownload map[string]int // downloads streaming per principal
}

// NewHandler returns the handler for store. Mount it at /v1/blobs/.
func NewHandler(store *blob.Store, opts Options) *Handler {
	if opts.Authorize == nil {
		opts.Authorize = func(*http.Request, bool) error { return nil }
	}
	if opts.MaxBlobSize <= 0 || opts.MaxBlobSize > store.MaxBlobSize() {
		opts.MaxBlobSize = store.MaxBlobSize()
	}
	if opts.MaxConcurrentUploads <= 0 {
		opts.MaxConcurrentUploads = 8
	}
	if opts.MaxConcurrentDownloads <= 0 {
		opts.MaxConcurrentDownloads = 64
	}
	if opts.MaxDownloadsPerPrincipal <= 0 {
		opts.MaxDownloadsPerPrincipal = max(1, opts.MaxConcurrentDownloads/4)
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = time.Minute
	}
	if opts.MinUploadRate == 0 {
		opts.MinUploadRate = 64 << 10
	}
	if opts.DownloadStallTimeout <= 0 {
		opts.DownloadStallTimeout = time.Minute
	}
	if opts.MinFreeBytes <= 0 {
		opts.MinFreeBytes = defaultMinFree(store, opts.MaxConcurrentUploads)
	}
	if opts.FreeSpace == nil {
		opts.FreeSpace = store.FreeSpace
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{store: store, opts: opts, mux: http.NewServeMux(),
		space:     &spaceGuard{free: opts.FreeSpace, margin: min(opts.MinFreeBytes, 1<<62), log: opts.Logger},
		uploads:   make(chan struct{}, opts.MaxConcurrentUploads),
		downloads: make(chan struct{}, opts.MaxConcurrentDownloads), perDownload: map[string]int{}}
	h.mux.HandleFunc("PUT /v1/blobs/{digest}", h.putBlob)
	h.mux.HandleFunc("GET /v1/blobs/{digest}", h.getBlob) // and HEAD
	h.mux.HandleFunc("POST /v1/blobs/uploads", h.newUpload)
	h.mux.HandleFunc("PATCH /v1/blobs/uploads/{id}", h.appendUpload)
	h.mux.HandleFunc("HEAD /v1/blobs/uploads/{id}", h.statUpload)
	h.mux.HandleFunc("PUT /v1/blobs/uploads/{id}", h.commitUpload)
	h.mux.HandleFunc("DELETE /v1/blobs/uploads/{id}", h.abortUpload)
	if free, err := opts.FreeSpace(); err == nil && free < opts.MinFreeBytes {
		opts.Logger.Warn("the blob store's disk is below its free-space margin: uploads will be refused (507) until space is freed",
			"free_bytes", free, "min_free_bytes", opts.MinFreeBytes)
	}
	return h
}

// defaultMinFree is Options.MinFreeBytes' default (see there).
func defaultMinFree(store *blob.Store, uploads int) int64 {
	return store.Headroom() + int64(uploads)*2*int64(store.ChunkSize()) + ledgerHeadroom
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The mux's own 404 and 405 answers are plain text; give ours instead.
	if _, pattern := h.mux.Handler(r); pattern == "" {
		writeError(w, r, http.StatusNotFound, "not_found", fmt.Sprintf("%s %s: no such blob endpoint", r.Method, r.URL.Path))
		return
	}
	h.mux.ServeHTTP(w, r)
}

// apiError is the JSON error body. Mismatch is set when the body's bytes
// differ from the declared digest or size, so that a client can tell "you
// sent other bytes" from other bad requests without parsing the message.
type apiError struct {
	Code     string        `json:"code"`
	Message  string        `json:"message"`
	Mismatch *mismatchJSON `json:"mismatch,omitempty"`
}

type mismatchJSON struct {
	Field    string `json:"field"` // "digest" or "size"
	Expected string `json:"expected"`
	Actual   string `json:"actual"`
}

func writeError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	writeAPIError(w, r, status, apiError{Code: code, Message: msg})
}

func writeAPIError(w http.ResponseWriter, r *http.Request, status int, e apiError) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	w.Header().Del("ETag")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	_ = json.NewEncoder(w).Encode(e)
}

// fail maps a store error to a status and code: the one place that does.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, code := http.StatusInternalServerError, "internal"
	var oe *blob.OffsetError
	var me *blob.MismatchError
	var be *bodyError
	var mismatch *mismatchJSON
	switch {
	case errors.As(err, &be):
		// Checked first: a failed body also cancels the request's context.
		status, code = be.status, be.code
		if status == http.StatusInsufficientStorage {
			// Answer now: by default net/http first reads up to 256 KiB
			// of what is left of the body, so a client that waits for
			// the answer before sending (or a slow one) waits in vain.
			// Full duplex only skips that; once the answer is out,
			// net/http still drains a short rest of the body or closes
			// the connection gracefully (FIN, then a pause before the
			// close), so that the client reads the answer instead of
			// a reset. Connection: close would skip that pause.
			_ = http.NewResponseController(w).EnableFullDuplex()
		}
	case errors.As(err, &me):
		status, code = http.StatusBadRequest, "invalid_argument"
		mismatch = &mismatchJSON{Field: me.Field, Expected: me.Expected, Actual: me.Actual}
	case errors.As(err, &oe):
		w.Header().Set(HeaderUploadOffset, strconv.FormatInt(oe.Offset, 10))
		status, code = http.StatusConflict, "failed_precondition"
	case errors.Is(err, blob.ErrDigestMismatch), errors.Is(err, blob.ErrSizeMismatch), errors.Is(err, blob.ErrInvalidDigest):
		status, code = http.StatusBadRequest, "invalid_argument"
	case errors.Is(err, blob.ErrTooLarge):
		status, code = http.StatusRequestEntityTooLarge, "resource_exhausted"
	case errors.Is(err, blob.ErrNotFound):
		status, code = http.StatusNotFound, "not_found"
	case errors.Is(err, blob.ErrUploadBusy):
		w.Header().Set("Retry-After", "1")
		status, code = http.StatusConflict, "aborted"
	case errors.Is(err, blob.ErrCorrupt):
		status, code = http.StatusInternalServerError, "data_loss"
	case errors.Is(err, blob.ErrClosed):
		status, code = http.StatusServiceUnavailable, "unavailable"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		status, code = http.StatusServiceUnavailable, "unavailable"
	}
	writeAPIError(w, r, status, apiError{Code: code, Message: fmt.Sprintf("%s %s: %v", r.Method, r.URL.Path, err), Mismatch: mismatch})
}

func (h *Handler) authorize(w http.ResponseWriter, r *http.Request, write bool) bool {
	err := h.opts.Authorize(r, write)
	if err == nil {
		return true
	}
	refuse(w, r, err)
	return false
}

// refuse answers an Authorize or Principal refusal: 401 for
// ErrUnauthenticated, else 403.
func refuse(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, ErrUnauthenticated) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="hallmark"`)
		writeError(w, r, http.StatusUnauthorized, "unauthenticated", fmt.Sprintf("%s %s: %v", r.Method, r.URL.Path, err))
		return
	}
	writeError(w, r, http.StatusForbidden, "permission_denied", fmt.Sprintf("%s %s: %v", r.Method, r.URL.Path, err))
}

// session authorises a request on upload sessions and returns the owner
// its sessions are bound to (see Options.Principal), or answers it.
func (h *Handler) session(w http.ResponseWriter, r *http.Request) (owner string, ok bool) {
	if !h.authorize(w, r, true) {
		return "", false
	}
	if h.opts.Principal == nil {
		return "", true
	}
	p, err := h.opts.Principal(r)
	if err == nil && p == "" {
		// Never "": that would make sessions anyone may use.
		err = errors.New("the server named no principal for an authorised request")
	}
	switch {
	case err == nil:
		return p, true
	case errors.Is(err, ErrUnauthenticated), errors.Is(err, ErrPermissionDenied):
		refuse(w, r, err)
	default:
		writeError(w, r, http.StatusInternalServerError, "internal", fmt.Sprintf("%s %s: identifying the caller: %v", r.Method, r.URL.Path, err))
	}
	return "", false
}

// downloader counts a download for its principal, or answers 429 (or the
// Principal hook's refusal) when the principal already streams its share.
func (h *Handler) downloader(w http.ResponseWriter, r *http.Request) (string, bool) {
	p, err := h.opts.Principal(r)
	if err != nil {
		if errors.Is(err, ErrUnauthenticated) || errors.Is(err, ErrPermissionDenied) {
			refuse(w, r, err)
		} else {
			writeError(w, r, http.StatusInternalServerError, "internal", fmt.Sprintf("%s %s: identifying the caller: %v", r.Method, r.URL.Path, err))
		}
		return "", false
	}
	h.perMu.Lock()
	defer h.perMu.Unlock()
	if h.perDownload[p] >= h.opts.MaxDownloadsPerPrincipal {
		w.Header().Set("Retry-After", "1")
		writeError(w, r, http.StatusTooManyRequests, "resource_exhausted",
			fmt.Sprintf("%s %s: %d downloads by this principal already in progress, the server's limit per principal", r.Method, r.URL.Path, h.opts.MaxDownloadsPerPrincipal))
		return "", false
	}
	h.perDownload[p]++
	return p, true
}

// downloadDone ends a download counted by downloader ("" when none was).
func (h *Handler) downloadDone(who string) {
	if h.opts.Principal == nil {
		return
	}
	h.perMu.Lock()
	defer h.perMu.Unlock()
	if h.perDownload[who]--; h.perDownload[who] <= 0 {
		delete(h.perDownload, who)
	}
}

// acquire takes a slot from slots (h.uploads or h.downloads, named what
// in the message), or answers 429.
func acquire(w http.ResponseWriter, r *http.Request, slots chan struct{}, what string) bool {
	select {
	case slots <- struct{}{}:
		return true
	default:
		w.Header().Set("Retry-After", "1")
		writeError(w, r, http.StatusTooManyRequests, "resource_exhausted",
			fmt.Sprintf("%s %s: %d %s already in progress, the server's limit", r.Method, r.URL.Path, cap(slots), what))
		return false
	}
}

func release(slots chan struct{}) { <-slots }

// body wraps the request body for the store. With bounded set, the body may
// not take the upload past MaxBlobSize from offset; otherwise the store
// enforces the size itself.
func (h *Handler) body(w http.ResponseWriter, r *http.Request, offset int64, bounded bool) *uploadBody {
	floor := int64(0) // no floor: every byte restarts the stall clock
	if h.opts.MinUploadRate > 0 {
		floor = max(1, int64(float64(h.opts.MinUploadRate)*h.opts.StallTimeout.Seconds()))
	}
	b := &uploadBody{r: r.Body, rc: http.NewResponseController(w), stall: h.opts.StallTimeout, floor: floor, rate: h.opts.MinUploadRate,
		limit: -1, offset: offset, max: h.opts.MaxBlobSize,
		space: h.space, length: r.ContentLength, step: int64(h.store.ChunkSize())}
	if bounded {
		b.limit = max(0, h.opts.MaxBlobSize-offset)
	}
	return b
}

// admit reserves disk space for the body before any of it is read, or
// returns why not. The caller must call release when done with the body.
func (b *uploadBody) admit() error {
	if err := b.check(); err != nil {
		b.err = spaceBodyError(err)
		return b.err
	}
	return nil
}

// reserveWindow is how many steps ahead one upload holds a reservation.
// A body of known length must fit whole when checked, but holds only this
// window: otherwise one slow upload declaring most of the free space would
// hold it, and refuse every other upload, for as long as it trickles.
const reserveWindow = 8

// check renews the body's reservation every step: the next window of a
// body of known length (whose whole rest must fit), the next step of one
// without.
func (b *uploadBody) check() error {
	need, whole := b.step, int64(0)
	if b.length >= 0 {
		whole = b.length - b.read
		if whole <= 0 { // the rest is past the declared length: nothing to store
			b.next = math.MaxInt64
			return nil
		}
		need = min(whole, reserveWindow*b.step)
	}
	if err := b.space.reserve(&b.held, need, whole); err != nil {
		return err
	}
	b.next = b.read + b.step
	return nil
}

// release returns what is left of the body's reservation.
func (b *uploadBody) release() { b.space.consumed(&b.held, -1) }

// uploadBody is a request body that cannot hold an upload slot without
// progress and cannot go past its limit. The connection's read deadline
// allows stall of waiting in Read; each time the client has delivered floor
// bytes the allowance starts over. Only time spent in Read counts, so the
// store's own pauses (writing a chunk) never fail the client.
type uploadBody struct {
	r      io.Reader
	rc     *http.ResponseController
	stall  time.Duration
	floor  int64
	rate   int64 // MinUploadRate, for messages
	limit  int64 // most bytes accepted, or -1
	offset int64 // the upload's offset the body starts at, for messages
	max    int64 // MaxBlobSize, for messages

	// Disk space: the bytes reserved for this body (see spaceGuard) are
	// renewed every step bytes, at read offset next.
	space  *spaceGuard
	length int64 // Content-Length, or -1
	step   int64
	held   int64
	next   int64

	read       int64         // bytes returned so far
	waited     time.Duration // time spent in Read since the allowance started over
	got        int64         // bytes received since then
	noDeadline bool          // the connection does not support deadlines
	err        *bodyError    // sticky: why the body failed
}

// bodyError is a request body that failed through the client's doing: it
// stalled, was too slow, ended early or went past the limit. fail answers
// it with status and code.
type bodyError struct {
	status int
	code   string
	msg    string
}

func (e *bodyError) Error() string { return e.msg }

func (b *uploadBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.limit >= 0 && int64(len(p)) > b.limit-b.read+1 {
		p = p[:b.limit-b.read+1] // one byte past the limit tells "too long"
	}
	// Free space is checked again every step, before bytes past it are
	// taken: other writers (or uploads the margin let in) may have used
	// it meanwhile, and a body without a length has reserved one step.
	if b.read >= b.next {
		if err := b.check(); err != nil {
			b.err = spaceBodyError(err)
			return 0, b.err
		}
	}
	if int64(len(p)) > b.next-b.read {
		p = p[:b.next-b.read]
	}
	start := time.Now()
	if !b.noDeadline {
		// A writer without deadlines (not net/http's) gets no stall limit.
		b.noDeadline = b.rc.SetReadDeadline(start.Add(b.stall-b.waited)) != nil
	}
	n, err := b.r.Read(p)
	b.space.consumed(&b.held, int64(n))
	b.waited += time.Since(start)
	b.got += int64(n)
	if b.got >= b.floor {
		b.waited, b.got = 0, 0
	}
	if b.limit >= 0 && b.read+int64(n) > b.limit {
		n = int(b.limit - b.read)
		b.read += int64(n)
		b.err = &bodyError{http.StatusRequestEntityTooLarge, "resource_exhausted",
			fmt.Sprintf("request body: more than %d bytes after offset %d, past the limit of %d bytes per blob", b.limit, b.offset, b.max)}
		return n, b.err
	}
	b.read += int64(n)
	switch {
	case err == nil:
	case err == io.EOF:
		// The body is done. net/http now reads the connection in the
		// background, and a read deadline expiring there would cancel the
		// request's context while the store still commits.
		if !b.noDeadline {
			_ = b.rc.SetReadDeadline(time.Time{})
		}
	case errors.Is(err, os.ErrDeadlineExceeded):
		msg := fmt.Sprintf("request body: nothing received for %s (the stall timeout)", b.stall)
		if b.got > 0 {
			msg = fmt.Sprintf("request body: %d bytes received in %s, fewer than the minimum of %d bytes per second", b.got, b.stall, b.rate)
		}
		b.err = &bodyError{http.StatusRequestTimeout, "deadline_exceeded", msg}
	case errors.Is(err, io.ErrUnexpectedEOF):
		b.err = &bodyError{http.StatusBadRequest, "invalid_argument", fmt.Sprintf("request body: ended after %d bytes, before its declared length", b.read)}
	default:
		b.err = &bodyError{http.StatusBadRequest, "invalid_argument", fmt.Sprintf("request body: reading after %d bytes: %v", b.read, err)}
	}
	if b.err != nil {
		return n, b.err
	}
	return n, err
}

// failure returns err, or the body's own failure when err is only its
// consequence: net/http cancels the request's context when a body read
// fails, and the store may notice the cancellation first.
func (b *uploadBody) failure(err error) error {
	if b.err != nil && !errors.Is(err, b.err) && errors.Is(err, context.Canceled) {
		return fmt.Errorf("%w (%w)", b.err, err)
	}
	return err
}

func (h *Handler) parseDigest(w http.ResponseWriter, r *http.Request, s string) (blob.Digest, bool) {
	d, err := blob.ParseDigest(s)
	if err != nil {
		writeError(w, r, http.StatusBadRequest, "invalid_argument", fmt.Sprintf("%s %s: %v", r.Method, r.URL.Path, err))
		return d, false
	}
	return d, true
}

func (h *Handler) putBlob(w http.ResponseWriter, r *http.Request) {
	if !h.authorize(w, r, true) {
		return
	}
	d, ok := h.parseDigest(w, r, r.PathValue("digest"))
	if !ok {
		return
	}
	if r.ContentLength < 0 {
		writeError(w, r, http.StatusLengthRequired, "invalid_argument",
			fmt.Sprintf("%s %s: Content-Length is required (the size is part of what is verified); for a body of unknown length use a resumable upload", r.Method, r.URL.Path))
		return
	}
	if r.ContentLength > h.opts.MaxBlobSize {
		writeError(w, r, http.StatusRequestEntityTooLarge, "resource_exhausted",
			fmt.Sprintf("%s %s: Content-Length %d exceeds the limit of %d bytes", r.Method, r.URL.Path, r.ContentLength, h.opts.MaxBlobSize))
		return
	}
	if !acquire(w, r, h.uploads, "uploads") {
		return
	}
	defer release(h.uploads)
	body := h.body(w, r, 0, false /* Put checks the size */)
	defer body.release()
	if err := body.admit(); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.store.Put(r.Context(), d, r.ContentLength, body); err != nil {
		h.fail(w, r, body.failure(err))
		return
	}
	w.Header().Set("Location", "/v1/blobs/"+d.String())
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{"digest": d.String(), "size": r.ContentLength})
}

func (h *Handler) getBlob(w http.ResponseWriter, r *http.Request) {
	if !h.authorize(w, r, false) {
		return
	}
	d, ok := h.parseDigest(w, r, r.PathValue("digest"))
	if !ok {
		return
	}
	br, err := h.store.Open(r.Context(), d)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	// A slot is taken only once the blob is known to exist, so that a 404
	// is never answered 429; HEAD sends no bytes and takes none.
	slot := r.Method == http.MethodGet
	var who string
	if slot && h.opts.Principal != nil {
		var ok bool
		if who, ok = h.downloader(w, r); !ok {
			br.Close()
			return
		}
	}
	if slot && !acquire(w, r, h.downloads, "downloads") {
		h.downloadDone(who)
		br.Close()
		return
	}
	defer func() {
		br.Close() // the buffers go back before the slot does
		if slot {
			release(h.downloads)
			h.downloadDone(who)
		}
	}()
	if !h.opts.WholeDigest {
		br.SkipWholeDigest()
	}
	sw := &stallWriter{ResponseWriter: w, rc: http.NewResponseController(w), d: h.opts.DownloadStallTimeout}
	defer sw.finish()
	w = sw
	if rg := r.Header.Get("Range"); rg != "" && !rangesCheap(rg, br.Size()) {
		// RFC 9110 section 14.2 lets a server ignore a Range header; a
		// client that sends one must accept the whole representation, which
		// costs no more than a plain GET (nginx and Apache do the same).
		r = r.Clone(r.Context())
		r.Header.Del("Range")
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("ETag", `"`+d.String()+`"`)
	// Content addressing: the bytes at this URL never change.
	hd.Set("Cache-Control", "public, max-age=31536000, immutable")
	if r.Method == http.MethodGet && r.Header.Get("Range") == "" && r.Header.Get("If-None-Match") == "" &&
		r.Header.Get("If-Match") == "" && r.Header.Get("If-Modified-Since") == "" && r.Header.Get("If-Unmodified-Since") == "" {
		// The common case, a whole download: the Reader's pipelined WriteTo
		// checks the next chunk while this one is sent.
		hd.Set("Accept-Ranges", "bytes")
		hd.Set("Content-Length", strconv.FormatInt(br.Size(), 10))
		w.WriteHeader(http.StatusOK)
		_, _ = br.WriteTo(w) // on failure the connection is cut short
		return
	}
	// ServeContent handles Range, If-Range and If-None-Match. A corrupt
	// chunk found after the headers went out aborts the response, so the
	// client sees a short body, never wrong bytes.
	http.ServeContent(w, r, "", time.Time{}, br)
}

// maxRanges is the most ranges a request may ask for at once. Each range
// that falls in another chunk loads and checks that chunk; a few ranges
// serve real clients, thousands only multiply work.
const maxRanges = 16

// rangesCheap reports whether serving Range header h costs no more than the
// chunks it covers: at most maxRanges ranges, in ascending order and not
// overlapping, so that each chunk is loaded and checked at most once (the
// blob.Reader keeps the last chunk). A header it cannot parse is left to
// http.ServeContent, which refuses it without reading anything.
func rangesCheap(h string, size int64) bool {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return true
	}
	if strings.Count(spec, ",") >= maxRanges {
		return false
	}
	next := int64(0) // where the previous range ended
	for part := range strings.SplitSeq(spec, ",") {
		part = textproto.TrimString(part)
		if part == "" {
			continue
		}
		first, last, ok := strings.Cut(part, "-")
		if !ok {
			return true
		}
		first, last = textproto.TrimString(first), textproto.TrimString(last)
		var start, end int64 // [start, end)
		if first == "" {
			n, err := strconv.ParseInt(last, 10, 64)
			if err != nil || n < 0 {
				return true
			}
			start, end = max(size-n, 0), size
		} else {
			a, err := strconv.ParseInt(first, 10, 64)
			if err != nil || a < 0 {
				return true
			}
			start, end = a, size
			if last != "" {
				b, err := strconv.ParseInt(last, 10, 64)
				if err != nil || b < a {
					return true
				}
				if b < size {
					end = b + 1
				}
			}
		}
		if start >= size || start == end {
			continue // satisfies nothing; ServeContent drops it
		}
		if start < next {
			return false
		}
		next = end
	}
	return true
}

// stallWriter gives every Write DownloadStallTimeout to complete. A whole
// download writes one chunk per Write, so the deadline moves once per
// chunk: no extra syscall or allocation on the hot path.
type stallWriter struct {
	http.ResponseWriter
	rc  *http.ResponseController
	d   time.Duration
	off bool // the connection does not support deadlines
}

func (s *stallWriter) Write(p []byte) (int, error) {
	s.renew()
	return s.ResponseWriter.Write(p)
}

func (s *stallWriter) renew() {
	if !s.off {
		s.off = s.rc.SetWriteDeadline(time.Now().Add(s.d)) != nil
	}
}

// finish flushes what the response still buffers within the deadline, then
// clears the deadline: net/http does not reset it for the connection's next
// request, which may come after a long idle time.
func (s *stallWriter) finish() {
	if s.off {
		return
	}
	s.renew()
	_ = s.rc.Flush()
	_ = s.rc.SetWriteDeadline(time.Time{})
}

// Unwrap lets http.ResponseController reach the connection.
func (s *stallWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

type uploadJSON struct {
	ID      string `json:"id"`
	Offset  int64  `json:"offset"`
	Expires string `json:"expires"`
}

func setUploadHeaders(w http.ResponseWriter, info blob.UploadInfo) {
	w.Header().Set("Location", "/v1/blobs/uploads/"+info.ID)
	w.Header().Set(HeaderUploadOffset, strconv.FormatInt(info.Offset, 10))
	w.Header().Set(HeaderUploadExpires, info.Expires.UTC().Format(time.RFC3339))
}

func (h *Handler) newUpload(w http.ResponseWriter, r *http.Request) {
	owner, ok := h.session(w, r)
	if !ok {
		return
	}
	info, err := h.store.NewUpload(r.Context(), owner)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	setUploadHeaders(w, info)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(uploadJSON{ID: info.ID, Offset: info.Offset, Expires: info.Expires.UTC().Format(time.RFC3339)})
}

func (h *Handler) statUpload(w http.ResponseWriter, r *http.Request) {
	owner, ok := h.session(w, r)
	if !ok {
		return
	}
	info, err := h.store.Upload(r.Context(), r.PathValue("id"), owner)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	setUploadHeaders(w, info)
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) appendUpload(w http.ResponseWriter, r *http.Request) {
	owner, ok := h.session(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	off, err := strconv.ParseInt(r.Header.Get(HeaderUploadOffset), 10, 64)
	if err != nil || off < 0 {
		writeError(w, r, http.StatusBadRequest, "invalid_argument",
			fmt.Sprintf("%s %s: header %s must be the non-negative offset the body starts at, got %q", r.Method, r.URL.Path, HeaderUploadOffset, r.Header.Get(HeaderUploadOffset)))
		return
	}
	// Compared without adding: a Content-Length near the largest int64
	// would wrap the sum and pass.
	if r.ContentLength > 0 && (off > h.opts.MaxBlobSize || r.ContentLength > h.opts.MaxBlobSize-off) {
		writeError(w, r, http.StatusRequestEntityTooLarge, "resource_exhausted",
			fmt.Sprintf("%s %s: offset %d plus Content-Length %d exceeds the limit of %d bytes", r.Method, r.URL.Path, off, r.ContentLength, h.opts.MaxBlobSize))
		return
	}
	if !acquire(w, r, h.uploads, "uploads") {
		return
	}
	defer release(h.uploads)
	// Without Content-Length the limit is enforced while reading; the
	// bytes before it are kept, as for any body that fails midway.
	body := h.body(w, r, off, true)
	defer body.release()
	if err := body.admit(); err != nil {
		h.fail(w, r, err) // before the store is asked: the session is untouched
		return
	}
	// net/http cancels the request's context when a body read fails; the
	// store, seeing that first, would drop the last bytes that did arrive.
	// The body's end (or failure) is what ends an append.
	info, err := h.store.Append(context.WithoutCancel(r.Context()), id, owner, off, body)
	if err == nil && r.ContentLength >= 0 && info.Offset != off+r.ContentLength {
		// The body ended early without an error from net/http (which
		// enforces Content-Length): the client's fault, not the server's.
		// What arrived is kept and Upload-Offset tells where to resume.
		err = &bodyError{http.StatusBadRequest, "invalid_argument",
			fmt.Sprintf("request body: ended after %d of its %d bytes", info.Offset-off, r.ContentLength)}
	}
	if err != nil {
		if info.ID != "" {
			w.Header().Set(HeaderUploadOffset, strconv.FormatInt(info.Offset, 10))
		}
		h.fail(w, r, body.failure(err))
		return
	}
	setUploadHeaders(w, info)
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) commitUpload(w http.ResponseWriter, r *http.Request) {
	owner, ok := h.session(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	q := r.URL.Query()
	d, ok := h.parseDigest(w, r, q.Get("digest"))
	if !ok {
		return
	}
	size := int64(-1)
	if s := q.Get("size"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			writeError(w, r, http.StatusBadRequest, "invalid_argument", fmt.Sprintf("%s %s: size %q is not a non-negative integer", r.Method, r.URL.Path, s))
			return
		}
		size = n
	}
	if r.ContentLength > 0 || (r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody) {
		if n, _ := io.CopyN(io.Discard, r.Body, 1); n > 0 {
			writeError(w, r, http.StatusBadRequest, "invalid_argument", fmt.Sprintf("%s %s: the commit request must have an empty body; send bytes with PATCH", r.Method, r.URL.Path))
			return
		}
	}
	// The PATCH limit keeps sessions within MaxBlobSize, but one filled
	// before the limit was lowered must not become a blob above it.
	up, err := h.store.Upload(r.Context(), id, owner)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if up.Offset > h.opts.MaxBlobSize {
		writeError(w, r, http.StatusRequestEntityTooLarge, "resource_exhausted",
			fmt.Sprintf("%s %s: the upload holds %d bytes, more than the limit of %d bytes per blob", r.Method, r.URL.Path, up.Offset, h.opts.MaxBlobSize))
		return
	}
	info, err := h.store.Commit(r.Context(), id, owner, d, size)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/blobs/"+d.String())
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{"digest": d.String(), "size": info.Size})
}

func (h *Handler) abortUpload(w http.ResponseWriter, r *http.Request) {
	owner, ok := h.session(w, r)
	if !ok {
		return
	}
	if err := h.store.Abort(r.Context(), r.PathValue("id"), owner); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
