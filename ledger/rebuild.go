package ledger

import (
	"context"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// rebuildChunk bounds the unsynced batch size while replaying.
var rebuildChunk = 4 << 20 // a variable so tests can force chunk commits

// RebuildState atomically replaces the whole state keyspace by replaying
// every entry from index 0 in order through apply. apply's Tx sees the new
// state being built (not the old one) and may not Add entries. Appends wait
// while it runs. The new state is written under a new generation and
// switched to in one synced batch; a crash or an error in the middle leaves
// the old state intact (the partial generation is removed on next Open).
func (l *Log) RebuildState(ctx context.Context, apply func(tx *Tx, index uint64, entry []byte) error) error {
	_, err := l.submit(ctx, &request{ctx: ctx, rebuild: apply, done: make(chan result, 1)})
	return err
}

func (l *Log) runRebuild(r *request) {
	if !r.state.CompareAndSwap(reqQueued, reqTaken) {
		return
	}
	r.done <- result{err: l.rebuild(r.ctx, r.rebuild)}
}

func (l *Log) rebuild(ctx context.Context, apply func(tx *Tx, index uint64, entry []byte) error) error {
	old := l.stateGen.Load()
	gen := old + 1
	b := l.db.NewBatch()
	defer func() { b.Close() }()
	writes := overlay{}
	abort := func(err error) error {
		// Best effort: Open removes stale generations anyway.
		_ = l.db.DeleteRange(stateKey(gen, nil), stateKey(gen+1, nil), pebble.NoSync)
		return err
	}
	err := l.Entries(ctx, 0, l.Size(), func(i uint64, e []byte) error {
		tx := &Tx{l: l, db: l.db, group: writes, gen: gen, base: i, noAdd: true}
		err := callTx(func(tx *Tx) error { return apply(tx, i, e) }, tx)
		tx.finished = true
		if err != nil {
			return err
		}
		tx.mergeInto(writes, b)
		if b.Len() >= rebuildChunk {
			if err := b.Commit(pebble.NoSync); err != nil {
				return fmt.Errorf("rebuilding state at entry %d: %w", i, err)
			}
			b.Close()
			b = l.db.NewBatch()
			writes = overlay{}
		}
		return nil
	})
	if err != nil {
		return abort(err)
	}
	b.Set(keyStateGen, u64Key(0, gen)[1:], nil)
	b.DeleteRange(stateKey(old, nil), stateKey(gen, nil), nil)
	if err := l.commitBatch(b); err != nil {
		return abort(fmt.Errorf("switching to rebuilt state: %w", err))
	}
	l.stateGen.Store(gen)
	l.publishView()
	return nil
}
