//go:build unix

package shadow

import (
	"errors"
	"net"
	"syscall"
)

// idleProbe tells whether an idle connection is still fit for a request:
// nothing has arrived on it since its last response, not even the end of
// the stream. A bufio read cannot tell without waiting, and a read deadline
// in the past fails before the socket is read, so the probe reads the
// non-blocking socket once, directly. Its function and buffer are made once
// per connection, so that a probe does not allocate.
type idleProbe struct {
	raw  syscall.RawConn
	read func(fd uintptr) bool
	b    [1]byte
	n    int
	err  error
}

// reset points p at conn; nil (or a connection without a socket) turns
// the probe off.
func (p *idleProbe) reset(conn net.Conn) {
	p.raw = nil
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	p.raw = raw
	if p.read == nil {
		p.read = func(fd uintptr) bool {
			p.n, p.err = syscall.Read(int(fd), p.b[:])
			return true // never wait for the socket to become readable
		}
	}
}

// quiet reports whether nothing arrived on the connection. A byte that did
// is consumed: the connection is to be closed anyway.
func (p *idleProbe) quiet() bool {
	if p.raw == nil {
		return true
	}
	if err := p.raw.Read(p.read); err != nil {
		return false
	}
	// EAGAIN: nothing to read. A byte, or 0 and no error (the end of the
	// stream), or another error: not fit.
	return errors.Is(p.err, syscall.EAGAIN)
}
