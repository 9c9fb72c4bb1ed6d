package blobhttp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
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

	// MaxBlobSize is the largest blob accepted; larger ones get 413 before
	// any byte is read. The default is the store's MaxBlobSize.
	MaxBlobSize int64

	// MaxConcurrentUploads bounds PUT and PATCH requests streaming at once;
	// more get 429 with Retry-After. Each costs two chunks of memory. The
	// default is 8.
	MaxConcurrentUploads int

	// StallTimeout aborts an upload whose body sends nothing for this long,
	// so a dead client cannot hold an upload slot. The default is one
	// minute.
	StallTimeout time.Duration

	// WholeDigest makes the server also re-hash the whole file on every
	// whole download and cut the response short before its last bytes if
	// the digest differs. The default, false, checks every chunk against
	// its digest and the chunk list against the record's checksum (see
	// blob.Reader.SkipWholeDigest), which already proves the bytes are the
	// ones verified at upload; the digest is the URL, and Client.Download
	// checks it end to end. Turning it on costs one SHA-256 pass per
	// download (about a third of a verified pull's CPU).
	WholeDigest bool
}

// Handler serves the blob protocol for one store.
type Handler struct {
	store *blob.Store
	opts  Options
	slots chan struct{}
	mux   *http.ServeMux
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
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = time.Minute
	}
	h := &Handler{store: store, opts: opts, slots: make(chan struct{}, opts.MaxConcurrentUploads), mux: http.NewServeMux()}
	h.mux.HandleFunc("PUT /v1/blobs/{digest}", h.putBlob)
	h.mux.HandleFunc("GET /v1/blobs/{digest}", h.getBlob) // and HEAD
	h.mux.HandleFunc("POST /v1/blobs/uploads", h.newUpload)
	h.mux.HandleFunc("PATCH /v1/blobs/uploads/{id}", h.appendUpload)
	h.mux.HandleFunc("HEAD /v1/blobs/uploads/{id}", h.statUpload)
	h.mux.HandleFunc("PUT /v1/blobs/uploads/{id}", h.commitUpload)
	h.mux.HandleFunc("DELETE /v1/blobs/uploads/{id}", h.abortUpload)
	return h
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
	var mismatch *mismatchJSON
	switch {
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
	if errors.Is(err, ErrUnauthenticated) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="hallmark"`)
		writeError(w, r, http.StatusUnauthorized, "unauthenticated", fmt.Sprintf("%s %s: %v", r.Method, r.URL.Path, err))
		return false
	}
	writeError(w, r, http.StatusForbidden, "permission_denied", fmt.Sprintf("%s %s: %v", r.Method, r.URL.Path, err))
	return false
}

// acquire takes an upload slot, or answers 429.
func (h *Handler) acquire(w http.ResponseWriter, r *http.Request) bool {
	select {
	case h.slots <- struct{}{}:
		return true
	default:
		w.Header().Set("Retry-After", "1")
		writeError(w, r, http.StatusTooManyRequests, "resource_exhausted",
			fmt.Sprintf("%s %s: %d uploads already in progress, the server's limit", r.Method, r.URL.Path, cap(h.slots)))
		return false
	}
}

func (h *Handler) release() { <-h.slots }

// body wraps the request body so that a stalled client times out: each
// Read pushes the connection's read deadline StallTimeout ahead.
func (h *Handler) body(w http.ResponseWriter, r *http.Request) io.Reader {
	return &stallReader{r: r.Body, rc: http.NewResponseController(w), d: h.opts.StallTimeout}
}

type stallReader struct {
	r  io.Reader
	rc *http.ResponseController
	d  time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	_ = s.rc.SetReadDeadline(time.Now().Add(s.d)) // unsupported writers: no stall limit
	return s.r.Read(p)
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
	if !h.acquire(w, r) {
		return
	}
	defer h.release()
	if err := h.store.Put(r.Context(), d, r.ContentLength, h.body(w, r)); err != nil {
		h.fail(w, r, err)
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
	defer br.Close()
	if !h.opts.WholeDigest {
		br.SkipWholeDigest()
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
	if !h.authorize(w, r, true) {
		return
	}
	info, err := h.store.NewUpload(r.Context())
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
	if !h.authorize(w, r, true) {
		return
	}
	info, err := h.store.Upload(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	setUploadHeaders(w, info)
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) appendUpload(w http.ResponseWriter, r *http.Request) {
	if !h.authorize(w, r, true) {
		return
	}
	id := r.PathValue("id")
	off, err := strconv.ParseInt(r.Header.Get(HeaderUploadOffset), 10, 64)
	if err != nil || off < 0 {
		writeError(w, r, http.StatusBadRequest, "invalid_argument",
			fmt.Sprintf("%s %s: header %s must be the non-negative offset the body starts at, got %q", r.Method, r.URL.Path, HeaderUploadOffset, r.Header.Get(HeaderUploadOffset)))
		return
	}
	if r.ContentLength > 0 && off+r.ContentLength > h.opts.MaxBlobSize {
		writeError(w, r, http.StatusRequestEntityTooLarge, "resource_exhausted",
			fmt.Sprintf("%s %s: offset %d plus Content-Length %d exceeds the limit of %d bytes", r.Method, r.URL.Path, off, r.ContentLength, h.opts.MaxBlobSize))
		return
	}
	if !h.acquire(w, r) {
		return
	}
	defer h.release()
	info, err := h.store.Append(r.Context(), id, off, h.body(w, r))
	if err != nil {
		if info.ID != "" {
			w.Header().Set(HeaderUploadOffset, strconv.FormatInt(info.Offset, 10))
		}
		h.fail(w, r, err)
		return
	}
	if r.ContentLength >= 0 && info.Offset != off+r.ContentLength {
		// Cannot happen with net/http (it enforces Content-Length), but the
		// client must not believe more was stored than was.
		h.fail(w, r, fmt.Errorf("stored %d bytes of a %d-byte body", info.Offset-off, r.ContentLength))
		return
	}
	setUploadHeaders(w, info)
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) commitUpload(w http.ResponseWriter, r *http.Request) {
	if !h.authorize(w, r, true) {
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
	info, err := h.store.Commit(r.Context(), id, d, size)
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
	if !h.authorize(w, r, true) {
		return
	}
	if err := h.store.Abort(r.Context(), r.PathValue("id")); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
