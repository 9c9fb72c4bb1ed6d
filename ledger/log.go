package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/transparency-dev/merkle/compact"
	"golang.org/x/mod/sumdb/note"
)

// Options configure Open. The zero value of every field means its default.
type Options struct {
	// Origin is the checkpoint origin line. It is fixed when the store is
	// created (default DefaultOrigin); reopening with a different non-empty
	// Origin fails with ErrOriginMismatch, an empty one uses the stored one.
	Origin string
	// KeyFile is the note signer key ("PRIVATE+KEY+..."); its name must
	// equal Origin. The default is <dir>/log.key, created with mode 0600 on
	// first Open. A key that exists while the store is missing or empty is
	// refused with ErrKeyWithoutStore unless NewLogWithExistingKey is set.
	KeyFile string
	// NewLogWithExistingKey lets Open create a new store signed by a
	// KeyFile that already exists (a key provisioned before the first
	// start, or a deliberate fork in tests). Without it Open refuses,
	// because a key without its store has most likely signed a history
	// the store has lost, and a new log would be a second history under
	// the same key.
	NewLogWithExistingKey bool
	// Logger receives pebble's log lines. The default discards them.
	Logger *slog.Logger
	// MaxBatch is the most Append calls gathered into one group commit. The
	// default is 1024.
	MaxBatch int
	// CacheSize is pebble's block cache in bytes. The default is 64 MiB.
	CacheSize int64
	// MustExist makes Open fail with ErrNoStore, creating nothing, when dir
	// holds no ledger store, for commands that inspect or repair a ledger
	// and must not leave an empty one behind a mistyped path. The default
	// creates a new store.
	MustExist bool

	// commitHook, if set, runs before each group commit; an error it returns
	// fails the commit as a disk error would (tests only).
	commitHook func() error
}

const (
	defaultMaxBatch  = 1024
	defaultCacheSize = 64 << 20
	// formatVersion is pinned so that the on-disk format only changes when
	// we decide so; pebble v2 would otherwise default to its oldest format.
	formatVersion = pebble.FormatValueSeparation
	dbDirName     = "db"
	keyFileName   = "log.key"
	// pendingKeySuffix names where a new key waits until the store that
	// records its first checkpoint is committed: a first start that
	// crashes in between leaves no key beside an empty store, which the
	// next Open would have to refuse.
	pendingKeySuffix = ".pending"
)

var (
	// ErrInUse is returned by Open and VerifyStore when another Log (in
	// this process or another, typically a running server) holds the
	// store's lock: pebble allows one writer per store.
	ErrInUse = errors.New("ledger store is in use by another process")
	// ErrNoStore is returned by Open with MustExist, and by VerifyStore,
	// when the directory holds no ledger store.
	ErrNoStore = errors.New("no ledger store")
	// ErrKeyWithoutStore is returned by Open when the log key exists but
	// the store is missing or holds no ledger (deleted, partly restored,
	// its write-ahead log lost). Creating a new log there would sign a
	// second, different history with the key that signed the lost one.
	ErrKeyWithoutStore = errors.New("refusing to create a new ledger beside an existing log key")
)

// Log is an open ledger. Its methods are safe for concurrent use.
type Log struct {
	dir      string
	db       *pebble.DB
	origin   string
	signer   note.Signer
	verifier note.Verifier
	vkey     string
	maxBatch int
	hook     func() error

	reqs      chan *request
	closing   chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	head     atomic.Pointer[head]
	stateGen atomic.Uint64
	view     atomic.Pointer[readView]

	// Owned by the sequencer goroutine (and Open before it starts).
	seq seqState
}

// head is the latest committed tree: its size, root and signed checkpoint.
type head struct {
	size uint64
	root Hash
	note []byte
}

// seqState is the sequencer's in-memory view of the tree's right edge.
type seqState struct {
	rng   *compact.Range
	tiles [][]Hash // tiles[L]: hashes of the partial tile at level L
	tail  [][]byte // entries of the partial entry bundle

	scratch []byte // reused to encode tiles into batches
}

