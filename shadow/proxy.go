package shadow

import (
	"bytes"
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
	"sync/atomic"
	"time"
	"unicode/utf8"
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
	// PrimaryTransport and ShadowTransport default to tuned clones of
	// http.DefaultTransport (keep-alive pools sized for proxying).
	PrimaryTransport http.RoundTripper
	ShadowTransport  http.RoundTripper
}

// Proxy is an http.Handler that forwards every request to the primary and
// returns the primary's response unchanged, while copies go to the shadow
// through a bounded queue. THE CALLER NEVER WAITS FOR THE SHADOW: enqueueing
// never blocks, and the shadow's answer is only compared.
type Proxy struct {
	cfg     ProxyConfig
	agg     *Aggregator
	cmp     *Comparator
	segPtr  *Pointer
	rp      *httputil.ReverseProxy
	shadow  *http.Client
	queue   chan *job
	quit    chan struct{}
	wg      sync.WaitGroup
	closed  atomic.Bool
	bufPool sync.Pool
}

type stateKey struct{}

// reqState is what the reverse proxy's hooks learn about one request.
type reqState struct {
	limit   int64
	status  int
	failed  bool
	capture *bytes.Buffer
	over    bool
}

type job struct {
	method   string
	uri      string
	header   http.Header
	segment  string // resolved from the header, or "" to resolve from body
	body     *bytes.Buffer
	primary  *bytes.Buffer
	latency  time.Duration
	enqueued time.Time
}

// NewProxy validates cfg and starts the shadow workers. Call Close after the
// HTTP server has stopped calling ServeHTTP.
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
	if cfg.SegmentPointer != "" {
		ptr, err := ParsePointer(cfg.SegmentPointer)
		if err != nil {
			return nil, fmt.Errorf("%w: segment pointer: %w", ErrProxyConfig, err)
		}
		p.segPtr = &ptr
	}
	p.bufPool.New = func() any { return new(bytes.Buffer) }
	pt := cfg.PrimaryTransport
	if pt == nil {
		pt = newTransport(1024)
	}
	primary := cfg.Primary
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(primary)
			pr.Out.Host = pr.In.Host
		},
		Transport:      pt,
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.errorHandler,
		ErrorLog:       log.New(io.Discard, "", 0), // a library does not log
	}
	if !cfg.DisableMirror {
		st := cfg.ShadowTransport
		if st == nil {
			st = newTransport(cfg.Workers)
		}
		p.shadow = &http.Client{
			Transport:     st,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		p.queue = make(chan *job, cfg.QueueSize)
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
	t.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	return t
}

// Close stops the workers after they have processed the copies already
// queued (each bounded by the shadow timeout).
func (p *Proxy) Close() {
	if p.closed.Swap(true) {
		return
	}
	close(p.quit)
	p.wg.Wait()
}

func (p *Proxy) getBuf() *bytes.Buffer {
	b := p.bufPool.Get().(*bytes.Buffer)
	b.Reset()
	return b
}

func (p *Proxy) putBuf(b *bytes.Buffer) {
	if b != nil && int64(b.Cap()) <= 2*p.cfg.BodyLimit+bytes.MinRead {
		p.bufPool.Put(b)
	}
}

// ServeHTTP forwards r to the primary and schedules its copy.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	mirror := !p.cfg.DisableMirror && !p.closed.Load()
	limit := p.cfg.BodyLimit
	oversize := false
	var body *bytes.Buffer
	if mirror {
		if r.ContentLength > limit {
			oversize = true
		} else if r.Body != nil && r.Body != http.NoBody {
			// Not pooled: the primary's transport may close (and so stop
			// reading) the request body after the response has arrived.
			body = new(bytes.Buffer)
			if r.ContentLength > 0 {
				body.Grow(int(r.ContentLength) + 1)
			}
			_, err := body.ReadFrom(io.LimitReader(r.Body, limit+1))
			switch {
			case err != nil:
				// The caller's body broke off: forward what arrived and the
				// error, so the primary's transport reports it as usual.
				r.Body = struct {
					io.Reader
					io.Closer
				}{io.MultiReader(bytes.NewReader(body.Bytes()), errReader{err}), r.Body}
				body, mirror = nil, false
			case int64(body.Len()) > limit:
				oversize = true
				r.Body = struct {
					io.Reader
					io.Closer
				}{io.MultiReader(bytes.NewReader(body.Bytes()), r.Body), r.Body}
				body = nil
			default:
				r.Body = io.NopCloser(bytes.NewReader(body.Bytes()))
				r.ContentLength = int64(body.Len())
			}
		}
	}
	st := &reqState{limit: -1}
	if mirror && !oversize {
		st.limit = limit
		st.capture = p.getBuf()
	}
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), stateKey{}, st)))
	latency := time.Since(start)

	obs := Observation{PrimaryLatency: latency}
	switch {
	case st.failed || st.status < 200 || st.status > 299:
		obs.Outcome = OutcomePrimaryError
	case !mirror && !oversize:
		obs.Outcome = OutcomeNotMirrored
	case oversize || st.over:
		obs.Outcome = OutcomeOversize
	}
	if obs.Outcome != 0 {
		p.putBuf(st.capture)
		obs.Segment = p.segmentOf(r.Header, body, oversize || st.over)
		_ = p.agg.Record(obs) // outcome is valid by construction
		return
	}
	j := &job{method: r.Method, uri: r.URL.RequestURI(), header: r.Header, body: body, primary: st.capture, latency: latency, enqueued: start}
	if p.segPtr == nil {
		j.segment = p.segmentOf(r.Header, nil, false)
	}
	select {
	case p.queue <- j:
		return
	default:
	}
	// Dropped. Resolving a body segment parses JSON: let the caller have
	// the rest of the response first.
	if p.segPtr != nil {
		_ = http.NewResponseController(w).Flush()
	}
	obs.Outcome = OutcomeDropped
	obs.Segment = p.segmentOf(r.Header, body, false)
	p.putBuf(st.capture)
	_ = p.agg.Record(obs)
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// segmentOf resolves a request's segment; unknown when the body could not
// be read (oversize) with a body pointer.
func (p *Proxy) segmentOf(h http.Header, body *bytes.Buffer, bodyUnknown bool) string {
	var s string
	switch {
	case p.cfg.SegmentHeader != "":
		s = h.Get(p.cfg.SegmentHeader)
	case p.segPtr != nil && body != nil && !bodyUnknown:
		if v, err := p.segPtr.LookupJSON(body.Bytes()); err == nil {
			if val, err := valueOf(KindLabel, v); err == nil && val.Label != "null" {
				s = val.Label
			}
		}
	}
	return cleanSegment(s)
}

