package shadow

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// ErrProxyConfig is returned by NewProxy for an unusable configuration.
var ErrProxyConfig = errors.New("invalid shadow proxy configuration")

// ProxyConfig configures a Proxy. Zero values mean the documented defaults.
type ProxyConfig struct {
	// Primary is the production model server; callers get its answers.
	Primary *url.URL
	// Shadow is the candidate; it gets copies and its answers are only
	// compared. Required unless DisableMirror.
	Shadow *url.URL
	// Aggregator receives one Observation per request. Required.
	Aggregator *Aggregator
	// SegmentHeader names the request header holding the segment. At most
	// one of SegmentHeader and SegmentPointer may be set; with neither,
	// every request is in DefaultSegment.
	SegmentHeader string
	// SegmentPointer is an RFC 6901 pointer into the JSON request body
	// holding the segment (a string or a number).
	SegmentPointer string
	// QueueSize bounds the copies waiting for a worker; a copy that finds
	// the queue full is dropped and counted. The default is 1024.
	QueueSize int
	// Workers is the number of goroutines sending copies to the shadow,
	// hence the most concurrent shadow requests. The default is 16.
	Workers int
	// Timeout bounds each shadow request, reading its body included. The
	// default is 5s.
	Timeout time.Duration
	// BodyLimit is the largest request or primary response body that is
	// mirrored and compared; larger ones are proxied untouched, not
	// mirrored, and counted as oversize. The default is 1 MiB.
	BodyLimit int64
	// DisableMirror turns mirroring off: the proxy only forwards and counts
	// requests (the reference for measuring mirroring's cost).
	DisableMirror bool
	// PrimaryTransport defaults to a tuned clone of http.DefaultTransport
	// (a keep-alive pool sized for proxying). ShadowTransport, when nil,
	// means one keep-alive HTTP/1.1 connection per worker for a plain http
	// shadow, and a tuned clone of http.DefaultTransport for https or when
	// the environment names a proxy for the shadow. The default transports
	// never compress transparently: both upstreams get exactly the caller's
	// Accept-Encoding, and the caller gets the primary's bytes. A transport
	// given here should do the same (DisableCompression), or the caller's
	// response may differ from the primary's.
	PrimaryTransport http.RoundTripper
	ShadowTransport  http.RoundTripper
}

// Proxy is an http.Handler that forwards every request to the primary and
// returns the primary's response unchanged, while copies go to the shadow
// through a bounded queue. THE CALLER NEVER WAITS FOR THE SHADOW: enqueueing
// never blocks, and the shadow's answer is only compared.
//
// What is mirrored: requests other than HEAD, CONNECT and protocol upgrades
// (Upgrade header), whose bodies and the primary's 2xx response bodies fit
// BodyLimit, except 204 and 205 answers, which carry no prediction (counted
// as not mirrored). Compressed responses (gzip, deflate) are decoded by the
// workers before comparison, and their decoded size must fit BodyLimit too.
// Requests and responses are otherwise proxied as httputil.ReverseProxy does
// (hop-by-hop headers removed, upgrades tunnelled), except that the
// caller's Forwarded and X-Forwarded-* headers reach the primary as they
// reach the shadow; a primary that cannot be reached gets the caller a 502
// with an empty body, as ReverseProxy's default.
//
// EVERY REQUEST IS RECORDED EXACTLY ONCE, including one whose response
// breaks off while it streams to the caller.
type Proxy struct {
	cfg    ProxyConfig
	agg    *Aggregator
	cmp    *Comparator
	segPtr *Pointer
	rp     *httputil.ReverseProxy
	shadow http.RoundTripper // called directly: no redirects to follow, no client bookkeeping
	// direct is the shadow's host:port when each worker talks to it over
	// its own connection (see shadowConn); "" to use shadow.
	direct  string
	queue   chan *exchange
	wg      sync.WaitGroup
	exPool  sync.Pool
	bufPool copyBufferPool

	// base is the parent context of every shadow request; Shutdown
	// cancels it when its deadline passes.
	base       context.Context
	cancelBase context.CancelFunc
	// mu orders enqueueing against Shutdown: once closing is set (under
	// the write lock), no copy enters the queue, so the workers' final
	// drain sees every queued copy.
	mu      sync.RWMutex
	closing bool
	quit    chan struct{}
}

