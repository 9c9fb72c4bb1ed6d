package blobhttp

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// ledgerHeadroom is the share of the default MinFreeBytes kept for what else
// writes to the data directory's filesystem, above all the ledger's pebble
// (its WAL, memtable flushes and compactions): pebble too stalls rather than
// fails on a full disk.
const ledgerHeadroom = 64 << 20

// spaceGuard admits upload bytes only while the store's disk can take them
// and still keep margin bytes free. Each upload holds a reservation of the
// bytes it has been admitted for but not yet read, so that concurrent
// uploads, each checked against the same free space, cannot together
// overrun it. Bytes read but not yet written are covered by the margin
// (see defaultMinFree).
type spaceGuard struct {
	free   func() (int64, error)
	margin int64
	log    *slog.Logger

	mu       sync.Mutex
	reserved int64     // sum of the uploads' reservations
	warned   time.Time // last refusal logged
}

// spaceError is an upload refused for want of disk space.
type spaceError struct {
	free, need, reserved, margin int64
}

func (e *spaceError) Error() string {
	others := ""
	if e.reserved > 0 {
		others = fmt.Sprintf(", uploads in progress hold %s of it,", size(e.reserved))
	}
	return fmt.Sprintf("insufficient storage: the blob store's disk has %s free%s and this upload needs %s more, "+
		"while the server keeps %s free (the margin its database needs to work; see docs/operations.md, Disk space)",
		size(e.free), others, size(e.need), size(e.margin))
}

// size writes n bytes for people and for scripts.
func size(n int64) string {
	const mib = 1 << 20
	if n < mib {
		return fmt.Sprintf("%d bytes", n)
	}
	return fmt.Sprintf("%.1f MiB (%d bytes)", float64(n)/mib, n)
}

// reserve sets *held, one upload's reservation, to need bytes, or returns a
// *spaceError and leaves it. need is what the upload may write before its
// next check (a few steps at most); whole, if larger, is what it will write
// in all (the rest of a body of known length), which must fit now too but
// is not held.
func (g *spaceGuard) reserve(held *int64, need, whole int64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	free, err := g.free()
	if errors.Is(err, errors.ErrUnsupported) {
		return nil // the platform cannot tell; the check is off
	}
	if err != nil {
		return fmt.Errorf("checking free space: %w", err)
	}
	others := g.reserved - *held
	// Differences, not sums: need and whole come from a client's
	// Content-Length, and a sum near the largest int64 would wrap and
	// pass. free, the margin (capped when the guard is made) and the
	// reservations (a few steps per upload) are far from the limits.
	avail := free - g.margin - others
	if need > avail || whole > avail {
		e := &spaceError{free: free, need: max(need, whole), reserved: others, margin: g.margin}
		if now := time.Now(); now.Sub(g.warned) >= time.Minute {
			g.warned = now
			g.log.Warn("refusing uploads: disk space is low (logged at most once a minute)", "err", e.Error())
		}
		return e
	}
	g.reserved += need - *held
	*held = need
	return nil
}

// consumed lowers *held by n bytes that have now been read, or drops all
// of it when n < 0.
func (g *spaceGuard) consumed(held *int64, n int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n < 0 || n > *held {
		n = *held
	}
	g.reserved -= n
	*held -= n
}

// spaceBodyError is the answer to a refusal: 507 for want of space, 500 when the
// free space could not be read.
func spaceBodyError(err error) *bodyError {
	var se *spaceError
	if errors.As(err, &se) {
		return &bodyError{http.StatusInsufficientStorage, "resource_exhausted", err.Error()}
	}
	return &bodyError{http.StatusInternalServerError, "internal", err.Error()}
}