var rangeFactory = &compact.RangeFactory{Hash: HashChildren}

// Open opens or creates the ledger in dir, which holds the pebble store
// (dir/db) and by default the signer key (dir/log.key). A new store gets an
// empty-tree checkpoint of size 0, but never beside an existing key file
// (ErrKeyWithoutStore; see Options.NewLogWithExistingKey). Open checks the
// stored tree state against the latest checkpoint and fails with
// ErrInconsistent if they differ.
func Open(dir string, opts Options) (*Log, error) {
	if opts.KeyFile == "" {
		opts.KeyFile = filepath.Join(dir, keyFileName)
	}
	// Checked before anything is created, so that a refusal leaves no new
	// store behind; init checks again for a store that exists but is empty.
	if !opts.NewLogWithExistingKey {
		if err := checkKeyHasStore(dir, opts.KeyFile); err != nil {
			return nil, err
		}
	}
	if opts.MustExist {
		if _, err := os.Stat(filepath.Join(dir, dbDirName)); errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("opening ledger %s: %w", dir, ErrNoStore)
		}
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating ledger directory: %w", err)
	}
	db, err := openStore(filepath.Join(dir, dbDirName), opts.Logger, opts.CacheSize, false, opts.MustExist)
	if err != nil {
		return nil, err
	}
	l := &Log{
		dir:      dir,
		db:       db,
		maxBatch: opts.MaxBatch,
		hook:     opts.commitHook,
		reqs:     make(chan *request),
		closing:  make(chan struct{}),
		done:     make(chan struct{}),
	}
	if l.maxBatch <= 0 {
		l.maxBatch = defaultMaxBatch
	}
	if err := l.init(opts); err != nil {
		db.Close()
		return nil, err
	}
	l.publishView()
	go l.run()
	return l, nil
}

// checkKeyHasStore fails with ErrKeyWithoutStore if keyFile exists but
// dir holds no pebble store. It only reads.
func checkKeyHasStore(dir, keyFile string) error {
	if _, err := os.Stat(keyFile); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("checking key file: %w", err)
	}
	path := filepath.Join(dir, dbDirName)
	desc, err := pebble.Peek(path, vfs.Default)
	if errors.Is(err, os.ErrNotExist) || (err == nil && !desc.Exists) {
		return keyWithoutStoreError(dir, keyFile, "missing")
	}
	if err != nil {
		return fmt.Errorf("opening ledger store %s: %w", path, err)
	}
	return nil
}

func keyWithoutStoreError(dir, keyFile, state string) error {
	db := filepath.Join(dir, dbDirName)
	return fmt.Errorf("%w: store %s is %s but key %s exists; starting would sign a second, different history with the same key. "+
		"Restore %s from a backup (docs/operations.md, Backups and restore), "+
		"or, only to start a new log on purpose, move %s away first (a new key is made; clients must be told to trust it)",
		ErrKeyWithoutStore, db, state, keyFile, db, keyFile)
}

// openPebble opens the pebble store at path, creating it unless readOnly.
func openPebble(path string, logger *slog.Logger, cacheSize int64, readOnly bool) (*pebble.DB, error) {
	return openStore(path, logger, cacheSize, readOnly, false)
}

