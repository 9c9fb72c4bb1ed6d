//go:build !unix

package shadow

import "net"

// idleProbe would tell whether an idle connection is still fit for a
// request; without a non-blocking socket read at hand it trusts the
// connection, and a response with bytes past its end still closes it
// (see shadowConn.exchange).
type idleProbe struct{}

func (*idleProbe) reset(net.Conn) {}

func (*idleProbe) quiet() bool { return true }