// cleanSegment keeps segment names encodable: valid UTF-8, bounded length,
// never empty.
func cleanSegment(s string) string {
	if s == "" {
		return DefaultSegment
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) > maxSegmentName {
		cut := maxSegmentName
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}

func (p *Proxy) modifyResponse(resp *http.Response) error {
	st, _ := resp.Request.Context().Value(stateKey{}).(*reqState)
	if st == nil {
		return nil
	}
	st.status = resp.StatusCode
	if st.capture != nil && resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		if resp.ContentLength > st.limit {
			st.over = true
			return nil
		}
		resp.Body = &captureBody{rc: resp.Body, st: st}
	}
	return nil
}

func (p *Proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	if st, _ := r.Context().Value(stateKey{}).(*reqState); st != nil {
		st.failed = true
	}
	w.WriteHeader(http.StatusBadGateway)
}

// captureBody copies what the caller receives into st.capture, up to the
// limit, while the reverse proxy streams it on.
type captureBody struct {
	rc io.ReadCloser
	st *reqState
}

func (c *captureBody) Read(b []byte) (int, error) {
	n, err := c.rc.Read(b)
	if n > 0 && !c.st.over {
		if int64(c.st.capture.Len()+n) > c.st.limit {
			c.st.over = true
		} else {
			c.st.capture.Write(b[:n])
		}
	}
	if err != nil && !errors.Is(err, io.EOF) {
		c.st.failed = true
	}
	return n, err
}

func (c *captureBody) Close() error { return c.rc.Close() }

func (p *Proxy) worker() {
	defer p.wg.Done()
	for {
		select {
		case j := <-p.queue:
			p.mirror(j)
		case <-p.quit:
			for {
				select {
				case j := <-p.queue:
					p.mirror(j)
				default:
					return
				}
			}
		}
	}
}

// hopHeaders are connection-specific and never forwarded (RFC 9110 7.6.1).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func (p *Proxy) mirror(j *job) {
	defer p.putBuf(j.primary)
	obs := Observation{Segment: j.segment, PrimaryLatency: j.latency}
	if p.segPtr != nil {
		obs.Segment = p.segmentOf(j.header, j.body, false)
	}
	pv, err := p.cmp.Extract(j.primary.Bytes())
	if err != nil {
		obs.Outcome = OutcomePrimaryError
		_ = p.agg.Record(obs)
		return
	}
	obs.Primary = pv
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Timeout)
	defer cancel()
	var rd io.Reader = http.NoBody
	if j.body != nil {
		rd = bytes.NewReader(j.body.Bytes())
	}
	req, err := http.NewRequestWithContext(ctx, j.method, p.cfg.Shadow.Scheme+"://"+p.cfg.Shadow.Host+singleJoin(p.cfg.Shadow.Path, j.uri), rd)
	if err != nil {
		obs.Outcome = OutcomeShadowError
		_ = p.agg.Record(obs)
		return
	}
	for k, vs := range j.header {
		req.Header[k] = vs
	}
	for _, h := range hopHeaders {
		req.Header.Del(h)
	}
	if c := j.header.Get("Connection"); c != "" {
		for _, f := range strings.Split(c, ",") {
			req.Header.Del(strings.TrimSpace(f))
		}
	}
	if j.body != nil {
		req.ContentLength = int64(j.body.Len())
	}
	t0 := time.Now()
	resp, err := p.shadow.Do(req)
	if err == nil {
		buf := p.getBuf()
		_, err = buf.ReadFrom(io.LimitReader(resp.Body, p.cfg.BodyLimit+1))
		resp.Body.Close()
		obs.ShadowLatency = time.Since(t0)
		switch {
		case err != nil:
		case resp.StatusCode < 200 || resp.StatusCode > 299:
			err = fmt.Errorf("shadow status %d", resp.StatusCode)
		case int64(buf.Len()) > p.cfg.BodyLimit:
			err = errors.New("shadow response over the body limit")
		default:
			obs.Shadow, err = p.cmp.Extract(buf.Bytes())
		}
		p.putBuf(buf)
	}
	switch {
	case err == nil:
		obs.Outcome = OutcomeCompared
	case ctx.Err() != nil:
		obs.Outcome = OutcomeTimeout
		obs.ShadowLatency = 0
	default:
		obs.Outcome = OutcomeShadowError
	}
	_ = p.agg.Record(obs)
}

func singleJoin(base, uri string) string {
	if base == "" || base == "/" {
		return uri
	}
	return strings.TrimSuffix(base, "/") + uri
}

// Stats are queue figures for operators.
type Stats struct {
	Queued int // copies waiting for a worker
}

// Stats returns current queue figures.
func (p *Proxy) Stats() Stats {
	return Stats{Queued: len(p.queue)}
}