// openStore opens the pebble store at path. A store that does not exist is
// created unless readOnly or mustExist, which fail with ErrNoStore; a store
// locked by another open fails with ErrInUse.
func openStore(path string, logger *slog.Logger, cacheSize int64, readOnly, mustExist bool) (*pebble.DB, error) {
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cacheSize <= 0 {
		cacheSize = defaultCacheSize
	}
	cache := pebble.NewCache(cacheSize)
	defer cache.Unref()
	po := &pebble.Options{
		Cache:              cache,
		FormatMajorVersion: formatVersion,
		Logger:             pebbleLogger{logger},
		ReadOnly:           readOnly,
		ErrorIfNotExists:   mustExist,
		// Appends write ~1 MiB per group commit at full speed; a larger
		// memtable means fewer flushes competing for the 2 shared cores.
		MemTableSize: 64 << 20,
	}
	if readOnly || mustExist {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("opening ledger store %s: %w", path, ErrNoStore)
		} else if err != nil {
			return nil, fmt.Errorf("opening ledger store %s: %w", path, err)
		}
	} else if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("creating ledger store %s: %w", path, err)
	}
	// Taking pebble's lock ourselves, before Open, tells a lock held
	// elsewhere apart from every other failure, which pebble reports alike
	// (a bare "resource temporarily unavailable").
	lock, err := pebble.LockDirectory(path, vfs.Default)
	if err != nil {
		if lockHeld(err) {
			return nil, fmt.Errorf("opening ledger store %s: %w", path, ErrInUse)
		}
		return nil, fmt.Errorf("opening ledger store %s: locking: %w", path, err)
	}
	po.Lock = lock
	db, err := pebble.Open(path, po)
	// The DB holds its own reference to the lock and releases it in Close
	// (or already did, if Open failed); drop ours.
	lock.Close()
	if errors.Is(err, pebble.ErrDBDoesNotExist) {
		return nil, fmt.Errorf("opening ledger store %s: %w", path, ErrNoStore)
	}
	if err != nil {
		return nil, fmt.Errorf("opening ledger store %s: %w", path, err)
	}
	return db, nil
}

// lockHeld reports whether an error of pebble.LockDirectory means that the
// lock is held: by another process, fcntl fails with EAGAIN or EACCES (a
// bare errno; failing to create the lock file is an *fs.PathError
// instead); within this process pebble refuses before asking the kernel,
// with an error that has no type of its own.
func lockHeld(err error) bool {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return false
	}
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES) ||
		strings.Contains(err.Error(), "lock held by current process")
}

// pebbleLogger sends pebble's log lines to slog instead of stderr.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Info(fmt.Sprintf(format, args...), "component", "pebble")
}
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

// Fatalf must not return (pebble's contract); pebble calls it only on
// internal invariant violations.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "component", "pebble", "fatal", true)
	panic("pebble: " + msg)
}