type stateKey struct{}

// exchange is one request's state, pooled: the buffered request body, what
// the reverse proxy's hooks learn about the primary's response, the copy of
// that response, and, when mirrored, the job the worker finishes. It goes
// back to the pool when the request is recorded (dropped, not mirrored) or
// when the worker is done with it.
type exchange struct {
	// body is the request body, when buffered. It is never pooled nor
	// written after it is read: both transports may still read it after
	// their RoundTrip returned (RoundTripper's contract), and it goes to them
	// as a *bytes.Reader, which net/http writes with the headers in one
	// write instead of flushing the headers first (a syscall per upstream).
	body    []byte
	hasBody bool

	limit  int64 // capture limit; -1: do not capture
	status int
	// failed: the primary could not be reached, or its body broke off.
	failed   bool
	over     bool
	capture  bytes.Buffer // the primary's response body
	encoding []string     // the primary's Content-Encoding values, when captured
	cb       captureBody
	lr       io.LimitedReader // for the shadow's response body: io.LimitReader allocates

	method   string
	path     string
	rawPath  string
	rawQuery string
	header   http.Header
	segment  string // resolved from the header; "" to resolve from the body
	latency  time.Duration
}

// NewProxy validates cfg and starts the shadow workers. Call Shutdown (or
// Close) after the HTTP server has stopped calling ServeHTTP.
func NewProxy(cfg ProxyConfig) (*Proxy, error) {
	if cfg.Primary == nil || cfg.Primary.Scheme == "" || cfg.Primary.Host == "" {
		return nil, fmt.Errorf("%w: primary URL must be absolute", ErrProxyConfig)
	}
	if !cfg.DisableMirror && (cfg.Shadow == nil || cfg.Shadow.Scheme == "" || cfg.Shadow.Host == "") {
		return nil, fmt.Errorf("%w: shadow URL must be absolute", ErrProxyConfig)
	}
	if cfg.Aggregator == nil {
		return nil, fmt.Errorf("%w: no aggregator", ErrProxyConfig)
	}
	if cfg.SegmentHeader != "" && cfg.SegmentPointer != "" {
		return nil, fmt.Errorf("%w: segment from a header or a body pointer, not both", ErrProxyConfig)
	}
	if cfg.QueueSize < 0 || cfg.Workers < 0 || cfg.Timeout < 0 || cfg.BodyLimit < 0 {
		return nil, fmt.Errorf("%w: negative queue size, workers, timeout or body limit", ErrProxyConfig)
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = 1024
	}
	if cfg.Workers == 0 {
		cfg.Workers = 16
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.BodyLimit == 0 {
		cfg.BodyLimit = 1 << 20
	}
	p := &Proxy{cfg: cfg, agg: cfg.Aggregator, cmp: cfg.Aggregator.Comparator(), quit: make(chan struct{})}
	p.base, p.cancelBase = context.WithCancel(context.Background())
	if cfg.SegmentPointer != "" {
		ptr, err := ParsePointer(cfg.SegmentPointer)
		if err != nil {
			return nil, fmt.Errorf("%w: segment pointer: %w", ErrProxyConfig, err)
		}
		p.segPtr = &ptr
	}
	p.exPool.New = func() any { return new(exchange) }
	pt := cfg.PrimaryTransport
	if pt == nil {
		// Idle connections for every concurrent caller: a pool smaller than
		// the callers' concurrency closes and redials connections under
		// load, which shows as p99 spikes.
		pt = newTransport(1024)
	}
	primary := cfg.Primary
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(primary)
			pr.Out.Host = pr.In.Host
			// ReverseProxy strips the forwarding headers before Rewrite,
			// for proxies that are the edge. This one is a tap between a
			// load balancer and the model server: the primary must see the
			// client address and scheme the balancer set, as it would
			// without the tap, and as the shadow does.
			copyForwarded(pr.Out.Header, pr.In.Header)
			// ReverseProxy wraps the body in a reader net/http does not
			// know to be in memory, so the transport would flush the
			// headers and write the body in a second syscall. A buffered
			// body is in memory and never reused: hand it over unwrapped.
			if pr.Out.Body != nil {
				if ex, _ := pr.In.Context().Value(stateKey{}).(*exchange); ex != nil && ex.hasBody {
					pr.Out.Body = pr.In.Body
				}
			}
		},
		Transport:      pt,
		BufferPool:     &p.bufPool, // the default allocates 32 KiB per request
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.errorHandler,
		ErrorLog:       log.New(io.Discard, "", 0), // a library does not log
	}
	if !cfg.DisableMirror {
		st := cfg.ShadowTransport
		if st == nil {
			if addr, ok := directAddr(cfg.Shadow); ok {
				p.direct = addr
			} else {
				st = newTransport(cfg.Workers) // one idle connection per worker
			}
		}
		p.shadow = st
		p.queue = make(chan *exchange, cfg.QueueSize)
		for i := 0; i < cfg.Workers; i++ {
			p.wg.Add(1)
			go p.worker()
		}
	}
	return p, nil
}

