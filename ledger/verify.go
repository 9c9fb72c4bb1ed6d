package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/transparency-dev/merkle/compact"
	"golang.org/x/mod/sumdb/note"
)

// VerifyOptions configure VerifyStore. The zero value of every field means
// its default.
type VerifyOptions struct {
	// Origin is the expected origin line; default: the one stored.
	Origin string
	// Verifier checks checkpoint signatures; default: derived from KeyFile.
	Verifier note.Verifier
	// KeyFile is the log's signer key file; default <dir>/log.key. Only
	// read when Verifier is nil.
	KeyFile string
	// Trusted is a checkpoint note seen earlier (signed by the same key);
	// the store must contain its size and agree with its root, else the
	// error has Kind "rollback".
	Trusted []byte
	// Progress, if set, is called with entries checked so far and in all.
	Progress func(done, total uint64)
	// Logger receives pebble's log lines; default: discarded.
	Logger *slog.Logger
}

// VerifyReport summarises a verification.
type VerifyReport struct {
	Size        uint64 // verified tree size
	Root        Hash   // verified root at Size
	Entries     uint64 // entries re-hashed
	Bundles     uint64 // full entry bundles decoded
	Tiles       uint64 // hash tiles compared
	Checkpoints uint64 // stored checkpoints whose signature and root were checked
	// Problems lists every problem found, most important first (the first
	// is also returned as the error), capped at 100.
	Problems []*VerifyError
}

// VerifyError describes one bad stored object. errors.Is(err, ErrTampered)
// holds for it.
type VerifyError struct {
	// Kind is "entry", "entry bundle", "hash tile", "checkpoint",
	// "tree state" or "rollback".
	Kind string
	// Index is the entry index (entry), bundle or tile index (entry bundle,
	// hash tile), or tree size (checkpoint, tree state, rollback).
	Index uint64
	// Object names the object, e.g. "tile/0/x001/234" or "checkpoint/600".
	Object string
	Reason string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("%s %s: %s", e.Kind, e.Object, e.Reason)
}

// Is reports whether target is ErrTampered.
func (e *VerifyError) Is(target error) bool { return target == ErrTampered }

// problem kinds in the order they are reported: a bad checkpoint or tree
// state is named before the entries they disagree with, and tiles are only
// blamed once the entries are known good.
const (
	kindCheckpoint  = "checkpoint"
	kindTreeState   = "tree state"
	kindEntry       = "entry"
	kindEntryBundle = "entry bundle"
	kindHashTile    = "hash tile"
	kindRollback    = "rollback"
)

type problems struct {
	cp, ts, entry, tsVsEntries, tile, rollback []*VerifyError
}

func (p *problems) add(list *[]*VerifyError, kind string, index uint64, object, format string, args ...any) {
	*list = append(*list, &VerifyError{Kind: kind, Index: index, Object: object, Reason: fmt.Sprintf(format, args...)})
}

// VerifyStore checks the ledger store in dir, opened read-only: it
// re-hashes every stored entry, rebuilds the tree, compares every hash tile,
// checks the tree state and every stored checkpoint (signature, size, chain
// and root), and, if opts.Trusted is set, consistency with that checkpoint.
// A failed check returns the report and a *VerifyError naming the first bad
// object; other errors (store cannot be opened, bad options) are returned
// as is.
func VerifyStore(ctx context.Context, dir string, opts VerifyOptions) (VerifyReport, error) {
	var rep VerifyReport
	db, err := openPebble(filepath.Join(dir, dbDirName), opts.Logger, 0, true)
	if err != nil {
		return rep, fmt.Errorf("verifying ledger: %w", err)
	}
	defer db.Close()
	return verifyReader(ctx, db, dir, opts)
}

// Verify runs the checks of VerifyStore on the open log, over a snapshot
// of its committed state, so a running server can verify itself (pebble's
// lock keeps VerifyStore from opening a store that is in use). The default
// Verifier is the log's own.
func (l *Log) Verify(ctx context.Context, opts VerifyOptions) (VerifyReport, error) {
	if l.isClosed() {
		return VerifyReport{}, ErrClosed
	}
	if opts.Verifier == nil {
		opts.Verifier = l.verifier
	}
	snap := l.db.NewSnapshot()
	defer snap.Close()
	return verifyReader(ctx, snap, l.dir, opts)
}

