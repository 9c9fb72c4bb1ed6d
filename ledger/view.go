package ledger

import (
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
)

// readView is a pebble snapshot of exactly the durable state, taken by the
// sequencer right after a synced commit returned and before it applies the
// next batch. pebble makes a batch visible before its WAL sync completes,
// so reading the live DB could show state that a crash would then lose;
// reads outside the sequencer go through the latest view instead.
type readView struct {
	snap *pebble.Snapshot
	gen  uint64       // state generation in force at the snapshot
	refs atomic.Int64 // 1 for the Log while current, plus one per reader
}

// publishView replaces the current view with a fresh snapshot. Only the
// sequencer (and Open) call it, when no batch is in flight.
func (l *Log) publishView() {
	v := &readView{snap: l.db.NewSnapshot(), gen: l.stateGen.Load()}
	v.refs.Store(1)
	if old := l.view.Swap(v); old != nil {
		old.release()
	}
}

// acquireView returns the current view with a reference the caller must
// release, or nil once the log is closed.
func (l *Log) acquireView() *readView {
	for {
		v := l.view.Load()
		if v == nil {
			return nil
		}
		n := v.refs.Load()
		if n == 0 {
			continue // being retired; the next Load sees its successor
		}
		if v.refs.CompareAndSwap(n, n+1) {
			return v
		}
	}
}

func (v *readView) release() {
	if v.refs.Add(-1) == 0 {
		v.snap.Close()
	}
}