func newTransport(idlePerHost int) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 0 // no global cap
	t.MaxIdleConnsPerHost = idlePerHost
	// Transparent gzip would ask an upstream for gzip the caller did not
	// ask for, and hand the caller a decompressed, re-framed body.
	t.DisableCompression = true
	t.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	return t
}

// forwardedHeaders are the forwarding headers ReverseProxy strips from
// outbound requests before calling Rewrite.
var forwardedHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

// copyForwarded copies the caller's forwarding headers from in to out,
// except those the caller's Connection header names (hop-by-hop, which
// ReverseProxy has removed and the shadow copy leaves out too). The value
// slices are shared: neither header is modified afterwards.
func copyForwarded(out, in http.Header) {
	for _, k := range forwardedHeaders {
		if v, ok := in[k]; ok && !namedByConnection(in, k) {
			out[k] = v
		}
	}
}

// namedByConnection reports whether h's Connection header lists name.
func namedByConnection(h http.Header, name string) bool {
	for _, c := range h["Connection"] {
		for f := range strings.SplitSeq(c, ",") {
			if strings.EqualFold(strings.TrimSpace(f), name) {
				return true
			}
		}
	}
	return false
}

// copyBufferPool lends ReverseProxy its 32 KiB copy buffers.
type copyBufferPool struct{ p sync.Pool }

func (b *copyBufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *copyBufferPool) Put(buf []byte) { b.p.Put(&buf) }

// Close is Shutdown without a deadline: every queued copy is still sent
// (each bounded by the shadow timeout).
func (p *Proxy) Close() { _ = p.Shutdown(context.Background()) }

// Shutdown stops mirroring (requests still being served are forwarded and
// counted as drops) and lets the workers send the copies already queued
// until ctx is done. Then it abandons the rest: shadow requests in flight
// are cancelled and copies not yet sent are counted as drops, so every
// request is counted exactly once. It returns when the workers have
// stopped: nil if everything queued was sent, ctx.Err() otherwise. Call it
// after the HTTP server has stopped calling ServeHTTP, so that the final
// counts are complete.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	if !p.closing {
		p.closing = true
		close(p.quit)
	}
	p.mu.Unlock()
	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		p.cancelBase()
		<-done
		return ctx.Err()
	}
}

func (p *Proxy) getExchange() *exchange {
	ex := p.exPool.Get().(*exchange)
	ex.limit = -1
	return ex
}