// storeReader is what verification reads: a read-only DB or a snapshot.
type storeReader interface {
	getter
	NewIter(o *pebble.IterOptions) (*pebble.Iterator, error)
}

func verifyReader(ctx context.Context, db storeReader, dir string, opts VerifyOptions) (VerifyReport, error) {
	var rep VerifyReport
	v := &verifier{db: db, ctx: ctx, opts: opts, rep: &rep}
	if err := v.run(dir); err != nil {
		return rep, err
	}
	p := &v.probs
	var all []*VerifyError
	all = append(all, p.cp...)
	all = append(all, p.ts...)
	all = append(all, p.entry...)
	if len(p.entry) == 0 {
		all = append(all, p.tsVsEntries...)
		all = append(all, p.tile...)
	}
	all = append(all, p.rollback...)
	if len(all) > 100 {
		all = all[:100]
	}
	rep.Problems = all
	if len(all) > 0 {
		return rep, all[0]
	}
	return rep, nil
}

type verifier struct {
	db    storeReader
	ctx   context.Context
	opts  VerifyOptions
	rep   *VerifyReport
	probs problems

	origin string
	nv     note.Verifier
	ts     *treeState
	cps    map[uint64]Hash // valid checkpoints: size → root
	sizes  []uint64        // sizes at which to check the root, ascending
	trust  *Checkpoint
	size   uint64 // size being verified

	// tree rebuild
	rng    *compact.Range
	levels [][]Hash // expected hashes of the current tile at level L >= 1
	counts []uint64 // nodes emitted so far at level L
}

func (v *verifier) run(dir string) error {
	p := &v.probs
	o, err := dbGet(v.db, keyOrigin)
	switch {
	case errors.Is(err, ErrNotFound):
		p.add(&p.ts, kindTreeState, 0, "origin", "origin record missing")
		o = []byte(v.opts.Origin)
	case err != nil:
		return fmt.Errorf("verifying ledger: reading origin: %w", err)
	}
	v.origin = string(o)
	if v.opts.Origin != "" && v.opts.Origin != v.origin {
		return fmt.Errorf("verifying ledger: %w: store has %q, expected %q", ErrOriginMismatch, v.origin, v.opts.Origin)
	}
	v.nv = v.opts.Verifier
	if v.nv == nil {
		kf := v.opts.KeyFile
		if kf == "" {
			kf = filepath.Join(dir, keyFileName)
		}
		_, vkey, err := loadKey(kf)
		if errors.Is(err, os.ErrNotExist) {
			if _, perr := os.Stat(kf + pendingKeySuffix); perr == nil {
				return fmt.Errorf("verifying ledger: %w; %s is there: a first start stopped before moving its key into place, and the next start of the server (or any command that opens the ledger) will, once it has checked that key against the store", err, kf+pendingKeySuffix)
			}
		}
		if err != nil {
			return fmt.Errorf("verifying ledger: %w", err)
		}
		if v.nv, err = note.NewVerifier(vkey); err != nil {
			return fmt.Errorf("verifying ledger: %w", err)
		}
	}
	if v.opts.Trusted != nil {
		cp, err := ParseCheckpoint(v.opts.Trusted, v.origin, v.nv)
		if err != nil {
			return fmt.Errorf("verifying ledger: trusted checkpoint: %w", err)
		}
		v.trust = &cp
	}
	tsb, err := dbGet(v.db, keyTreeState)
	if err == nil {
		ts, derr := decodeTreeState(tsb)
		if derr != nil {
			p.add(&p.ts, kindTreeState, 0, "tree state", "%v", derr)
		} else {
			v.ts = &ts
		}
	} else if errors.Is(err, ErrNotFound) {
		p.add(&p.ts, kindTreeState, 0, "tree state", "missing")
	} else {
		return fmt.Errorf("verifying ledger: reading tree state: %w", err)
	}
	if g, err := dbGet(v.db, keyStateGen); err != nil || len(g) != 8 {
		p.add(&p.ts, kindTreeState, 0, "state generation", "missing or malformed")
	}
	if err := v.checkpoints(); err != nil {
		return err
	}
	if err := v.entries(); err != nil {
		return err
	}
	return v.extraTiles()
}

