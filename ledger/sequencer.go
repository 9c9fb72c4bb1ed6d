package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/transparency-dev/merkle/compact"
)

// Receipt tells an Append caller what was committed.
type Receipt struct {
	// First and Count: indexes First .. First+Count-1 were appended. Count
	// is 0 for a state-only write (First is then the tree size).
	First, Count uint64
	// Size and Root are those of the checkpoint committed with the batch.
	Size uint64
	Root Hash
	// Checkpoint is the signed note for Size.
	Checkpoint []byte
}

// request states: a caller may withdraw a request only while it is queued.
const (
	reqQueued int32 = iota
	reqTaken
	reqWithdrawn
)

type request struct {
	ctx     context.Context
	fn      func(tx *Tx) error
	rebuild func(tx *Tx, index uint64, entry []byte) error
	state   atomic.Int32
	done    chan result

	first, count uint64
}

type result struct {
	r   Receipt
	err error
}

// Append runs fn inside the sequencer, after all earlier accepted calls,
// with a Tx whose reads see committed state, the writes of earlier Txs in
// the same group batch and its own writes. If fn returns an error nothing it
// did is kept and that error is returned unchanged. Otherwise its entries
// and state writes commit atomically in the next synced batch with the
// tiles, tree state and one signed checkpoint, and Append returns only after
// that commit: a returned index MUST be durable.
//
// ctx: if ctx is done before the sequencer runs fn, Append returns
// ctx.Err() and nothing is written. Once fn has started, the outcome stands:
// Append waits for the commit and returns its result even if ctx is done.
// If the batch fails before it reaches the store, every caller in the batch
// gets the error and nothing of the batch is visible; a failed write or sync
// of the store's log stops the process instead (pebble treats it as fatal),
// so that no batch can be visible whose callers were told it failed.
func (l *Log) Append(ctx context.Context, fn func(tx *Tx) error) (Receipt, error) {
	return l.submit(ctx, &request{ctx: ctx, fn: fn, done: make(chan result, 1)})
}

// AppendEntry appends one entry with no state writes.
func (l *Log) AppendEntry(ctx context.Context, entry []byte) (Receipt, error) {
	if len(entry) > MaxEntrySize {
		return Receipt{}, fmt.Errorf("appending entry: %w: %d bytes, max %d", ErrEntryTooLarge, len(entry), MaxEntrySize)
	}
	return l.Append(ctx, func(tx *Tx) error {
		_, err := tx.Add(entry)
		return err
	})
}

func (l *Log) submit(ctx context.Context, r *request) (Receipt, error) {
	if err := ctx.Err(); err != nil {
		return Receipt{}, err
	}
	select {
	case l.reqs <- r:
	case <-ctx.Done():
		return Receipt{}, ctx.Err()
	case <-l.closing:
		return Receipt{}, ErrClosed
	}
	select {
	case res := <-r.done:
		return res.r, res.err
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqQueued, reqWithdrawn) {
			return Receipt{}, ctx.Err()
		}
		res := <-r.done
		return res.r, res.err
	}
}

// run is the sequencer: it gathers whatever requests are waiting (up to
// maxBatch) and commits them as one group.
func (l *Log) run() {
	defer close(l.done)
	batch := make([]*request, 0, l.maxBatch)
	for {
		batch = batch[:0]
		select {
		case r := <-l.reqs:
			batch = append(batch, r)
		case <-l.closing:
			return
		}
	drain:
		for len(batch) < l.maxBatch {
			select {
			case r := <-l.reqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		for len(batch) > 0 {
			i := slices.IndexFunc(batch, func(r *request) bool { return r.rebuild != nil })
			switch {
			case i < 0:
				l.commitGroup(batch)
				batch = batch[:0]
			case i > 0:
				l.commitGroup(batch[:i])
				batch = batch[i:]
			default:
				l.runRebuild(batch[0])
				batch = batch[1:]
			}
		}
	}
}

// overlay holds uncommitted state writes; a nil value with del marks a
// deletion.
type overlay map[string]ovalue

type ovalue struct {
	v   []byte
	del bool
}

// group is one group commit being assembled.
type group struct {
	l       *Log
	b       *pebble.Batch
	writes  overlay
	gen     uint64
	size0   uint64
	entries [][]byte
}

func (l *Log) commitGroup(reqs []*request) {
	g := &group{l: l, b: l.db.NewBatch(), writes: overlay{}, gen: l.stateGen.Load(), size0: l.Size()}
	defer g.b.Close()
	accepted := make([]*request, 0, len(reqs))
	for _, r := range reqs {
		if !r.state.CompareAndSwap(reqQueued, reqTaken) {
			continue // withdrawn: its caller already returned ctx.Err()
		}
		if err := r.ctx.Err(); err != nil {
			r.done <- result{err: err}
			continue
		}
		tx := &Tx{l: l, group: g.writes, gen: g.gen, base: g.size0 + uint64(len(g.entries)), db: l.db}
		err := callTx(r.fn, tx)
		tx.finished = true
		if err != nil {
			r.done <- result{err: err}
			continue
		}
		tx.mergeInto(g.writes, g.b)
		r.first, r.count = tx.base, uint64(len(tx.entries))
		g.entries = append(g.entries, tx.entries...)
		accepted = append(accepted, r)
	}
	if len(accepted) == 0 {
		return
	}
	h, err := g.commit()
	for _, r := range accepted {
		if err != nil {
			r.done <- result{err: err}
			continue
		}
		first := r.first
		if r.count == 0 {
			first = h.size
		}
		r.done <- result{r: Receipt{First: first, Count: r.count, Size: h.size, Root: h.root, Checkpoint: h.note}}
	}
}

// callTx runs fn, turning a panic into an error so that one bad callback
// cannot take the sequencer (and every other caller) down.
func callTx(fn func(*Tx) error, tx *Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("append function panicked: %v", p)
		}
	}()
	return fn(tx)
}