func (l *Log) init(opts Options) error {
	stored, err := l.getMeta(keyOrigin)
	fresh := errors.Is(err, ErrNotFound)
	if err != nil && !fresh {
		return fmt.Errorf("reading origin: %w", err)
	}
	if fresh {
		// The first start writes the origin with everything else in one
		// batch: data without it is a damaged store, not a new one.
		empty, err := l.isEmpty()
		if err != nil {
			return fmt.Errorf("reading ledger store: %w", err)
		}
		if !empty {
			return fmt.Errorf("%w: the store holds data but no origin record (run hallmark ledger verify)", ErrInconsistent)
		}
	}
	origin := opts.Origin
	switch {
	case fresh && origin == "":
		origin = DefaultOrigin
	case !fresh && origin == "":
		origin = string(stored)
	case !fresh && origin != string(stored):
		return fmt.Errorf("opening ledger: %w: store has %q, options say %q", ErrOriginMismatch, stored, origin)
	}
	l.origin = origin
	keyFile := opts.KeyFile
	pending := keyFile + pendingKeySuffix
	signer, vkey, err := loadKey(keyFile)
	newKey, adoptPending := false, false
	switch {
	case err == nil && fresh && !opts.NewLogWithExistingKey:
		return keyWithoutStoreError(l.dir, keyFile, "empty (it holds no ledger: a lost write-ahead log, or a first start that never completed)")
	case fresh && opts.MustExist:
		return fmt.Errorf("opening ledger store %s: it holds no ledger: %w", filepath.Join(l.dir, dbDirName), ErrNoStore)
	case errors.Is(err, os.ErrNotExist) && fresh:
		skey, _, gerr := GenerateKey(origin)
		if gerr != nil {
			return gerr
		}
		if werr := writeFileSync(pending, []byte(skey+"\n"), 0o600); werr != nil {
			return fmt.Errorf("writing key file %s: %w", pending, werr)
		}
		signer, vkey, err = parseKey(keyFile, skey)
		newKey = true
	case errors.Is(err, os.ErrNotExist):
		// A first start that committed its store but crashed before moving
		// the new key into place. The pending key is moved only once load
		// has checked that it signed the store's checkpoint: a stale one
		// (from a first start that never committed, beside a store restored
		// without its key) must not become log.key.
		if _, serr := os.Stat(pending); serr == nil {
			signer, vkey, err = loadKey(pending)
			adoptPending = err == nil
		}
	}
	if err != nil {
		return err
	}
	if signer.Name() != origin {
		return fmt.Errorf("opening ledger: %w: key %s is named %q, origin is %q", ErrOriginMismatch, keyFile, signer.Name(), origin)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return fmt.Errorf("parsing verifier key: %w", err)
	}
	l.signer, l.verifier, l.vkey = signer, v, vkey

	if fresh {
		n, err := signCheckpoint(signer, origin, 0, emptyRoot)
		if err != nil {
			return err
		}
		b := l.db.NewBatch()
		b.Set(keyOrigin, []byte(origin), nil)
		b.Set(keyTreeState, treeState{root: emptyRoot}.encode(), nil)
		b.Set(checkpointKey(0), encodeCheckpointRecord(0, n), nil)
		b.Set(keyStateGen, u64Key(0, 0)[1:], nil)
		if err := b.Commit(pebble.Sync); err != nil {
			return fmt.Errorf("initialising ledger store: %w", err)
		}
	}
	if newKey {
		if err := renameSync(pending, keyFile); err != nil {
			return fmt.Errorf("moving key file %s into place: %w", pending, err)
		}
	}
	if err := l.load(); err != nil {
		if adoptPending {
			return fmt.Errorf("%w (the key tried was %s, left from an unfinished first start, and left where it is: %s is missing; restore it with the store)", err, pending, keyFile)
		}
		return err
	}
	if adoptPending {
		if err := renameSync(pending, keyFile); err != nil {
			return fmt.Errorf("moving key file %s into place: %w", pending, err)
		}
	}
	// A RebuildState that crashed leaves other generations behind; they are
	// invisible but take space.
	gen := l.stateGen.Load()
	b := l.db.NewBatch()
	b.DeleteRange([]byte{pfxState}, stateKey(gen, nil), nil)
	b.DeleteRange(stateKey(gen+1, nil), []byte{pfxState + 1}, nil)
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("removing stale state generations: %w", err)
	}
	return nil
}

