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
	br   *bufio.Reader
	bw   *bufio.Writer
	stop func() bool // unregisters the cancellation hook of conn
	// reused: conn has completed an exchange, so the shadow may have closed
	// it while it sat idle.
	reused bool
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
// limit+1 bytes (more is not read: the caller sees it is over the limit).
// Everything must finish by deadline. A connection the shadow closed while
// it was idle gets the request sent once more on a new one.
func (c *shadowConn) roundTrip(req *http.Request, body []byte, deadline time.Time, dst *bytes.Buffer, limit int64) (status int, err error) {
	for attempt := 0; ; attempt++ {
		if c.conn == nil {
			if err := c.dial(deadline); err != nil {
				return 0, err
			}
		}
		reused := c.reused
		status, stale, err := c.exchange(req, body, deadline, dst, limit)
		if err == nil {
			return status, nil
		}
		c.close()
		if !stale || !reused || attempt > 0 {
			return 0, err
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
	if c.br == nil {
		c.br, c.bw = bufio.NewReader(conn), bufio.NewWriter(conn)
	} else {
		c.br.Reset(conn)
		c.bw.Reset(conn)
	}
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
}

// exchange writes one request and reads its response. stale reports that
// the connection failed before any byte of a response arrived: the shadow
// had closed it, and the request can go again on a new connection.
func (c *shadowConn) exchange(req *http.Request, body []byte, deadline time.Time, dst *bytes.Buffer, limit int64) (status int, stale bool, err error) {
	if err := c.conn.SetDeadline(deadline); err != nil {
		return 0, false, err
	}
	// After SetDeadline: a cancellation that came before it would have its
	// past deadline overwritten, so it is seen here instead.
	if err := c.base.Err(); err != nil {
		return 0, false, err
	}
	req.Body, req.ContentLength = nil, 0
	if len(body) > 0 {
		// A *bytes.Reader lets Request.Write keep headers and body in one
		// buffer, flushed in one write.
		req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	}
	if err := req.Write(c.bw); err != nil {
		return 0, false, err
	}
	if err := c.bw.Flush(); err != nil {
		return 0, isClosedConn(err), err
	}
	if _, err := c.br.Peek(1); err != nil {
		return 0, isClosedConn(err), err
	}
	var resp *http.Response
	for {
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			return 0, false, err
		}
		// Informational answers (100 Continue, 103 Early Hints) precede
		// the real one.
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return 0, false, fmt.Errorf("shadow status %d", resp.StatusCode)
	}
	lr := io.LimitedReader{R: resp.Body, N: limit + 1}
	if _, err := dst.ReadFrom(&lr); err != nil {
		return 0, false, err
	}
	if lr.N <= 0 || resp.Close {
		// Over the limit, the rest is not worth reading: the connection
		// goes instead. A response that ends the connection ends it too.
		c.close()
		return resp.StatusCode, false, nil
	}
	_ = resp.Body.Close() // read to its end: returns at once
	c.reused = true
	return resp.StatusCode, false, nil
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