// checkpoints checks every stored checkpoint: signature, origin, that its
// size is its key, and the prev-size chain that links each to the one
// before it.
func (v *verifier) checkpoints() error {
	p := &v.probs
	type rec struct {
		key  []byte
		val  []byte
		prev uint64
		cp   Checkpoint
		err  error
	}
	var recs []*rec
	it, err := v.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfxCheckpoint}, UpperBound: []byte{pfxCheckpoint + 1}})
	if err != nil {
		return fmt.Errorf("verifying ledger: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		val, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return fmt.Errorf("verifying ledger: reading checkpoints: %w", err)
		}
		recs = append(recs, &rec{key: bytes.Clone(it.Key()), val: bytes.Clone(val)})
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("verifying ledger: reading checkpoints: %w", err)
	}
	// Signatures are the expensive part: check them on every core.
	var wg sync.WaitGroup
	work := make(chan *rec)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for r := range work {
				prev, n, err := decodeCheckpointRecord(r.val)
				if err != nil {
					r.err = err
					continue
				}
				r.prev = prev
				r.cp, r.err = ParseCheckpoint(n, v.origin, v.nv)
			}
		})
	}
	for _, r := range recs {
		work <- r
	}
	close(work)
	wg.Wait()

	v.cps = map[uint64]Hash{}
	var last uint64 // last checkpoint size on the chain
	for i, r := range recs {
		if len(r.key) != 9 {
			p.add(&p.cp, kindCheckpoint, 0, fmt.Sprintf("key %x", r.key), "malformed checkpoint key")
			continue
		}
		size := beUint64(r.key[1:])
		obj := fmt.Sprintf("checkpoint/%d", size)
		switch {
		case r.err != nil:
			p.add(&p.cp, kindCheckpoint, size, obj, "%v", r.err)
			continue
		case r.cp.Size != size:
			p.add(&p.cp, kindCheckpoint, size, obj, "stored under size %d but signed for size %d", size, r.cp.Size)
			continue
		case i == 0 && size != 0:
			p.add(&p.cp, kindCheckpoint, 0, "checkpoint/0", "missing (first stored checkpoint is %d)", size)
		case i > 0 && r.prev > last:
			p.add(&p.cp, kindCheckpoint, r.prev, fmt.Sprintf("checkpoint/%d", r.prev), "missing (checkpoint %d follows it)", size)
		case i > 0 && r.prev < last:
			p.add(&p.cp, kindCheckpoint, size, obj, "follows checkpoint %d, but checkpoint %d is stored in between", r.prev, last)
		case size == 0 && r.cp.Root != emptyRoot:
			p.add(&p.cp, kindCheckpoint, 0, obj, "empty tree with root %s, want %s", r.cp.Root, emptyRoot)
		}
		v.cps[size] = r.cp.Root
		last = size
	}
	v.rep.Checkpoints = uint64(len(v.cps))
	latest := uint64(0)
	for s := range v.cps {
		latest = max(latest, s)
	}
	v.size = latest
	if ts := v.ts; ts != nil {
		obj := "tree state"
		if root, ok := v.cps[ts.size]; ok {
			if root != ts.root {
				p.add(&p.ts, kindTreeState, ts.size, obj, "root %s differs from checkpoint %d's root %s", ts.root, ts.size, root)
			}
			if ts.size < latest {
				p.add(&p.ts, kindTreeState, ts.size, obj, "size %d is behind the latest checkpoint %d (rolled back?)", ts.size, latest)
			}
		} else if ts.size > latest {
			if !hasKey(v.db, checkpointKey(ts.size)) {
				p.add(&p.cp, kindCheckpoint, ts.size, fmt.Sprintf("checkpoint/%d", ts.size), "missing (the tree state's size is %d)", ts.size)
			}
			v.size = ts.size
		} else {
			p.add(&p.ts, kindTreeState, ts.size, obj, "size %d has no stored checkpoint (latest is %d)", ts.size, latest)
		}
	} else if len(v.cps) == 0 {
		p.add(&p.cp, kindCheckpoint, 0, "checkpoint/0", "no valid checkpoint stored")
	}
	for s := range v.cps {
		if s > 0 {
			v.sizes = append(v.sizes, s)
		}
	}
	if v.trust != nil {
		if v.trust.Size > v.size {
			p.add(&p.rollback, kindRollback, v.trust.Size, fmt.Sprintf("checkpoint/%d", v.trust.Size),
				"store has size %d, behind the trusted checkpoint's size %d", v.size, v.trust.Size)
		} else if v.trust.Size > 0 {
			v.sizes = append(v.sizes, v.trust.Size)
		} else if v.trust.Root != emptyRoot {
			p.add(&p.rollback, kindRollback, 0, "checkpoint/0", "trusted empty checkpoint has root %s", v.trust.Root)
		}
	}
	slices.Sort(v.sizes)
	v.sizes = slices.Compact(v.sizes)
	return nil
}