// load reads the durable tree state into memory and checks it against the
// latest checkpoint. The sequencer calls it again after a failed commit.
func (l *Log) load() error {
	genb, err := l.getMeta(keyStateGen)
	if err != nil || len(genb) != 8 {
		return fmt.Errorf("%w: reading state generation: %w (run hallmark ledger verify)", ErrInconsistent, errOr(err, errBadTreeState))
	}
	l.stateGen.Store(beUint64(genb))
	tsb, err := l.getMeta(keyTreeState)
	if err != nil {
		return fmt.Errorf("%w: reading tree state: %w (run hallmark ledger verify)", ErrInconsistent, err)
	}
	ts, err := decodeTreeState(tsb)
	if err != nil {
		return fmt.Errorf("%w: reading tree state: %w (run hallmark ledger verify)", ErrInconsistent, err)
	}
	latest, err := l.latestCheckpointSize()
	if err != nil {
		return fmt.Errorf("%w: finding latest checkpoint: %w (run hallmark ledger verify)", ErrInconsistent, err)
	}
	if latest != ts.size {
		return fmt.Errorf("%w: tree state has size %d, latest stored checkpoint has size %d (run hallmark ledger verify)", ErrInconsistent, ts.size, latest)
	}
	rec, err := l.getMeta(checkpointKey(ts.size))
	if err != nil {
		return fmt.Errorf("%w: no checkpoint for tree size %d: %w (run hallmark ledger verify)", ErrInconsistent, ts.size, err)
	}
	_, n, err := decodeCheckpointRecord(rec)
	if err != nil {
		return fmt.Errorf("%w: checkpoint %d: %w (run hallmark ledger verify)", ErrInconsistent, ts.size, err)
	}
	cp, err := ParseCheckpoint(n, l.origin, l.verifier)
	if err != nil {
		return fmt.Errorf("%w: checkpoint %d: %w (run hallmark ledger verify)", ErrInconsistent, ts.size, err)
	}
	if cp.Size != ts.size || cp.Root != ts.root {
		return fmt.Errorf("%w: tree state has size %d root %s, checkpoint has size %d root %s (run hallmark ledger verify)",
			ErrInconsistent, ts.size, ts.root, cp.Size, cp.Root)
	}
	hs := make([][]byte, len(ts.hashes))
	for i := range ts.hashes {
		hs[i] = ts.hashes[i][:]
	}
	rng, err := rangeFactory.NewRange(0, ts.size, hs)
	if err != nil {
		return fmt.Errorf("%w: compact range: %w (run hallmark ledger verify)", ErrInconsistent, err)
	}
	if ts.size > 0 {
		r, _ := rng.GetRootHash(nil)
		if Hash(r) != ts.root {
			return fmt.Errorf("%w: compact range root %x differs from tree state root %s (run hallmark ledger verify)", ErrInconsistent, r, ts.root)
		}
	}
	st := seqState{rng: rng}
	for level := uint64(0); ts.size>>(TileHeight*level) > 0; level++ {
		n := ts.size >> (TileHeight * level)
		st.tiles = append(st.tiles, make([]Hash, 0, TileWidth))
		if w := n % TileWidth; w > 0 {
			b, err := l.getMeta(tileKey(level, n/TileWidth))
			if err != nil || len(b) != int(w)*32 {
				return fmt.Errorf("%w: partial tile %s: %d bytes, want %d: %w (run hallmark ledger verify)",
					ErrInconsistent, TilePath(level, n/TileWidth, w), len(b), w*32, errOr(err, ErrTampered))
			}
			st.tiles[level] = appendHashes(st.tiles[level], b)
		}
	}
	for i := ts.size - ts.size%TileWidth; i < ts.size; i++ {
		e, err := l.getMeta(entryKey(i))
		if err != nil {
			return fmt.Errorf("%w: entry %d: %w (run hallmark ledger verify)", ErrInconsistent, i, err)
		}
		st.tail = append(st.tail, e)
	}
	l.seq = st
	l.head.Store(&head{size: ts.size, root: ts.root, note: n})
	return nil
}

// isEmpty reports whether the store holds no key at all.
func (l *Log) isEmpty() (bool, error) {
	it, err := l.db.NewIter(nil)
	if err != nil {
		return false, err
	}
	defer it.Close()
	if it.First() {
		return false, nil
	}
	return true, it.Error()
}

// latestCheckpointSize returns the size of the highest stored checkpoint.
func (l *Log) latestCheckpointSize() (uint64, error) {
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfxCheckpoint}, UpperBound: []byte{pfxCheckpoint + 1}})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	if !it.Last() {
		return 0, errOr(it.Error(), ErrNotFound)
	}
	if len(it.Key()) != 9 {
		return 0, fmt.Errorf("malformed checkpoint key %x", it.Key())
	}
	return beUint64(it.Key()[1:]), nil
}

func errOr(err, alt error) error {
	if err != nil {
		return err
	}
	return alt
}

func appendHashes(dst []Hash, b []byte) []Hash {
	for i := 0; i+32 <= len(b); i += 32 {
		dst = append(dst, Hash(b[i:i+32]))
	}
	return dst
}

// getMeta reads a raw key; the copy is the caller's.
func (l *Log) getMeta(k []byte) ([]byte, error) { return dbGet(l.db, k) }

type getter interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

func dbGet(db getter, k []byte) ([]byte, error) {
	v, c, err := db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	out := append([]byte(nil), v...)
	c.Close()
	return out, nil
}

