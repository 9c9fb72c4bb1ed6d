package server

import (
	"compress/gzip"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/hallmark-dev/hallmark/api/gen/hallmark/audit/v1/auditv1connect"
	"github.com/hallmark-dev/hallmark/api/gen/hallmark/ledger/v1/ledgerv1connect"
	"github.com/hallmark-dev/hallmark/api/gen/hallmark/policy/v1/policyv1connect"
	"github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1/registryv1connect"
	"github.com/hallmark-dev/hallmark/api/gen/hallmark/shadow/v1/shadowv1connect"
	"github.com/hallmark-dev/hallmark/internal/blobhttp"
	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/registry"
	"github.com/hallmark-dev/hallmark/registry/blob"
)

// Config is what New needs: the opened stores and the limits. The stores
// stay the caller's to close.
type Config struct {
	Registry *registry.Registry // required
	Ledger   *ledger.Log        // required: the registry's ledger
	Blobs    *blob.Store        // required: the registry's blob store
	// Logger receives request logs (debug) and failures. The default
	// discards them.
	Logger *slog.Logger
	Limits Limits
	// PolicyMinCoverage is the coverage floor, in percent, a policy set
	// must reach to be published. Zero means
	// registry.DefaultPolicyMinCoverage; a negative value means no floor.
	PolicyMinCoverage float64
	// TLS, if set, makes Run serve HTTPS with it (LoadTLS builds it); with
	// ClientCAs set, verified client certificates authenticate (auth.go).
	// Nil means plain HTTP/1.1 and h2c.
	TLS *tls.Config
	// ShutdownTimeout bounds Run's graceful drain of open requests once
	// its context is done; requests still open then are cut off. Zero
	// means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
}

// Limits bound what one request may cost. The zero value of a field means
// its default.
type Limits struct {
	// MaxMessageBytes bounds one Connect request message (a version's file
	// list and signature bundle travel in it). Larger messages fail with
	// ResourceExhausted before they are decoded; gzip-compressed ones as
	// soon as they inflate past it. The default is 8 MiB.
	MaxMessageBytes int
	// RPCTimeout bounds the handling of one RPC, and, counted apart from
	// it, the arrival of the RPC's request body: a body still arriving
	// RPCTimeout after the call was admitted fails it with
	// DeadlineExceeded (gateRPCs). The default is 30 seconds.
	RPCTimeout time.Duration
	// MaxBlobSize bounds one blob. The default is the blob store's.
	MaxBlobSize int64
	// MaxConcurrentUploads bounds blob uploads streaming at once; more get
	// 429. The default is 8.
	MaxConcurrentUploads int
	// MaxConcurrentDownloads bounds blob downloads streaming at once; more
	// get 429. The default is 64.
	MaxConcurrentDownloads int
	// MinFreeBytes is the free space the blob store's disk keeps: uploads
	// that would take it below are refused with 507. Zero means blobhttp's
	// default, derived from the store's options (448 MiB by default).
	MinFreeBytes int64
	// UploadStallTimeout aborts an upload whose body sends nothing for this
	// long. The default is one minute.
	UploadStallTimeout time.Duration
	// ReadHeaderTimeout bounds reading a request's headers (Run). The
	// default is 10 seconds.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes idle keep-alive connections (Run). The default is
	// two minutes.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers (Run). The default is
	// 64 KiB.
	MaxHeaderBytes int
	// MaxExportEntries bounds the ledger range of one audit export (built
	// in memory; one at a time). The default is export.DefaultMaxEntries.
	MaxExportEntries uint64
	// MinUploadRate and DownloadStallTimeout are blobhttp's options of the
	// same names (zero: their defaults, 64 KiB/s and one minute; a
	// negative MinUploadRate turns the floor off).
	MinUploadRate        int64
	DownloadStallTimeout time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.MaxMessageBytes <= 0 {
		l.MaxMessageBytes = 8 << 20
	}
	if l.RPCTimeout <= 0 {
		l.RPCTimeout = 30 * time.Second
	}
	if l.MaxConcurrentUploads <= 0 {
		l.MaxConcurrentUploads = 8
	}
	if l.MaxConcurrentDownloads <= 0 {
		l.MaxConcurrentDownloads = 64
	}
	if l.UploadStallTimeout <= 0 {
		l.UploadStallTimeout = time.Minute
	}
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = 10 * time.Second
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = 2 * time.Minute
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = 64 << 10
	}
	return l
}