func hasKey(db getter, k []byte) bool {
	_, err := dbGet(db, k)
	return err == nil
}

// bundleJob is one full entry bundle checked by a worker.
type bundleJob struct {
	k     uint64
	data  []byte
	done  chan struct{}
	leafs []Hash
	root  Hash
	bad   *VerifyError // structural problem of the bundle
	// tile comparison
	tileBad *VerifyError
	leafBad int // first position whose leaf hash differs from the tile (-1: none)
}

func (v *verifier) checkBundle(j *bundleJob) {
	defer close(j.done)
	j.leafBad = -1
	obj := EntriesPath(j.k, 0)
	es, err := DecodeEntryBundle(j.data)
	if err != nil {
		j.bad = &VerifyError{Kind: kindEntryBundle, Index: j.k, Object: obj, Reason: err.Error()}
		return
	}
	if len(es) != TileWidth {
		j.bad = &VerifyError{Kind: kindEntryBundle, Index: j.k, Object: obj, Reason: fmt.Sprintf("holds %d entries, want %d", len(es), TileWidth)}
		return
	}
	j.leafs = make([]Hash, TileWidth)
	for i, e := range es {
		j.leafs[i] = LeafHashOf(e)
	}
	j.root = subtreeRoot(j.leafs)
	t, err := dbGet(v.db, tileKey(0, j.k))
	tobj := TilePath(0, j.k, 0)
	switch {
	case errors.Is(err, ErrNotFound):
		j.tileBad = &VerifyError{Kind: kindHashTile, Index: j.k, Object: tobj, Reason: "missing"}
	case err != nil:
		j.tileBad = &VerifyError{Kind: kindHashTile, Index: j.k, Object: tobj, Reason: err.Error()}
	case len(t) != TileWidth*32:
		j.tileBad = &VerifyError{Kind: kindHashTile, Index: j.k, Object: tobj, Reason: fmt.Sprintf("%d bytes, want %d", len(t), TileWidth*32)}
	default:
		for i := range j.leafs {
			if !bytes.Equal(t[i*32:i*32+32], j.leafs[i][:]) {
				j.leafBad = i
				j.tileBad = &VerifyError{Kind: kindHashTile, Index: j.k, Object: tobj,
					Reason: fmt.Sprintf("hash %d is %x, want %s (leaf hash of entry %d)", i, t[i*32:i*32+32], j.leafs[i], j.k*TileWidth+uint64(i))}
				break
			}
		}
	}
}