// putExchange recycles ex. Buffers that grew large are let go, so that the
// pool does not pin BodyLimit-sized buffers after a burst of big bodies.
func (p *Proxy) putExchange(ex *exchange) {
	const keep = 64 << 10
	capture := ex.capture
	*ex = exchange{}
	if capture.Cap() <= keep {
		capture.Reset()
		ex.capture = capture
	}
	p.exPool.Put(ex)
}

// mirrorable reports whether a request's exchange can be compared: HEAD has
// no response body, CONNECT and upgrades switch protocols.
func mirrorable(r *http.Request) bool {
	return r.Method != http.MethodHead && r.Method != http.MethodConnect && r.Header.Get("Upgrade") == ""
}

// ServeHTTP forwards r to the primary and schedules its copy.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	mirror := p.queue != nil && mirrorable(r)
	limit := p.cfg.BodyLimit
	oversize := false
	ex := p.getExchange()
	if mirror {
		if r.ContentLength > limit {
			oversize = true
		} else if r.Body != nil && r.Body != http.NoBody {
			body, err := readUpTo(r.Body, r.ContentLength, limit+1)
			switch {
			case err != nil:
				// The caller's body broke off: forward what arrived and the
				// error, so the primary's transport reports it as usual.
				r.Body = struct {
					io.Reader
					io.Closer
				}{io.MultiReader(bytes.NewReader(body), errReader{err}), r.Body}
				mirror = false
			case int64(len(body)) > limit:
				// Chunked (or lying) bodies over the limit: the buffered
				// prefix, then the rest as it arrives.
				oversize = true
				r.Body = struct {
					io.Reader
					io.Closer
				}{io.MultiReader(bytes.NewReader(body), r.Body), r.Body}
			default:
				ex.body, ex.hasBody = body, true
				r.Body = io.NopCloser(bytes.NewReader(body))
				r.ContentLength = int64(len(body))
				// The proxy has taken the body on the primary's behalf:
				// asking the primary for 100-continue would only add a
				// round trip.
				r.Header.Del("Expect")
			}
		}
	}
	if mirror && !oversize {
		ex.limit = limit
	}
	p.forward(w, r.WithContext(context.WithValue(r.Context(), stateKey{}, ex)), ex, start, oversize)
	latency := time.Since(start)

	obs := Observation{PrimaryLatency: latency}
	ok := !ex.failed && (ex.status >= 200 && ex.status <= 299 || ex.status == http.StatusSwitchingProtocols && r.Header.Get("Upgrade") != "")
	switch {
	case !ok && r.Context().Err() != nil:
		// The caller went away: not the primary's failure, and the latency
		// means nothing.
		obs.Outcome, obs.PrimaryLatency = OutcomeNotMirrored, 0
	case !ok:
		obs.Outcome = OutcomePrimaryError
	case !mirror && !oversize,
		ex.status == http.StatusNoContent || ex.status == http.StatusResetContent:
		// A success without a body has no prediction to compare, and is
		// not the primary's failure.
		obs.Outcome = OutcomeNotMirrored
	case oversize || ex.over:
		obs.Outcome = OutcomeOversize
	}
	if obs.Outcome != 0 {
		p.recordUnmirrored(obs, r.Header, ex, oversize || ex.over)
		return
	}
	ex.method, ex.path, ex.rawPath, ex.rawQuery = r.Method, r.URL.Path, r.URL.RawPath, r.URL.RawQuery
	ex.header, ex.latency = r.Header, latency
	if p.segPtr == nil {
		ex.segment = p.segmentOf(r.Header, nil, false)
	}
	p.mu.RLock()
	if !p.closing {
		select {
		case p.queue <- ex:
			p.mu.RUnlock()
			return
		default:
		}
	}
	p.mu.RUnlock()
	obs.Outcome = OutcomeDropped
	p.recordUnmirrored(obs, r.Header, ex, false)
}