// server holds what the handlers share.
type server struct {
	cfg     Config
	reg     *registry.Registry
	log     *slog.Logger
	metrics *metrics
	// exporting holds a token while an audit export is being built: one at
	// a time, since each may hold hundreds of megabytes.
	exporting chan struct{}
	denials   denialLimiter
	// inflated counts request bytes out of gzip (boundedGzip).
	inflated atomic.Int64
}

// New returns the server's handler. It does not start anything: Run serves
// it, tests mount it on httptest.
func New(cfg Config) (http.Handler, error) {
	_, h, err := build(cfg)
	return h, err
}

// build is New, also returning the server state behind the handler (tests
// read its counters).
func build(cfg Config) (*server, http.Handler, error) {
	if cfg.Registry == nil || cfg.Ledger == nil || cfg.Blobs == nil {
		return nil, nil, errors.New("server: Config needs Registry, Ledger and Blobs")
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &server{cfg: cfg, reg: cfg.Registry, log: cfg.Logger, metrics: newMetrics(), exporting: make(chan struct{}, 1)}

	opts := []connect.HandlerOption{
		// Calls are authenticated and authorised before their body is
		// read (gateRPCs, which counts the refused ones itself); the
		// interceptors count the admitted ones and bound their time.
		connect.WithInterceptors(metricsInterceptor{s.metrics}, authInterceptor{s}),
		connect.WithReadMaxBytes(cfg.Limits.MaxMessageBytes),
		connect.WithSendMaxBytes(s.sendMaxBytes()),
		// Replaces connect's default gzip, whose decompressor is unbounded
		// (see boundedGzip).
		connect.WithCompression("gzip",
			func() connect.Decompressor {
				return &boundedGzip{max: int64(cfg.Limits.MaxMessageBytes), inflated: &s.inflated}
			},
			func() connect.Compressor { return gzip.NewWriter(io.Discard) }),
	}
	mux := http.NewServeMux()
	rpc := func(path string, h http.Handler) { mux.Handle(path, s.gateRPCs(h)) }
	rpc(registryv1connect.NewRegistryServiceHandler(registryService{s}, opts...))
	rpc(registryv1connect.NewAccessServiceHandler(accessService{s}, opts...))
	rpc(ledgerv1connect.NewLedgerServiceHandler(ledgerService{s}, opts...))
	rpc(shadowv1connect.NewShadowServiceHandler(shadowService{s}, opts...))
	rpc(registryv1connect.NewPromotionServiceHandler(promotionService{s}, opts...))
	rpc(policyv1connect.NewPolicyServiceHandler(policyService{s}, opts...))
	rpc(auditv1connect.NewAuditServiceHandler(auditService{s}, opts...))

	blobs := blobhttp.NewHandler(cfg.Blobs, blobhttp.Options{
		Authorize:              s.authorizeBlob,
		Principal:              s.blobPrincipal,
		MaxBlobSize:            cfg.Limits.MaxBlobSize,
		MaxConcurrentUploads:   cfg.Limits.MaxConcurrentUploads,
		MaxConcurrentDownloads: cfg.Limits.MaxConcurrentDownloads,
		MinFreeBytes:           cfg.Limits.MinFreeBytes,
		StallTimeout:           cfg.Limits.UploadStallTimeout,
		MinUploadRate:          cfg.Limits.MinUploadRate,
		DownloadStallTimeout:   cfg.Limits.DownloadStallTimeout,
		Logger:                 s.log,
	})
	mux.Handle("/v1/blobs/", s.metrics.countBlobs(blobs))

	mux.Handle("GET /metrics", s.metrics.handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", s.ready)
	// The ledger's read-only tlog-tiles paths: public, like any
	// transparency log, so that monitors and auditors need no token.
	mux.Handle("/", cfg.Ledger.Handler())
	return s, s.logRequests(s.withClientCert(mux)), nil
}

// sendMaxBytes bounds one response message. Responses are allowed more
// than requests: a page of versions or entries may be larger than anything
// a caller sends.
func (s *server) sendMaxBytes() int { return 4 * s.cfg.Limits.MaxMessageBytes }

// boundedGzip is the handlers' gzip decompressor. connect-go limits a
// message's decompressed size with WithReadMaxBytes, but when a message is
// over it, it inflates the rest into io.Discard to report the full size,
// before any interceptor runs: a gzip body of 8 MiB of zeros inflates to
// 8 GiB, seconds of CPU for one call of the lowest role. This reader fails
// as soon as more than max bytes have come out, so that one message
// inflates at most max+1 bytes (plus flate's window). Connect passes the
// *connect.Error through as the call's error.
type boundedGzip struct {
	gzip.Reader
	max int64 // the handlers' read limit: MaxMessageBytes
	n   int64 // bytes out since the last Reset
	// inflated counts every byte any of the server's decompressors let
	// out, for tests and accounting.
	inflated *atomic.Int64
}

func (d *boundedGzip) Read(p []byte) (int, error) {
	if d.n > d.max {
		return 0, d.tooLarge()
	}
	// Never inflate more than one byte past the limit: that byte is how
	// connect's own check (bytes read > max) sees the overflow too.
	if rest := d.max + 1 - d.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := d.Reader.Read(p)
	d.n += int64(n)
	d.inflated.Add(int64(n))
	if d.n > d.max {
		return n, d.tooLarge()
	}
	return n, err
}

func (d *boundedGzip) tooLarge() error {
	return connect.NewError(connect.CodeResourceExhausted,
		fmt.Errorf("gzip request message inflates to more than %d bytes, the server's limit for one request message", d.max))
}

// Reset prepares d for another message (connect pools decompressors).
func (d *boundedGzip) Reset(r io.Reader) error {
	d.n = 0
	return d.Reader.Reset(r)
}

// readyTimeout bounds a readiness check's wait for the sequencer.
const readyTimeout = 2 * time.Second

// ready answers 200 while the ledger and the blob store serve reads and the
// projection matches the ledger head. It writes nothing: CheckProjection
// runs a read-only function in the sequencer (which then commits no batch
// for it), so that it sees the state and the tree at the same size, and so
// that a wedged sequencer shows as not ready (after readyTimeout) instead
// of a probe that hangs.
func (s *server) ready(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if _, err := s.cfg.Ledger.CheckpointAt(0); errors.Is(err, ledger.ErrClosed) {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "ledger closed\n")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if err := s.reg.CheckProjection(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		if errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil {
			fmt.Fprintf(w, "ledger sequencer busy: no answer within %v\n", readyTimeout)
			return
		}
		fmt.Fprintf(w, "projection: %v\n", err)
		return
	}
	io.WriteString(w, "ready\n")
}

// logRequests logs each request at debug level, and server errors at warn.
func (s *server) logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		cw := &countingWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(cw, r)
		level := slog.LevelDebug
		if cw.code >= 500 {
			level = slog.LevelWarn
		}
		if !s.log.Enabled(r.Context(), level) {
			return
		}
		s.log.LogAttrs(r.Context(), level, "request",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", cw.code), slog.Int64("bytes", cw.n),
			slog.Duration("duration", time.Since(start)), slog.String("remote", r.RemoteAddr))
	})
}