// entries re-hashes every entry in index order, rebuilding the tree and
// comparing roots with the checkpoints and hashes with the tiles.
func (v *verifier) entries() error {
	p := &v.probs
	size := v.size
	nb := size / TileWidth
	v.rng = rangeFactory.NewEmptyRange(0)
	v.rep.Size = size

	// Producer: reads bundles in key order; workers hash them; this
	// goroutine consumes results in order.
	ordered := make(chan *bundleJob, 4*runtime.GOMAXPROCS(0))
	work := make(chan *bundleJob, 4*runtime.GOMAXPROCS(0))
	ctx, cancel := context.WithCancel(v.ctx)
	defer cancel()
	var prodErr error
	var extraBundles []uint64
	go func() {
		defer close(ordered)
		defer close(work)
		it, err := v.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfxBundle}, UpperBound: []byte{pfxBundle + 1}})
		if err != nil {
			prodErr = err
			return
		}
		defer it.Close()
		for ok := it.First(); ok; ok = it.Next() {
			if len(it.Key()) != 9 {
				continue
			}
			k := beUint64(it.Key()[1:])
			if k >= nb {
				extraBundles = append(extraBundles, k)
				continue
			}
			val, err := it.ValueAndErr()
			if err != nil {
				prodErr = err
				return
			}
			j := &bundleJob{k: k, data: bytes.Clone(val), done: make(chan struct{})}
			select {
			case work <- j:
			case <-ctx.Done():
				return
			}
			select {
			case ordered <- j:
			case <-ctx.Done():
				return
			}
		}
		prodErr = it.Error()
	}()
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for j := range work {
				v.checkBundle(j)
			}
		})
	}
	defer wg.Wait()

	next := uint64(0) // next bundle expected
	var firstLeafBad *VerifyError
	rootBad := false
	si := 0 // index into v.sizes
	stop := false
	for j := range ordered {
		if stop {
			<-j.done
			continue
		}
		if err := v.ctx.Err(); err != nil {
			return err
		}
		if j.k != next {
			p.add(&p.entry, kindEntryBundle, next, EntriesPath(next, 0), "missing (next stored bundle is %d)", j.k)
			stop = true
			cancel()
			continue
		}
		<-j.done
		next++
		if j.bad != nil {
			p.entry = append(p.entry, j.bad)
			stop = true
			cancel()
			continue
		}
		v.rep.Bundles++
		v.rep.Tiles++
		base := j.k * TileWidth
		if j.tileBad != nil {
			p.tile = append(p.tile, j.tileBad)
			if firstLeafBad == nil && j.leafBad >= 0 {
				firstLeafBad = &VerifyError{Kind: kindEntryBundle, Index: j.k, Object: EntriesPath(j.k, 0),
					Reason: fmt.Sprintf("entry %d (position %d) does not hash to the stored tree", base+uint64(j.leafBad), j.leafBad)}
			}
		}
		end := base + TileWidth
		if si < len(v.sizes) && v.sizes[si] < end {
			for i, h := range j.leafs {
				v.rng.Append(h[:], v.visit)
				rootBad = v.checkRoots(base+uint64(i)+1, &si, firstLeafBad, rootBad)
			}
		} else {
			other, _ := rangeFactory.NewRange(base, end, [][]byte{j.root[:]})
			v.rng.AppendRange(other, v.visit)
			rootBad = v.checkRoots(end, &si, firstLeafBad, rootBad)
		}
		v.addLevelHash(1, j.root)
		v.rep.Entries += TileWidth
		if v.opts.Progress != nil {
			v.opts.Progress(v.rep.Entries, size)
		}
	}
	wg.Wait()
	if prodErr != nil {
		return fmt.Errorf("verifying ledger: reading bundles: %w", prodErr)
	}
	if stop {
		return nil
	}
	if next < nb {
		p.add(&p.entry, kindEntryBundle, next, EntriesPath(next, 0), "missing (tree size %d needs %d bundles)", size, nb)
		return nil
	}
	for _, k := range extraBundles {
		p.add(&p.entry, kindEntryBundle, k, EntriesPath(k, 0), "beyond the tree size %d", size)
	}

	// The partial bundle: entries stored one by one.
	it, err := v.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfxEntry}, UpperBound: []byte{pfxEntry + 1}})
	if err != nil {
		return fmt.Errorf("verifying ledger: %w", err)
	}
	defer it.Close()
	var tailLeafs []Hash
	want := nb * TileWidth
	for ok := it.First(); ok; ok = it.Next() {
		if len(it.Key()) != 9 {
			p.add(&p.entry, kindEntry, 0, fmt.Sprintf("key %x", it.Key()), "malformed entry key")
			continue
		}
		i := beUint64(it.Key()[1:])
		obj := fmt.Sprintf("entry/%d", i)
		switch {
		case i < nb*TileWidth:
			p.add(&p.entry, kindEntry, i, obj, "stored individually although its bundle %d is full", i/TileWidth)
			continue
		case i >= size:
			p.add(&p.entry, kindEntry, i, obj, "beyond the tree size %d", size)
			continue
		case i != want:
			p.add(&p.entry, kindEntry, want, fmt.Sprintf("entry/%d", want), "missing")
			return nil
		}
		val, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("verifying ledger: reading entry %d: %w", i, err)
		}
		if len(val) > MaxEntrySize {
			p.add(&p.entry, kindEntry, i, obj, "%d bytes, over the maximum %d", len(val), MaxEntrySize)
		}
		tailLeafs = append(tailLeafs, LeafHashOf(val))
		want++
	}
	if want < size {
		p.add(&p.entry, kindEntry, want, fmt.Sprintf("entry/%d", want), "missing")
		return nil
	}
	if len(tailLeafs) > 0 {
		tobj := TilePath(0, nb, uint64(len(tailLeafs)))
		t, err := dbGet(v.db, tileKey(0, nb))
		v.rep.Tiles++
		switch {
		case err != nil:
			p.add(&p.tile, kindHashTile, nb, tobj, "%v", err)
		case len(t) != 32*len(tailLeafs):
			p.add(&p.tile, kindHashTile, nb, tobj, "%d bytes, want %d", len(t), 32*len(tailLeafs))
		default:
			for i, h := range tailLeafs {
				if !bytes.Equal(t[32*i:32*i+32], h[:]) {
					p.add(&p.tile, kindHashTile, nb, tobj, "hash %d is %x, want %s (leaf hash of entry %d)", i, t[32*i:32*i+32], h, nb*TileWidth+uint64(i))
					if firstLeafBad == nil {
						firstLeafBad = &VerifyError{Kind: kindEntry, Index: nb*TileWidth + uint64(i), Object: fmt.Sprintf("entry/%d", nb*TileWidth+uint64(i)),
							Reason: "does not hash to the stored tree"}
					}
					break
				}
			}
		}
	}
	for i, h := range tailLeafs {
		v.rng.Append(h[:], v.visit)
		rootBad = v.checkRoots(nb*TileWidth+uint64(i)+1, &si, firstLeafBad, rootBad)
	}
	v.rep.Entries += uint64(len(tailLeafs))
	if v.opts.Progress != nil {
		v.opts.Progress(v.rep.Entries, size)
	}
	v.flushLevels(size)
	root := emptyRoot
	if size > 0 {
		r, _ := v.rng.GetRootHash(nil)
		root = Hash(r)
	}
	v.rep.Root = root
	if ts := v.ts; ts != nil && ts.size == size && !rootBad {
		hs := v.rng.Hashes()
		if len(hs) != len(ts.hashes) {
			p.add(&p.tsVsEntries, kindTreeState, size, "tree state", "%d compact range hashes, want %d", len(ts.hashes), len(hs))
		} else {
			for i := range hs {
				if Hash(hs[i]) != ts.hashes[i] {
					p.add(&p.tsVsEntries, kindTreeState, size, "tree state", "compact range hash %d is %s, want %x", i, ts.hashes[i], hs[i])
					break
				}
			}
		}
		if ts.root != root {
			p.add(&p.tsVsEntries, kindTreeState, size, "tree state", "root %s, want %s (recomputed from entries)", ts.root, root)
		}
	}
	return nil
}