// recordUnmirrored records a request no copy was sent for, in its segment
// (see segmentOf for bodyUnknown), and recycles ex.
func (p *Proxy) recordUnmirrored(obs Observation, h http.Header, ex *exchange, bodyUnknown bool) {
	obs.Segment = p.segmentOf(h, ex, bodyUnknown)
	p.putExchange(ex)
	_ = p.agg.Record(obs) // outcome is valid by construction
}

// forward runs the reverse proxy for r. ReverseProxy aborts a response
// that breaks off while it streams to the caller (the primary's body failed,
// or the caller left) by panicking with http.ErrAbortHandler, so that
// net/http drops the connection; ServeHTTP's recording after it would never
// run. forward records such a request and panics on with the same value.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, ex *exchange, start time.Time, oversize bool) {
	defer func() {
		if v := recover(); v != nil {
			p.recordAbort(r, ex, start, oversize)
			panic(v)
		}
	}()
	p.rp.ServeHTTP(w, r)
}

// recordAbort records a request whose proxying panicked: a primary error
// when the primary failed (or no response came back), otherwise the
// caller's side broke (it left, or could not be written to) and the
// request is not mirrored, with no latency.
func (p *Proxy) recordAbort(r *http.Request, ex *exchange, start time.Time, oversize bool) {
	obs := Observation{Outcome: OutcomeNotMirrored}
	if r.Context().Err() == nil && (ex.failed || ex.status == 0) {
		obs.Outcome, obs.PrimaryLatency = OutcomePrimaryError, time.Since(start)
	}
	p.recordUnmirrored(obs, r.Header, ex, oversize || ex.over)
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// readStart bounds readUpTo's first allocation: a length the caller
// announces is not trusted with more memory before its bytes arrive.
const readStart = 32 << 10

// readUpTo reads r to its end or to max bytes, whichever comes first, into
// a new slice. A known length (hint) up to readStart sizes the slice once,
// with a byte to spare so that the end of the body is seen without growing
// it; beyond that, the slice doubles as bytes arrive, so memory follows
// what the caller sent rather than what it claimed. Its capacity never
// exceeds max.
func readUpTo(r io.Reader, hint, max int64) ([]byte, error) {
	n := int64(512)
	if hint >= 0 {
		n = hint + 1
	}
	buf := make([]byte, 0, min(n, readStart, max))
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) >= max {
				return buf, nil
			}
			grown := make([]byte, len(buf), min(2*int64(cap(buf)), max))
			copy(grown, buf)
			buf = grown
		}
		m, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// segmentOf resolves a request's raw segment value; DefaultSegment when the
// body could not be read (oversize) with a body pointer. The Aggregator
// applies the naming policy and the cap.
func (p *Proxy) segmentOf(h http.Header, ex *exchange, bodyUnknown bool) string {
	switch {
	case p.cfg.SegmentHeader != "":
		return h.Get(p.cfg.SegmentHeader)
	case p.segPtr != nil && ex != nil && ex.hasBody && !bodyUnknown:
		if v, err := p.segPtr.LookupJSON(ex.body); err == nil {
			if val, err := valueOf(KindLabel, v); err == nil && val.Label != "null" {
				return val.Label
			}
		}
	}
	return ""
}

func (p *Proxy) modifyResponse(resp *http.Response) error {
	ex, _ := resp.Request.Context().Value(stateKey{}).(*exchange)
	if ex == nil {
		return nil
	}
	ex.status = resp.StatusCode
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return nil // ReverseProxy needs the connection itself as the body
	}
	capture := ex.limit >= 0 && resp.StatusCode >= 200 && resp.StatusCode <= 299
	if capture && resp.ContentLength > ex.limit {
		ex.over = true
		capture = false
	}
	if capture {
		ex.encoding = resp.Header["Content-Encoding"]
	}
	// Every body is wrapped, captured or not, so that a response that
	// breaks off is known to be the primary's failure (see recordAbort).
	ex.cb = captureBody{rc: resp.Body, ex: ex, capture: capture}
	resp.Body = &ex.cb
	return nil
}