// Run serves New(cfg) on ln until ctx is done, then shuts down: it logs
// "shutting down", stops accepting connections and drains open requests
// for at most cfg.ShutdownTimeout. Requests still open then are cut off
// (their connections closed, a warning logs how many) and Run waits for
// their handlers to return. So when Run returns, no handler is using the
// stores and the caller may close them; the one exception is
// ErrHandlersRunning. Without cfg.TLS it speaks HTTP/1.1 and unencrypted
// HTTP/2 (h2c), so gRPC clients work without TLS; with it, HTTPS with
// HTTP/1.1 and HTTP/2 chosen by ALPN. It always closes ln.
//
// A failure to serve (ln failing) shuts down the same way and is returned.
func Run(ctx context.Context, cfg Config, ln net.Listener) error {
	defer ln.Close()
	h, err := New(cfg)
	if err != nil {
		return err
	}
	lim := cfg.Limits.withDefaults()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	drain := cfg.ShutdownTimeout
	if drain <= 0 {
		drain = DefaultShutdownTimeout
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	if cfg.TLS != nil {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	active := &handlers{}
	srv := &http.Server{
		Handler:           active.track(h),
		Protocols:         &protocols,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		// No ReadTimeout or WriteTimeout: a multi-GB blob transfer takes
		// as long as it takes; stalled uploads are cut by the blob
		// handler, RPC request bodies by gateRPCs' read deadline and RPCs
		// by RPCTimeout.
		IdleTimeout:    lim.IdleTimeout,
		MaxHeaderBytes: lim.MaxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:    func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		TLSConfig:      cfg.TLS,
	}
	errc := make(chan error, 1)
	go func() {
		if cfg.TLS != nil {
			// The certificate is in TLSConfig; ServeTLS adds the ALPN
			// protocols of srv.Protocols.
			errc <- srv.ServeTLS(ln, "", "")
			return
		}
		errc <- srv.Serve(ln)
	}()
	var serveErr error
	select {
	case serveErr = <-errc:
		log.Error("shutting down", "reason", "serving failed", "err", serveErr, "open_requests", active.count(), "drain_timeout", drain)
	case <-ctx.Done():
		log.Info("shutting down", "reason", context.Cause(ctx), "open_requests", active.count(), "drain_timeout", drain)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drain)
	defer cancel()
	switch err := srv.Shutdown(sctx); {
	case errors.Is(err, context.DeadlineExceeded):
		// Past the drain: cut off what is still open. Closing a
		// connection cancels its requests' contexts and fails their reads
		// and writes, so their handlers return soon.
		cut := active.count()
		srv.Close()
		log.Warn("drain timed out: cut off the requests still open", "cut_off", cut, "drain_timeout", drain)
	case err != nil && serveErr == nil:
		// Shutdown drained the connections; only closing ln failed.
		log.Warn("shutting down: closing the listener", "err", err)
	}
	if !active.closeWhenIdle(handlerExitTimeout) {
		return fmt.Errorf("%w %v after their connections were closed (%d of them)", ErrHandlersRunning, handlerExitTimeout, active.count())
	}
	if serveErr == nil {
		serveErr = <-errc
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serving: %w", serveErr)
	}
	return nil
}

// DefaultShutdownTimeout is Run's drain of open requests when
// Config.ShutdownTimeout is zero.
const DefaultShutdownTimeout = 10 * time.Second

// handlerExitTimeout bounds Run's wait, after cutting off the requests left
// at the end of the drain, for their handlers to return. Handlers stop at
// their next read, write or context check; one that takes longer is stuck.
const handlerExitTimeout = 10 * time.Second

// ErrHandlersRunning is returned by Run when request handlers were still
// running handlerExitTimeout after their connections were closed. They may
// still use the stores, which must then be left open (the process should
// exit without closing them, as after a crash, which loses nothing
// acknowledged).
var ErrHandlersRunning = errors.New("request handlers still running")

// handlers counts the request handlers running, so that Run returns only
// once they have all returned: http.Server.Close closes connections but
// does not wait for their handlers.
type handlers struct {
	mu      sync.Mutex
	n       int
	closed  bool            // set once idle at shutdown: later requests get 503
	waiters []chan struct{} // closed when n drops to zero
}

func (a *handlers) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		if a.closed {
			a.mu.Unlock()
			// A straggler on a connection that was being closed: the
			// stores may be closing.
			w.Header().Set("Connection", "close")
			http.Error(w, "server shutting down", http.StatusServiceUnavailable)
			return
		}
		a.n++
		a.mu.Unlock()
		defer func() {
			a.mu.Lock()
			a.n--
			if a.n == 0 {
				for _, c := range a.waiters {
					close(c)
				}
				a.waiters = nil
			}
			a.mu.Unlock()
		}()
		h.ServeHTTP(w, r)
	})
}

func (a *handlers) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

// closeWhenIdle waits at most d for no handler to be running, and then
// refuses every later request; it reports whether that happened.
func (a *handlers) closeWhenIdle(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		a.mu.Lock()
		if a.n == 0 {
			a.closed = true
			a.mu.Unlock()
			return true
		}
		c := make(chan struct{})
		a.waiters = append(a.waiters, c)
		a.mu.Unlock()
		select {
		case <-c:
		case <-t.C:
			return false
		}
	}
}
