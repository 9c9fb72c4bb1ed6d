package shadow

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"time"
)

// shadowConn is one worker's own HTTP/1.1 keep-alive connection to a plain
// http shadow. http.Transport hands each request to a connection's writer
// goroutine and each response back from its reader goroutine; a worker that
// owns its connection writes and reads in place, sparing those wake-ups and
// the transport's per-request bookkeeping on cores that production traffic
// shares. The shadow timeout is the connection's deadline, so a request
// needs no context of its own.
type shadowConn struct {
	addr string
	base context.Context // cancelled when Shutdown abandons the queue
	conn net.Conn
	in   readBudget // conn, as br reads it
	br   *bufio.Reader
	bw   *bufio.Writer
	stop func() bool // unregisters the cancellation hook of conn
	// reused: conn has completed an exchange, so the shadow may have closed
	// it while it sat idle.
	reused bool
	idle   idleProbe
}

// maxResponseHeader bounds the bytes of a response's status line and
// headers (informational responses included): http.Server's default for
// request headers, a tenth of http.Transport's default for response
// headers; a model server's answer needs a few hundred bytes. What is left
// of it also covers a chunked body's framing and trailers.
const maxResponseHeader = 1 << 20

// errReadBudget: a shadow response is larger than one exchange may read.
var errReadBudget = fmt.Errorf("shadow response over its read limit (%d bytes of headers and framing, plus the body limit)", maxResponseHeader)

// readBudget reads from r until n bytes are spent, then fails: a shadow
// cannot make one exchange read without end, be it an endless header line
// or a body past the limit.
type readBudget struct {
	r io.Reader
	n int64
}

func (b *readBudget) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, errReadBudget
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= int64(n)
	return n, err
}

// directAddr returns host:port when the shadow can be reached over a
// worker-owned connection: plain http and no proxy from the environment
// (which http.Transport would honour).
func directAddr(u *url.URL) (string, bool) {
	if u.Scheme != "http" {
		return "", false
	}
	if pu, err := http.ProxyFromEnvironment(&http.Request{URL: u}); err != nil || pu != nil {
		return "", false
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	return net.JoinHostPort(u.Hostname(), port), true
}

func newShadowConn(base context.Context, addr string) *shadowConn {
	return &shadowConn{addr: addr, base: base}
}

// roundTrip sends req with body and reads the response body into dst, up to
// limit+1 bytes (more is not read: the caller sees it is over the limit),
// and returns the response's status and Content-Encoding values.
// Everything must finish by deadline. A connection the shadow closed while
// it was idle gets the request sent once more on a new one.
func (c *shadowConn) roundTrip(req *http.Request, body []byte, deadline time.Time, dst *bytes.Buffer, limit int64) (status int, encoding []string, err error) {
	for attempt := 0; ; attempt++ {
		if c.conn != nil && c.reused {
			// The deadline first: the last exchange's may have passed while
			// the connection sat idle, and would fail the probe.
			if err := c.conn.SetDeadline(deadline); err != nil || !c.idle.quiet() {
				// Closed by the shadow, or sent bytes no request asked for,
				// which would be read as the next response.
				c.close()
			}
		}
		if c.conn == nil {
			if err := c.dial(deadline); err != nil {
				return 0, nil, err
			}
		}
		reused := c.reused
		status, encoding, stale, err := c.exchange(req, body, deadline, dst, limit)
		if err == nil {
			return status, encoding, nil
		}
		c.close()
		if !stale || !reused || attempt > 0 {
			return 0, nil, err
		}
	}
}

func (c *shadowConn) dial(deadline time.Time) error {
	ctx, cancel := context.WithDeadline(c.base, deadline)
	defer cancel()
	d := net.Dialer{KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	c.conn = conn
	c.in = readBudget{r: conn}
	if c.br == nil {
		c.br, c.bw = bufio.NewReader(&c.in), bufio.NewWriter(conn)
	} else {
		c.br.Reset(&c.in)
		c.bw.Reset(conn)
	}
	c.idle.reset(conn)
	// Shutdown's deadline must interrupt an exchange in flight.
	c.stop = context.AfterFunc(c.base, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	c.reused = false
	return nil
}

// close drops the connection; the next request dials a new one.
func (c *shadowConn) close() {
	if c.conn == nil {
		return
	}
	c.stop()
	_ = c.conn.Close()
	c.conn, c.stop = nil, nil
	c.in.r = nil
	c.idle.reset(nil)
}

// exchange writes one request and reads its response. stale reports that
// the connection failed before any byte of a response arrived: the shadow
// had closed it, and the request can go again on a new connection.
//
// One exchange reads at most maxResponseHeader bytes before the response's
// headers end, and limit+1 more after: anything larger fails the exchange
// and so closes the connection.
func (c *shadowConn) exchange(req *http.Request, body []byte, deadline time.Time, dst *bytes.Buffer, limit int64) (status int, encoding []string, stale bool, err error) {
	if err := c.conn.SetDeadline(deadline); err != nil {
		return 0, nil, false, err
	}
	// After SetDeadline: a cancellation that came before it would have its
	// past deadline overwritten, so it is seen here instead.
	if err := c.base.Err(); err != nil {
		return 0, nil, false, err
	}
	req.Body, req.ContentLength = nil, 0
	if len(body) > 0 {
		// A *bytes.Reader lets Request.Write keep headers and body in one
		// buffer, flushed in one write.
		req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	}
	if err := req.Write(c.bw); err != nil {
		return 0, nil, false, err
	}
	if err := c.bw.Flush(); err != nil {
		return 0, nil, isClosedConn(err), err
	}
	c.in.n = maxResponseHeader
	if _, err := c.br.Peek(1); err != nil {
		return 0, nil, isClosedConn(err), err
	}
	var resp *http.Response
	for {
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			return 0, nil, false, err
		}
		// Informational answers (100 Continue, 103 Early Hints) precede
		// the real one.
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return 0, nil, false, fmt.Errorf("shadow status %d", resp.StatusCode)
	}
	c.in.n += limit + 1
	lr := io.LimitedReader{R: resp.Body, N: limit + 1}
	if _, err := dst.ReadFrom(&lr); err != nil {
		return 0, nil, false, err
	}
	encoding = resp.Header["Content-Encoding"]
	if lr.N <= 0 || resp.Close || c.br.Buffered() > 0 {
		// Over the limit, the rest is not worth reading: the connection
		// goes instead. A response that ends the connection ends it too,
		// and so do bytes past the response's end (a stray newline after
		// the body, say), which the next exchange would read as its
		// response.
		c.close()
		return resp.StatusCode, encoding, false, nil
	}
	_ = resp.Body.Close() // read to its end: returns at once
	c.reused = true
	return resp.StatusCode, encoding, false, nil
}

// isClosedConn reports errors of a connection the peer closed.
func isClosedConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// isDeadline reports an error caused by the shadow timeout.
func isDeadline(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded)
}