// checkRoots compares the rebuilt root with every checkpoint (and the
// trusted one) of size n. A mismatch blames the entries: the checkpoint is
// signed and the entries are what it commits to.
func (v *verifier) checkRoots(n uint64, si *int, leafBad *VerifyError, already bool) bool {
	p := &v.probs
	for *si < len(v.sizes) && v.sizes[*si] <= n {
		s := v.sizes[*si]
		*si++
		if s != n {
			continue
		}
		r, _ := v.rng.GetRootHash(nil)
		root := Hash(r)
		if want, ok := v.cps[s]; ok && root != want && !already {
			already = true
			if leafBad != nil {
				p.entry = append(p.entry, leafBad)
			} else {
				p.add(&p.entry, kindEntry, s-1, fmt.Sprintf("entry/%d", s-1), "entries up to %d do not hash to the root of signed checkpoint %d", s, s)
			}
		}
		if v.trust != nil && v.trust.Size == s && root != v.trust.Root {
			if want, ok := v.cps[s]; !ok || want == root {
				p.add(&p.rollback, kindRollback, s, fmt.Sprintf("checkpoint/%d", s), "store's root %s at size %d differs from the trusted checkpoint's %s (forked or rewritten)", root, s, v.trust.Root)
			}
		}
	}
	return already
}