// commit extends the tree by g.entries, writes entries, bundles, tiles,
// tree state and checkpoint into the batch and commits it synced. On
// failure the in-memory tree is reloaded from disk, so it never runs ahead
// of what is durable.
func (g *group) commit() (*head, error) {
	l := g.l
	prev := l.head.Load()
	if len(g.entries) == 0 {
		if err := l.commitBatch(g.b); err != nil {
			return nil, err
		}
		l.publishView()
		return prev, nil
	}
	st := &l.seq
	size := g.size0
	dirty := make([]bool, len(st.tiles)+1)
	var visitErr error
	visit := func(id compact.NodeID, hash []byte) {
		if id.Level%TileHeight != 0 {
			return
		}
		level := uint64(id.Level / TileHeight)
		for uint64(len(st.tiles)) <= level {
			st.tiles = append(st.tiles, make([]Hash, 0, TileWidth))
			dirty = append(dirty, false)
		}
		t := st.tiles[level]
		if uint64(len(t)) != id.Index%TileWidth {
			visitErr = fmt.Errorf("tile %d/%d: node %d arrives at position %d", level, id.Index/TileWidth, id.Index, len(t))
		}
		t = append(t, Hash(hash))
		if len(t) == TileWidth {
			st.scratch = appendHashBytes(st.scratch[:0], t)
			g.b.Set(tileKey(level, id.Index/TileWidth), st.scratch, nil)
			t = t[:0]
			dirty[level] = false
		} else {
			dirty[level] = true
		}
		st.tiles[level] = t
	}
	for _, e := range g.entries {
		lh := LeafHashOf(e)
		if err := st.rng.Append(lh[:], visit); err != nil {
			return nil, l.failCommit(fmt.Errorf("extending tree at %d: %w", size, err))
		}
		st.tail = append(st.tail, e)
		size++
		if len(st.tail) == TileWidth {
			k := size/TileWidth - 1
			g.b.Set(bundleKey(k), EncodeEntryBundle(st.tail), nil)
			// Entries of earlier batches were stored one by one until the
			// bundle filled; the bundle now holds them.
			for i := k * TileWidth; i < g.size0; i++ {
				g.b.Delete(entryKey(i), nil)
			}
			st.tail = make([][]byte, 0, TileWidth)
		}
	}
	if visitErr != nil {
		return nil, l.failCommit(visitErr)
	}
	for i := max(g.size0, size-uint64(len(st.tail))); i < size; i++ {
		g.b.Set(entryKey(i), st.tail[i%TileWidth], nil)
	}
	for level, d := range dirty {
		if d {
			n := size >> (TileHeight * uint(level))
			st.scratch = appendHashBytes(st.scratch[:0], st.tiles[level])
			g.b.Set(tileKey(uint64(level), n/TileWidth), st.scratch, nil)
		}
	}
	r, err := st.rng.GetRootHash(nil)
	if err != nil {
		return nil, l.failCommit(fmt.Errorf("computing root at %d: %w", size, err))
	}
	root := Hash(r)
	ts := treeState{size: size, root: root, hashes: make([]Hash, 0, len(st.rng.Hashes()))}
	for _, h := range st.rng.Hashes() {
		ts.hashes = append(ts.hashes, Hash(h))
	}
	g.b.Set(keyTreeState, ts.encode(), nil)
	n, err := signCheckpoint(l.signer, l.origin, size, root)
	if err != nil {
		return nil, l.failCommit(err)
	}
	g.b.Set(checkpointKey(size), encodeCheckpointRecord(prev.size, n), nil)
	if err := l.commitBatch(g.b); err != nil {
		return nil, l.failCommit(err)
	}
	h := &head{size: size, root: root, note: n}
	l.publishView()
	l.head.Store(h)
	return h, nil
}