func (p *Proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	if ex, _ := r.Context().Value(stateKey{}).(*exchange); ex != nil {
		ex.failed = true
	}
	w.WriteHeader(http.StatusBadGateway)
}

// captureBody notes a primary body that breaks off, and when capture is
// set copies what the caller receives into ex.capture, up to the limit,
// while the reverse proxy streams it on.
type captureBody struct {
	rc      io.ReadCloser
	ex      *exchange
	capture bool
}

func (c *captureBody) Read(b []byte) (int, error) {
	n, err := c.rc.Read(b)
	if n > 0 && c.capture && !c.ex.over {
		if int64(c.ex.capture.Len()+n) > c.ex.limit {
			c.ex.over = true
		} else {
			c.ex.capture.Write(b[:n])
		}
	}
	if err != nil && !errors.Is(err, io.EOF) {
		c.ex.failed = true
	}
	return n, err
}

func (c *captureBody) Close() error { return c.rc.Close() }

func (p *Proxy) worker() {
	defer p.wg.Done()
	// Each request's timeout context hangs off the worker's own context
	// rather than p.base directly, so that the workers do not all take
	// p.base's lock to register and unregister every request.
	base, cancel := context.WithCancel(p.base)
	defer cancel()
	var sc *shadowConn
	if p.direct != "" {
		sc = newShadowConn(p.base, p.direct)
		defer sc.close()
	}
	dec := new(decoder)
	for {
		select {
		case ex := <-p.queue:
			p.mirror(base, sc, dec, ex)
		case <-p.quit:
			for {
				select {
				case ex := <-p.queue:
					p.mirror(base, sc, dec, ex)
				default:
					return
				}
			}
		}
	}
}

// hopHeaders are connection-specific and never forwarded (RFC 9110 7.6.1),
// and Expect: the proxy already holds the whole body.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Expect"}

// mirror sends ex's copy to the shadow, over sc when it is not nil,
// compares, records, and recycles ex. Decoding and JSON parsing of both
// responses happen here, off the caller's path, with dec's buffers.
func (p *Proxy) mirror(base context.Context, sc *shadowConn, dec *decoder, ex *exchange) {
	defer p.putExchange(ex)
	defer dec.release()
	obs := Observation{Segment: ex.segment, PrimaryLatency: ex.latency}
	if p.segPtr != nil {
		obs.Segment = p.segmentOf(ex.header, ex, false)
	}
	if p.base.Err() != nil { // abandoned by Shutdown
		obs.Outcome = OutcomeDropped
		_ = p.agg.Record(obs)
		return
	}
	body, err := dec.decode(ex.capture.Bytes(), ex.encoding, p.cfg.BodyLimit)
	if err == nil {
		obs.Primary, err = p.cmp.Extract(body)
	}
	if err != nil {
		obs.Outcome = OutcomePrimaryError
		if errors.Is(err, errDecodedOverLimit) {
			// As a primary body over the limit on the wire: not mirrored.
			obs.Outcome = OutcomeOversize
		}
		_ = p.agg.Record(obs)
		return
	}
	req := p.shadowRequest(ex)
	var status int
	var encoding []string
	timedOut := false
	t0 := time.Now()
	if sc != nil {
		deadline := t0.Add(p.cfg.Timeout)
		ex.capture.Reset() // the primary's copy is no longer needed
		status, encoding, err = sc.roundTrip(req, ex.body, deadline, &ex.capture, p.cfg.BodyLimit)
		timedOut = err != nil && (isDeadline(err) || !time.Now().Before(deadline))
	} else {
		ctx, cancel := context.WithTimeout(base, p.cfg.Timeout)
		defer cancel()
		req = req.WithContext(ctx)
		if len(ex.body) > 0 {
			req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(ex.body)), int64(len(ex.body))
		}
		var resp *http.Response
		resp, err = p.shadow.RoundTrip(req)
		if err == nil {
			ex.capture.Reset() // the primary's copy is no longer needed
			ex.lr = io.LimitedReader{R: resp.Body, N: p.cfg.BodyLimit + 1}
			_, err = ex.capture.ReadFrom(&ex.lr)
			ex.lr.R = nil
			resp.Body.Close()
			status, encoding = resp.StatusCode, resp.Header["Content-Encoding"]
		}
		timedOut = err != nil && ctx.Err() != nil
	}
	if err == nil {
		obs.ShadowLatency = time.Since(t0)
		switch {
		case status < 200 || status > 299:
			err = fmt.Errorf("shadow status %d", status)
		case int64(ex.capture.Len()) > p.cfg.BodyLimit:
			err = errors.New("shadow response over the body limit")
		default:
			// A shadow body over the limit once decoded is a shadow error,
			// as one over the limit on the wire is.
			if body, err = dec.decode(ex.capture.Bytes(), encoding, p.cfg.BodyLimit); err == nil {
				obs.Shadow, err = p.cmp.Extract(body)
			}
		}
	}
	switch {
	case err == nil:
		obs.Outcome = OutcomeCompared
	case p.base.Err() != nil:
		// Cancelled by Shutdown's deadline: the shadow is not to blame.
		obs.Outcome, obs.ShadowLatency = OutcomeDropped, 0
	case timedOut:
		obs.Outcome, obs.ShadowLatency = OutcomeTimeout, 0
	default:
		obs.Outcome = OutcomeShadowError
	}
	_ = p.agg.Record(obs)
}

