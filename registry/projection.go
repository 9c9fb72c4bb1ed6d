package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/registry/blob"
)

// errCheckDone ends a read-only function run inside the sequencer; nothing
// it did is kept.
var errCheckDone = errors.New("check done")

// CheckProjection checks that the projection describes exactly the ledger's
// head: the state reflects as many entries as the ledger holds, and the leaf
// hash it recorded for the last one is the ledger's. It runs inside the
// sequencer, so it sees a consistent pair, and writes nothing. It is cheap
// (two reads); CompareRebuild is the thorough check.
func (r *Registry) CheckProjection(ctx context.Context) error {
	var res error
	_, err := r.log.Append(ctx, func(tx *ledger.Tx) error {
		res = r.checkHead(tx, tx.NextIndex())
		return errCheckDone
	})
	if err != nil && !errors.Is(err, errCheckDone) {
		return fmt.Errorf("checking the projection: %w", err)
	}
	return res
}

func (r *Registry) checkHead(tx stateReader, size uint64) error {
	applied, err := getU64(tx, keyApplied)
	if err != nil {
		return err
	}
	if applied != size {
		return fmt.Errorf("%w: the state reflects %d entries, the ledger has %d; run `hallmark ledger rebuild`", ErrProjectionMismatch, applied, size)
	}
	if size == 0 {
		return nil
	}
	head, err := tx.Get(keyHead)
	if err != nil {
		return fmt.Errorf("%w: no head hash recorded: %v", ErrProjectionMismatch, err)
	}
	leaf, err := r.log.LeafHash(size - 1)
	if err != nil {
		return fmt.Errorf("reading leaf hash %d: %w", size-1, err)
	}
	if !bytes.Equal(head, leaf[:]) {
		return fmt.Errorf("%w: the state's last entry (%d) has leaf hash %x, the ledger's is %s; run `hallmark ledger rebuild`", ErrProjectionMismatch, size-1, head, leaf)
	}
	return nil
}

// RebuildStats says what a replay did.
type RebuildStats struct {
	Entries  uint64 // entries replayed
	Applied  uint64 // registry events applied
	Skipped  uint64 // entries that are not registry events
	Rejected uint64 // registry events that contradicted the state
	// Keys is the number of state keys and StateDigest the SHA-256 over
	// every (key, value) pair in key order (see StateDigest).
	Keys        int
	StateDigest [32]byte
}

// Rebuild replaces the stored projection by replaying the ledger from its
// first entry through the same apply code that live changes use. The switch
// is atomic (ledger.Log.RebuildState): a failure leaves the old projection.
// blobs is needed to read manifests stored as blobs; it may be nil for a
// ledger that has none.
func Rebuild(ctx context.Context, log *ledger.Log, blobs *blob.Store) (RebuildStats, error) {
	p := &projector{}
	if blobs != nil {
		p.blobs = blobs
	}
	var st RebuildStats
	err := log.RebuildState(ctx, func(tx *ledger.Tx, index uint64, entry []byte) error {
		out, _, err := p.apply(ctx, tx, index, entry, false)
		if err != nil {
			return err
		}
		st.count(out)
		return nil
	})
	if err != nil {
		return RebuildStats{}, fmt.Errorf("rebuilding the projection: %w", err)
	}
	st.Keys, st.StateDigest, err = StateDigest(log)
	if err != nil {
		return RebuildStats{}, err
	}
	return st, nil
}

func (st *RebuildStats) count(out applyOutcome) {
	st.Entries++
	switch out {
	case outcomeApplied:
		st.Applied++
	case outcomeSkipped:
		st.Skipped++
	case outcomeRejected:
		st.Rejected++
	}
}

// Rebuild rebuilds this registry's projection (see the function Rebuild).
func (r *Registry) Rebuild(ctx context.Context) (RebuildStats, error) {
	return Rebuild(ctx, r.log, r.blobs)
}

// StateDigest returns the number of state keys and a SHA-256 over every
// committed (key, value) pair in key order, each as two big-endian uint32
// lengths followed by the key and the value. Equal digests mean equal
// projections.
func StateDigest(s interface {
	Scan(prefix []byte, fn func(key, value []byte) error) error
}) (int, [32]byte, error) {
	h := sha256.New()
	n := 0
	err := s.Scan(nil, func(k, v []byte) error {
		var l [8]byte
		l[0], l[1], l[2], l[3] = byte(len(k)>>24), byte(len(k)>>16), byte(len(k)>>8), byte(len(k))
		l[4], l[5], l[6], l[7] = byte(len(v)>>24), byte(len(v)>>16), byte(len(v)>>8), byte(len(v))
		h.Write(l[:])
		h.Write(k)
		h.Write(v)
		n++
		return nil
	})
	if err != nil {
		return 0, [32]byte{}, fmt.Errorf("hashing the state: %w", err)
	}
	var d [32]byte
	h.Sum(d[:0])
	return n, d, nil
}

// CompareRebuild replays the whole ledger into memory and compares the
// result with the stored projection key by key, without changing anything;
// it names the first key that differs. It holds the sequencer for a
// consistent view, so appends wait while it runs: use it in tools and tests,
// not on a busy server.
func (r *Registry) CompareRebuild(ctx context.Context) error {
	var res error
	_, err := r.log.Append(ctx, func(tx *ledger.Tx) error {
		mem := memState{}
		size := tx.NextIndex()
		err := r.log.Entries(ctx, 0, size, func(i uint64, e []byte) error {
			_, _, err := r.proj.apply(ctx, mem, i, e, false)
			return err
		})
		if err != nil {
			res = fmt.Errorf("replaying the ledger: %w", err)
			return errCheckDone
		}
		res = diffState(tx, mem)
		return errCheckDone
	})
	if err != nil && !errors.Is(err, errCheckDone) {
		return fmt.Errorf("comparing the projection with a rebuild: %w", err)
	}
	return res
}

func diffState(stored stateReader, mem memState) error {
	seen := 0
	var first error
	err := stored.Scan(nil, func(k, v []byte) error {
		want, ok := mem[string(k)]
		switch {
		case !ok:
			first = fmt.Errorf("%w: key %q is stored but a rebuild does not produce it", ErrProjectionMismatch, k)
		case !bytes.Equal(want, v):
			first = fmt.Errorf("%w: key %q is %q, a rebuild gives %q", ErrProjectionMismatch, k, v, want)
		}
		if first != nil {
			return errCheckDone
		}
		seen++
		return nil
	})
	if first != nil {
		return first
	}
	if err != nil {
		return err
	}
	if seen != len(mem) {
		for k := range mem {
			if _, err := stored.Get([]byte(k)); errors.Is(err, ledger.ErrNotFound) {
				return fmt.Errorf("%w: a rebuild produces key %q, which is not stored", ErrProjectionMismatch, k)
			}
		}
	}
	return nil
}

// Stats reports the projection's counters.
type Stats struct {
	Applied  uint64 // ledger entries reflected
	Skipped  uint64 // entries that are not registry events
	Rejected uint64 // registry events rejected by replay
}

// Stats returns the projection's counters.
func (r *Registry) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	var err error
	if s.Applied, err = getU64(r.log, keyApplied); err != nil {
		return s, err
	}
	if s.Skipped, err = getU64(r.log, keySkipped); err != nil {
		return s, err
	}
	if s.Rejected, err = getU64(r.log, keyRejected); err != nil {
		return s, err
	}
	return s, nil
}