func (l *Log) commitBatch(b *pebble.Batch) error {
	if l.hook != nil {
		if err := l.hook(); err != nil {
			return fmt.Errorf("committing batch: %w", err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("committing batch: %w", err)
	}
	return nil
}

// failCommit restores the sequencer's state from disk after a failed batch.
func (l *Log) failCommit(err error) error {
	if lerr := l.load(); lerr != nil {
		return fmt.Errorf("%w; reloading tree state: %w", err, lerr)
	}
	return err
}

// appendHashBytes appends the concatenated hashes to b. Batch.Set copies
// its value, so the sequencer reuses one scratch buffer for tiles.
func appendHashBytes(b []byte, hs []Hash) []byte {
	for _, h := range hs {
		b = append(b, h[:]...)
	}
	return b
}

// Tx is the view a function passed to Append gets inside the sequencer. It
// is valid only until that function returns.
type Tx struct {
	l        *Log
	db       getter
	group    overlay // writes of earlier Txs in the same group, read-only here
	own      overlay
	gen      uint64
	base     uint64
	entries  [][]byte
	finished bool
	noAdd    bool
}

// Get reads key from the state as this Tx sees it; ErrNotFound if absent.
// The returned slice is the caller's to keep.
func (tx *Tx) Get(key []byte) ([]byte, error) {
	if tx.finished {
		return nil, ErrTxDone
	}
	if v, ok := tx.own[string(key)]; ok {
		return cloneOrNotFound(v)
	}
	if v, ok := tx.group[string(key)]; ok {
		return cloneOrNotFound(v)
	}
	v, err := dbGet(tx.db, stateKey(tx.gen, key))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("reading state: %w", err)
	}
	return v, err
}

func cloneOrNotFound(v ovalue) ([]byte, error) {
	if v.del {
		return nil, ErrNotFound
	}
	return bytes.Clone(v.v), nil
}

// Set writes key = value in the state keyspace (kept only if fn succeeds).
func (tx *Tx) Set(key, value []byte) error {
	if tx.finished {
		return ErrTxDone
	}
	if tx.own == nil {
		tx.own = overlay{}
	}
	tx.own[string(key)] = ovalue{v: append([]byte{}, value...)}
	return nil
}

// Delete removes key from the state keyspace (kept only if fn succeeds).
func (tx *Tx) Delete(key []byte) error {
	if tx.finished {
		return ErrTxDone
	}
	if tx.own == nil {
		tx.own = overlay{}
	}
	tx.own[string(key)] = ovalue{del: true}
	return nil
}

// Add appends entry (copied) and returns its index, which is final once
// Append returns nil. Entries over MaxEntrySize fail with ErrEntryTooLarge.
func (tx *Tx) Add(entry []byte) (uint64, error) {
	if tx.finished {
		return 0, ErrTxDone
	}
	if tx.noAdd {
		return 0, errors.New("adding entry: not allowed while rebuilding state")
	}
	if len(entry) > MaxEntrySize {
		return 0, fmt.Errorf("adding entry: %w: %d bytes, max %d", ErrEntryTooLarge, len(entry), MaxEntrySize)
	}
	tx.entries = append(tx.entries, bytes.Clone(entry))
	return tx.base + uint64(len(tx.entries)) - 1, nil
}

// NextIndex returns the index the next Add will get.
func (tx *Tx) NextIndex() uint64 { return tx.base + uint64(len(tx.entries)) }

// Scan calls fn for every state key with prefix as this Tx sees it
// (committed state, earlier Txs of the group, its own writes), in key
// order. key and value are valid only during the call.
func (tx *Tx) Scan(prefix []byte, fn func(key, value []byte) error) error {
	if tx.finished {
		return ErrTxDone
	}
	// Pending writes with the prefix, own writes winning, sorted.
	pend := map[string]ovalue{}
	for _, m := range []overlay{tx.group, tx.own} {
		for k, v := range m {
			if bytes.HasPrefix([]byte(k), prefix) {
				pend[k] = v
			}
		}
	}
	keys := make([]string, 0, len(pend))
	for k := range pend {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	lo := stateKey(tx.gen, prefix)
	it, err := tx.l.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return fmt.Errorf("scanning state: %w", err)
	}
	defer it.Close()
	ok := it.First()
	for ok || len(keys) > 0 {
		var dk []byte
		if ok {
			dk = it.Key()[9:]
		}
		if len(keys) > 0 && (!ok || keys[0] <= string(dk)) {
			k := keys[0]
			keys = keys[1:]
			if ok && k == string(dk) {
				ok = it.Next()
			}
			if v := pend[k]; !v.del {
				if err := fn([]byte(k), v.v); err != nil {
					return err
				}
			}
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("scanning state: %w", err)
		}
		if err := fn(dk, v); err != nil {
			return err
		}
		ok = it.Next()
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("scanning state: %w", err)
	}
	return nil
}

// mergeInto adds the Tx's writes to the group overlay and the batch.
func (tx *Tx) mergeInto(o overlay, b *pebble.Batch) {
	for k, v := range tx.own {
		o[k] = v
		if v.del {
			b.Delete(stateKey(tx.gen, []byte(k)), nil)
		} else {
			b.Set(stateKey(tx.gen, []byte(k)), v.v, nil)
		}
	}
}