// errDecodedOverLimit: a compressed body decodes to more than the body
// limit.
var errDecodedOverLimit = errors.New("decoded body over the body limit")

// maxCodings bounds the content codings applied to one body that are
// decoded; real servers apply one.
const maxCodings = 4

// decoder decodes compressed response bodies for comparison. Each worker
// has its own, so that its readers and buffers serve one exchange after
// another without allocating.
type decoder struct {
	src bytes.Reader
	gz  gzip.Reader   // usable once Reset
	zl  io.ReadCloser // zlib-wrapped deflate, made on first use
	fl  io.ReadCloser // raw deflate, made on first use
	lr  io.LimitedReader
	buf [2]bytes.Buffer // alternate between layers of codings
}

// decode returns body decoded according to its Content-Encoding values,
// which list codings in the order they were applied, so they are undone
// last first. Without a coding, or with identity, body comes back as it
// is. gzip (or x-gzip) and deflate are decoded; deflate is zlib-wrapped as
// RFC 9110 says, or raw as some servers send it. Another coding is an
// error: the body cannot be compared. A body that decodes to more than
// limit bytes is errDecodedOverLimit (decoding stops there). The result is
// valid until the next decode or release.
func (d *decoder) decode(body []byte, encoding []string, limit int64) ([]byte, error) {
	if len(encoding) == 0 {
		return body, nil
	}
	var codings [maxCodings]string
	n := 0
	for _, v := range encoding {
		for c := range strings.SplitSeq(v, ",") {
			if c = strings.TrimSpace(c); c == "" || strings.EqualFold(c, "identity") {
				continue
			}
			if n == maxCodings {
				return nil, fmt.Errorf("more than %d content codings in %q", maxCodings, encoding)
			}
			codings[n] = c
			n++
		}
	}
	next := 0
	for i := n - 1; i >= 0; i-- {
		dst := &d.buf[next]
		dst.Reset()
		if err := d.decodeOne(dst, body, codings[i], limit); err != nil {
			return nil, err
		}
		body = dst.Bytes()
		next ^= 1
	}
	return body, nil
}

