package blob

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// DefaultChunkSize is the size of every chunk but a blob's last: 4 MiB, the
// write size at which badger's synced throughput levels off (DESIGN.md §4).
const DefaultChunkSize = 4 << 20

// Options configures a Store. The zero value of every field means its default.
type Options struct {
	// Logger receives badger's own messages (info and debug at Debug level,
	// warnings at Warn, errors at Error). The default discards them.
	Logger *slog.Logger

	// ChunkSize is the size of the chunks new blobs are cut into. Identical
	// chunks are stored once only if blobs share a chunk size, so change it
	// only in tests. The default is DefaultChunkSize.
	ChunkSize int

	// MaxBlobSize bounds the size of one blob or upload session. The default
	// is 1 TiB.
	MaxBlobSize int64

	// UploadExpiry is how long an upload session lives after its last
	// activity. The default is 24 hours.
	UploadExpiry time.Duration

	// ValueLogFileSize is the size of badger's value-log files, where chunk
	// bytes live; value-log GC rewrites whole files, so smaller files free
	// space sooner. The default is 256 MiB.
	ValueLogFileSize int64

	// MemTableSize is the size of each of badger's two memtables, which hold
	// keys and small records only (chunks go to the value log). The default
	// is 16 MiB.
	MemTableSize int64

	// Now is the clock for record times, grace periods and expiry. The
	// default is time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.MaxBlobSize <= 0 {
		o.MaxBlobSize = 1 << 40
	}
	if o.UploadExpiry <= 0 {
		o.UploadExpiry = 24 * time.Hour
	}
	if o.ValueLogFileSize <= 0 {
		o.ValueLogFileSize = 256 << 20
	}
	if o.MemTableSize <= 0 {
		o.MemTableSize = 16 << 20
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Store is a content-addressed blob store in one badger database. It is safe
// for concurrent use.
type Store struct {
	db     *badger.DB
	dir    string // for FreeSpace
	opts   Options
	closed atomic.Bool

	// mu guards pins and gcSeen. pins counts, per chunk, the writers that
	// rely on the chunk existing but have not yet committed a record that
	// references it; Collect never deletes a pinned chunk, nor one pinned at
	// any time since its mark phase began (gcSeen), so a writer that found a
	// chunk already stored cannot lose it to a concurrent collection.
	mu     sync.Mutex
	pins   map[Digest]int
	gcSeen map[Digest]struct{}

	gcRun sync.Mutex // one Collect at a time; Close takes it to wait for one

	// sessions holds the ids of upload sessions with an append or commit in
	// progress, so two requests cannot interleave on one session.
	sessMu   sync.Mutex
	sessBusy map[string]bool

	bufs sync.Pool // chunk-sized []byte
}

// Open opens (creating if needed) the store in dir. Writes are made durable
// explicitly: every call that commits a blob or an upload's progress returns
// only after badger has synced it to disk.
func Open(dir string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	bo := badger.DefaultOptions(dir).
		WithLogger(slogAdapter{opts.Logger}).
		// Syncs are issued explicitly at commit points (see sync): one
		// fsync for a whole blob instead of one per chunk.
		WithSyncWrites(false).
		WithMemTableSize(opts.MemTableSize).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(0).
		WithNumCompactors(2).
		WithValueLogFileSize(opts.ValueLogFileSize).
		// Records and keys stay in the LSM; anything larger than this
		// (chunks) goes to the value log.
		WithValueThreshold(64 << 10).
		WithDetectConflicts(true).
		WithMetricsEnabled(false)
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("opening blob store %s: %w", dir, err)
	}
	s := &Store{
		db:       db,
		dir:      dir,
		opts:     opts,
		pins:     make(map[Digest]int),
		sessBusy: make(map[string]bool),
	}
	cs := opts.ChunkSize
	s.bufs.New = func() any { b := make([]byte, cs); return &b }
	return s, nil
}

// Close closes the store. Uploads in progress fail. A Collect in progress
// is told to stop and Close waits for it to return: badger closed under a
// collection's writes can leave a memtable file the next Open refuses.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.gcRun.Lock()
	defer s.gcRun.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("closing blob store: %w", err)
	}
	return nil
}

// ChunkSize returns the chunk size new blobs are cut into.
func (s *Store) ChunkSize() int { return s.opts.ChunkSize }

// MaxBlobSize returns the largest blob the store accepts.
func (s *Store) MaxBlobSize() int64 { return s.opts.MaxBlobSize }

func (s *Store) checkOpen() error {
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}