// visit collects rebuilt nodes at tile levels 2 and up (level 1 comes from
// the bundle roots, level 0 from the workers).
func (v *verifier) visit(id compact.NodeID, hash []byte) {
	if id.Level < 2*TileHeight || id.Level%TileHeight != 0 {
		return
	}
	v.addLevelHash(int(id.Level/TileHeight), Hash(hash))
}

func (v *verifier) addLevelHash(level int, h Hash) {
	for len(v.levels) <= level {
		v.levels = append(v.levels, nil)
		v.counts = append(v.counts, 0)
	}
	v.levels[level] = append(v.levels[level], h)
	v.counts[level]++
	if len(v.levels[level]) == TileWidth {
		v.compareTile(uint64(level), (v.counts[level]-1)/TileWidth, v.levels[level])
		v.levels[level] = v.levels[level][:0]
	}
}

func (v *verifier) flushLevels(size uint64) {
	for level := 1; level < len(v.levels); level++ {
		if len(v.levels[level]) > 0 {
			n := size >> (TileHeight * uint(level))
			v.compareTile(uint64(level), n/TileWidth, v.levels[level])
		}
	}
}

func (v *verifier) compareTile(level, index uint64, want []Hash) {
	p := &v.probs
	w := uint64(len(want))
	obj := TilePath(level, index, w)
	v.rep.Tiles++
	t, err := dbGet(v.db, tileKey(level, index))
	switch {
	case err != nil:
		p.add(&p.tile, kindHashTile, index, obj, "%v", err)
	case uint64(len(t)) != 32*w:
		p.add(&p.tile, kindHashTile, index, obj, "%d bytes, want %d", len(t), 32*w)
	default:
		for i, h := range want {
			if !bytes.Equal(t[32*i:32*i+32], h[:]) {
				p.add(&p.tile, kindHashTile, index, obj, "hash %d is %x, want %s (recomputed from entries)", i, t[32*i:32*i+32], h)
				return
			}
		}
	}
}

// extraTiles reports stored tiles that the tree of the verified size does
// not have.
func (v *verifier) extraTiles() error {
	p := &v.probs
	it, err := v.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfxTile}, UpperBound: []byte{pfxTile + 1}})
	if err != nil {
		return fmt.Errorf("verifying ledger: %w", err)
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) != 10 {
			p.add(&p.tile, kindHashTile, 0, fmt.Sprintf("key %x", k), "malformed tile key")
			continue
		}
		level, index := uint64(k[1]), beUint64(k[2:])
		n := v.size >> (TileHeight * level)
		if index < n/TileWidth || (index == n/TileWidth && n%TileWidth > 0) {
			continue
		}
		p.add(&p.tile, kindHashTile, index, TilePath(level, index, 0), "beyond the tree size %d", v.size)
	}
	return it.Error()
}