// Close stops the sequencer, failing queued Appends with ErrClosed, and
// closes the store. Appends whose function already ran complete first.
// Reads (including Handler's) must have finished before Close is called:
// stop the HTTP server first.
func (l *Log) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.closing)
		<-l.done
		if v := l.view.Swap(nil); v != nil {
			v.release()
		}
		if cerr := l.db.Close(); cerr != nil {
			err = fmt.Errorf("closing ledger store: %w", cerr)
		}
	})
	return err
}

func (l *Log) isClosed() bool {
	select {
	case <-l.closing:
		return true
	default:
		return false
	}
}

// Size returns the size of the latest committed tree.
func (l *Log) Size() uint64 { return l.head.Load().size }

// Checkpoint returns the latest signed checkpoint note.
func (l *Log) Checkpoint() []byte { return append([]byte(nil), l.head.Load().note...) }

// CheckpointAt returns the stored checkpoint of exactly size, or
// ErrNotFound if no committed batch ended at that size.
func (l *Log) CheckpointAt(size uint64) ([]byte, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	if size > l.Size() {
		return nil, fmt.Errorf("checkpoint %d: %w", size, ErrNotFound)
	}
	rec, err := l.getMeta(checkpointKey(size))
	if err != nil {
		return nil, fmt.Errorf("checkpoint %d: %w", size, err)
	}
	_, n, err := decodeCheckpointRecord(rec)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %d: %w", size, err)
	}
	return n, nil
}

// Verifier returns the note verifier of the log's key.
func (l *Log) Verifier() note.Verifier { return l.verifier }

// VerifierKey returns the log's verifier key text ("<name>+<hash>+<key>").
func (l *Log) VerifierKey() string { return l.vkey }

// Origin returns the checkpoint origin line.
func (l *Log) Origin() string { return l.origin }

// Get reads a committed (durable) state key; ErrNotFound if absent.
func (l *Log) Get(key []byte) ([]byte, error) {
	v := l.acquireView()
	if v == nil {
		return nil, ErrClosed
	}
	defer v.release()
	return dbGet(v.snap, stateKey(v.gen, key))
}

// Scan calls fn for every committed state key with prefix, in key order,
// over a consistent snapshot. An error from fn stops the scan and is
// returned unchanged. key and value are valid only during the call.
func (l *Log) Scan(prefix []byte, fn func(key, value []byte) error) error {
	return l.ScanFrom(prefix, nil, fn)
}

// ScanFrom is Scan starting at the first key with prefix that is not below
// start, so that paging through a long prefix does not read what earlier
// pages covered.
func (l *Log) ScanFrom(prefix, start []byte, fn func(key, value []byte) error) error {
	v := l.acquireView()
	if v == nil {
		return ErrClosed
	}
	defer v.release()
	lo := stateKey(v.gen, prefix)
	if s := stateKey(v.gen, start); bytes.Compare(s, lo) > 0 {
		lo = s
	}
	it, err := v.snap.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(stateKey(v.gen, prefix))})
	if err != nil {
		return fmt.Errorf("scanning state: %w", err)
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("scanning state: %w", err)
		}
		if err := fn(it.Key()[9:], v); err != nil {
			return err
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("scanning state: %w", err)
	}
	return nil
}

// Entry returns the exact stored bytes of entry index.
func (l *Log) Entry(index uint64) ([]byte, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	size := l.Size()
	if index >= size {
		return nil, fmt.Errorf("entry %d (tree size %d): %w", index, size, ErrNotFound)
	}
	if index >= size-size%TileWidth {
		e, err := l.getMeta(entryKey(index))
		if err == nil {
			return e, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("reading entry %d: %w", index, err)
		}
		// Its bundle filled since we looked at the size.
	}
	b, err := l.getMeta(bundleKey(index / TileWidth))
	if err != nil {
		return nil, fmt.Errorf("reading entry bundle %d: %w", index/TileWidth, err)
	}
	es, err := DecodeEntryBundle(b)
	if err != nil || len(es) != TileWidth {
		return nil, fmt.Errorf("reading entry %d: %w", index, errOr(err, ErrBadBundle))
	}
	return es[index%TileWidth], nil
}