// sync makes everything committed so far durable.
func (s *Store) sync() error {
	if err := s.db.Sync(); err != nil {
		return fmt.Errorf("syncing blob store: %w", err)
	}
	return nil
}

func (s *Store) getBuf() *[]byte { return s.bufs.Get().(*[]byte) }
func (s *Store) putBuf(b *[]byte) {
	if len(*b) == s.opts.ChunkSize { // odd sizes (old blobs' chunks) are not pooled
		s.bufs.Put(b)
	}
}

// pin marks chunks as relied upon by an uncommitted writer.
func (s *Store) pin(ds ...Digest) {
	s.mu.Lock()
	for _, d := range ds {
		s.pins[d]++
		if s.gcSeen != nil {
			s.gcSeen[d] = struct{}{}
		}
	}
	s.mu.Unlock()
}

func (s *Store) unpin(ds ...Digest) {
	s.mu.Lock()
	for _, d := range ds {
		if s.pins[d] <= 1 {
			delete(s.pins, d)
		} else {
			s.pins[d]--
		}
	}
	s.mu.Unlock()
}

// Key layout (see docs/design/blob-store.md): one byte of kind, then the
// identifier. Chunk values are the chunk's bytes; blob and upload values are
// the records in record.go.
const (
	kindChunk  = 'c'
	kindBlob   = 'b'
	kindUpload = 'u'
)

func chunkKey(d Digest) []byte { return append([]byte{kindChunk}, d[:]...) }
func blobKey(d Digest) []byte  { return append([]byte{kindBlob}, d[:]...) }
func uploadKey(id string) []byte {
	return append([]byte{kindUpload}, id...)
}

// Info describes a stored blob.
type Info struct {
	Digest    Digest
	Size      int64
	ChunkSize int
	Chunks    int
	Created   time.Time // first commit
	Touched   time.Time // last Put, commit or Touch: the start of its grace period
}

// Stat returns what the store knows of blob d, or ErrNotFound.
func (s *Store) Stat(ctx context.Context, d Digest) (Info, error) {
	rec, err := s.blobRecord(ctx, d)
	if err != nil {
		return Info{}, err
	}
	return rec.info(d), nil
}

// Has reports whether blob d is stored. It does not protect the blob from
// collection; see Touch.
func (s *Store) Has(ctx context.Context, d Digest) (bool, error) {
	_, err := s.blobRecord(ctx, d)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Touch restarts blob d's grace period, or returns ErrNotFound. A caller
// about to reference a blob it did not just write (a new version reusing an
// old file) calls Touch first, so that a collection running meanwhile with a
// stale view of the references cannot remove it.
func (s *Store) Touch(ctx context.Context, d Digest) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	for {
		err := s.db.Update(func(txn *badger.Txn) error {
			rec, err := readBlobRecord(txn, d)
			if err != nil {
				return err
			}
			rec.touched = s.opts.Now()
			return txn.Set(blobKey(d), rec.encode(d))
		})
		if errors.Is(err, badger.ErrConflict) {
			if err := ctx.Err(); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("touching blob %s: %w", d, err)
		}
		return s.sync()
	}
}

func (s *Store) blobRecord(ctx context.Context, d Digest) (*blobRecord, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var rec *blobRecord
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		rec, err = readBlobRecord(txn, d)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reading blob %s: %w", d, err)
	}
	return rec, nil
}

func readBlobRecord(txn *badger.Txn, d Digest) (*blobRecord, error) {
	item, err := txn.Get(blobKey(d))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	var rec *blobRecord
	err = item.Value(func(v []byte) error {
		var err error
		rec, err = decodeBlobRecord(d, v)
		return err
	})
	return rec, err
}

// slogAdapter gives badger a logger. badger is chatty at Info (every
// compaction), so its Info goes to Debug.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Errorf(f string, args ...any) {
	a.l.Error(fmt.Sprintf(f, args...), "component", "badger")
}
func (a slogAdapter) Warningf(f string, args ...any) {
	a.l.Warn(fmt.Sprintf(f, args...), "component", "badger")
}
func (a slogAdapter) Infof(f string, args ...any) {
	a.l.Debug(fmt.Sprintf(f, args...), "component", "badger")
}
func (a slogAdapter) Debugf(f string, args ...any) {
	a.l.Debug(fmt.Sprintf(f, args...), "component", "badger")
}

// recordSum is the checksum that closes every record, so that a damaged
// record (and with it a damaged chunk list) is detected instead of serving
// the wrong chunks.
func recordSum(domain string, id []byte, body []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(domain))
	h.Write([]byte{0})
	h.Write(id)
	h.Write(body)
	return [32]byte(h.Sum(nil))
}