func (d *decoder) decodeOne(dst *bytes.Buffer, src []byte, coding string, limit int64) error {
	d.src.Reset(src)
	var r io.Reader
	switch {
	case strings.EqualFold(coding, "gzip"), strings.EqualFold(coding, "x-gzip"):
		if err := d.gz.Reset(&d.src); err != nil {
			return fmt.Errorf("decoding %s body: %w", coding, err)
		}
		r = &d.gz
	case strings.EqualFold(coding, "deflate") && isZlib(src):
		if d.zl == nil {
			zl, err := zlib.NewReader(&d.src)
			if err != nil {
				return fmt.Errorf("decoding %s body: %w", coding, err)
			}
			d.zl = zl
		} else if err := d.zl.(zlib.Resetter).Reset(&d.src, nil); err != nil {
			return fmt.Errorf("decoding %s body: %w", coding, err)
		}
		r = d.zl
	case strings.EqualFold(coding, "deflate"):
		if d.fl == nil {
			d.fl = flate.NewReader(&d.src)
		} else if err := d.fl.(flate.Resetter).Reset(&d.src, nil); err != nil {
			return fmt.Errorf("decoding %s body: %w", coding, err)
		}
		r = d.fl
	default:
		return fmt.Errorf("content coding %q cannot be decoded", coding)
	}
	d.lr = io.LimitedReader{R: r, N: limit + 1}
	_, err := dst.ReadFrom(&d.lr)
	d.lr.R = nil
	if err != nil {
		return fmt.Errorf("decoding %s body: %w", coding, err)
	}
	if int64(dst.Len()) > limit {
		return errDecodedOverLimit
	}
	return nil
}

// isZlib reports whether b starts with a zlib header (RFC 1950 2.2):
// deflate, a window of at most 32 KiB, and a valid check.
func isZlib(b []byte) bool {
	return len(b) >= 2 && b[0]&0x0f == 8 && b[0]>>4 <= 7 && (uint16(b[0])<<8|uint16(b[1]))%31 == 0
}

// release lets go of what one exchange left in d: buffers that grew large
// (so that the workers do not pin BodyLimit-sized buffers after a burst of
// big bodies) and the reference to the last body.
func (d *decoder) release() {
	const keep = 64 << 10
	d.src.Reset(nil)
	for i := range d.buf {
		if d.buf[i].Cap() > keep {
			d.buf[i] = bytes.Buffer{}
		}
	}
}

// shadowRequest builds the copy of ex's request for the shadow, without a
// body: same method, path and query under the shadow's base URL, the
// caller's headers minus hop-by-hop ones and those the caller's Connection
// header names.
func (p *Proxy) shadowRequest(ex *exchange) *http.Request {
	u := *p.cfg.Shadow
	u.Path = singleJoin(p.cfg.Shadow.Path, ex.path)
	u.RawPath = ""
	if ex.rawPath != "" {
		u.RawPath = singleJoin(p.cfg.Shadow.EscapedPath(), ex.rawPath)
	}
	u.RawQuery = ex.rawQuery
	// The caller's header map is no longer touched by anyone else (the
	// reverse proxy forwarded a clone), so it goes out as it is unless
	// something has to be removed: most requests carry no hop-by-hop header.
	h := ex.header
	if hasHopHeaders(h) {
		h = make(http.Header, len(ex.header))
		for k, vs := range ex.header {
			h[k] = vs
		}
		for _, c := range ex.header["Connection"] {
			for _, f := range strings.Split(c, ",") {
				if f = strings.TrimSpace(f); f != "" {
					h.Del(f)
				}
			}
		}
		for _, k := range hopHeaders {
			delete(h, k)
		}
	}
	return &http.Request{Method: ex.method, URL: &u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Host: u.Host, Body: http.NoBody}
}

func hasHopHeaders(h http.Header) bool {
	for _, k := range hopHeaders {
		if _, ok := h[k]; ok {
			return true
		}
	}
	return false
}

func singleJoin(base, path string) string {
	if base == "" || base == "/" {
		return path
	}
	return strings.TrimSuffix(base, "/") + path
}

// Stats are queue figures for operators.
type Stats struct {
	Queued int // copies waiting for a worker
}

// Stats returns current queue figures.
func (p *Proxy) Stats() Stats {
	return Stats{Queued: len(p.queue)}
}