// Entries calls fn for each entry in [from, to) in index order. The entry
// slice is valid only during the call.
func (l *Log) Entries(ctx context.Context, from, to uint64, fn func(index uint64, entry []byte) error) error {
	if l.isClosed() {
		return ErrClosed
	}
	size := l.Size()
	if to > size || from > to {
		return fmt.Errorf("entries [%d, %d) of tree size %d: %w", from, to, size, ErrNotFound)
	}
	snap := l.db.NewSnapshot()
	defer snap.Close()
	for i := from; i < to; {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := i / TileWidth
		var es [][]byte
		if b, err := dbGet(snap, bundleKey(k)); err == nil {
			if es, err = DecodeEntryBundle(b); err != nil || len(es) != TileWidth {
				return fmt.Errorf("reading entry bundle %d: %w", k, errOr(err, ErrBadBundle))
			}
		} else if !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("reading entry bundle %d: %w", k, err)
		} else {
			for j := i; j < to && j/TileWidth == k; j++ {
				e, err := dbGet(snap, entryKey(j))
				if err != nil {
					return fmt.Errorf("reading entry %d: %w", j, err)
				}
				es = append(es, e)
			}
			es = append(make([][]byte, i%TileWidth), es...)
		}
		for ; i < to && i/TileWidth == k; i++ {
			if err := fn(i, es[i%TileWidth]); err != nil {
				return err
			}
		}
	}
	return nil
}

// ReadTile returns hash tile (level, index) as served at its tlog-tiles
// path: width 0 or 256 asks for the full tile, 1..255 for a partial one.
// ErrNotFound if the tree does not (yet) have that many hashes there.
func (l *Log) ReadTile(level, index, width uint64) ([]byte, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	if width == 0 {
		width = TileWidth
	}
	if level > maxTileLevel || width > TileWidth {
		return nil, fmt.Errorf("tile %d/%d width %d: %w", level, index, width, ErrNotFound)
	}
	n := l.Size() >> (TileHeight * level) // hashes at this level
	if index >= n/TileWidth && (index > n/TileWidth || width > n%TileWidth) {
		return nil, fmt.Errorf("%s: %w", TilePath(level, index, width), ErrNotFound)
	}
	b, err := l.getMeta(tileKey(level, index))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", TilePath(level, index, width), err)
	}
	if uint64(len(b)) < width*32 {
		return nil, fmt.Errorf("reading %s: stored tile has %d bytes: %w", TilePath(level, index, width), len(b), ErrTampered)
	}
	return b[:width*32], nil
}

// ReadEntryBundle returns entry bundle index as served at its tlog-tiles
// path: width 0 or 256 for the full bundle, 1..255 for a partial one.
func (l *Log) ReadEntryBundle(index, width uint64) ([]byte, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	if width == 0 {
		width = TileWidth
	}
	size := l.Size()
	if width > TileWidth || index > size/TileWidth || (index == size/TileWidth && width > size%TileWidth) {
		return nil, fmt.Errorf("%s: %w", EntriesPath(index, width), ErrNotFound)
	}
	snap := l.db.NewSnapshot()
	defer snap.Close()
	b, err := dbGet(snap, bundleKey(index))
	if err == nil {
		if width == TileWidth {
			return b, nil
		}
		return bundlePrefix(b, int(width))
	}
	if !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("reading %s: %w", EntriesPath(index, width), err)
	}
	out := make([]byte, 0, width*1024)
	for i := index * TileWidth; i < index*TileWidth+width; i++ {
		e, err := dbGet(snap, entryKey(i))
		if err != nil {
			return nil, fmt.Errorf("reading entry %d: %w", i, err)
		}
		out = appendBundleEntry(out, e)
	}
	return out, nil
}

func beUint64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}
