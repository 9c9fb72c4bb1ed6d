package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/policy"
	"github.com/hallmark-dev/hallmark/registry"
	"github.com/hallmark-dev/hallmark/registry/blob"
)

// Data directory layout, shared with `hallmark ledger rebuild`.
const (
	LedgerSubdir   = "ledger"      // pebble: ledger + projection
	BlobsSubdir    = "blobs"       // badger: artifact bytes
	TrustSubdir    = "trust"       // keys/*.pub and roots/*.pem for signature checks at push
	AdminTokenFile = "admin.token" // written once, mode 0600, on first start
)

// OpenOptions configure Open. The zero value of every field means its
// default.
type OpenOptions struct {
	// Origin is the checkpoint origin of a new ledger (ledger.Options).
	Origin string
	// Logger receives the startup log and, with component attributes,
	// pebble's and badger's messages. The default discards them.
	Logger *slog.Logger
	// BlobOptions are passed to blob.Open (Logger is filled in).
	BlobOptions blob.Options
	// Now is the registry's clock (tests). The default is time.Now.
	Now func() time.Time
	// PolicyEvaluator is registry.Options.PolicyEvaluator.
	PolicyEvaluator policy.Evaluator
}

// Stores are the opened parts of a data directory.
type Stores struct {
	Dir      string
	Ledger   *ledger.Log
	Blobs    *blob.Store
	Registry *registry.Registry
	// Trusted lists the trust-store files loaded.
	Trusted []string
	// AdminToken is the admin principal's token when this Open created it
	// (the first start of an empty data directory), "" otherwise. It is
	// also in AdminTokenPath; nothing else holds it.
	AdminToken string
	// AdminTokenPath is DIR/admin.token, where the first start wrote the
	// token. The server never reads it; the operator may have removed it.
	AdminTokenPath string

	// gcMu guards gcStops and gcClosing; gcRunning counts the collectors
	// StartCollector started, which Close stops and waits for.
	gcMu      sync.Mutex
	gcStops   []context.CancelFunc
	gcClosing bool
	gcRunning sync.WaitGroup
}

// crashHook, when set (tests), is called at the named steps of the admin
// bootstrap; an error it returns aborts Open there, as if the process had
// died at that point.
var crashHook func(step string) error

func crashAt(step string) error {
	if crashHook == nil {
		return nil
	}
	return crashHook(step)
}

// Open opens (creating if needed) everything in data directory dir: the
// ledger and projection, the blob store and the trust store, catches the
// projection up and checks it against the ledger head, and on an empty
// registry creates the admin principal (Stores.AdminToken).
//
// The admin token is written to dir/admin.token (mode 0600, synced, renamed
// into place) BEFORE the principal's ledger entry commits, so a crash at
// any point loses no usable token: either the ledger has no admin yet and
// the next Open starts over with a new token, or the file holds the token
// the ledger records.
//
// A data directory held by another process (a running server) fails with
// an error matching ledger.ErrInUse.
func Open(ctx context.Context, dir string, opts OpenOptions) (_ *Stores, err error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	warnDataDirAccess(log, dir)
	st := &Stores{Dir: dir}
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	ldir := filepath.Join(dir, LedgerSubdir)
	// The ledger's and the blob store's adapters tag their engines' lines
	// with component=pebble and component=badger themselves.
	st.Ledger, err = ledger.Open(ldir, ledger.Options{Origin: opts.Origin, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("opening ledger at %s: %w", ldir, err)
	}
	bopts := opts.BlobOptions
	if bopts.Logger == nil {
		bopts.Logger = log
	}
	bdir := filepath.Join(dir, BlobsSubdir)
	st.Blobs, err = blob.Open(bdir, bopts)
	if err != nil {
		return nil, fmt.Errorf("opening blob store at %s: %w", bdir, err)
	}
	tdir := filepath.Join(dir, TrustSubdir)
	trust, loaded, err := registry.LoadTrustStore(tdir)
	if err != nil {
		return nil, fmt.Errorf("loading trust store %s: %w", tdir, err)
	}
	st.Trusted = loaded
	log.Info("trust store", "dir", tdir, "public_keys", len(trust.PublicKeys), "roots", len(trust.Roots), "files", loaded)
	st.Registry, err = registry.Open(st.Ledger, st.Blobs, registry.Options{Trust: trust, Now: opts.Now, Logger: log, PolicyEvaluator: opts.PolicyEvaluator})
	if err != nil {
		return nil, fmt.Errorf("opening registry: %w", err)
	}
	st.AdminTokenPath = filepath.Join(dir, AdminTokenFile)
	tok, created, err := st.Registry.BootstrapWith(ctx, func(tok string) error {
		if err := writeSecret(st.AdminTokenPath, tok+"\n"); err != nil {
			return fmt.Errorf("writing %s: %w", st.AdminTokenPath, err)
		}
		return crashAt("token written")
	})
	if err != nil {
		return nil, err
	}
	if created {
		if err := crashAt("committed"); err != nil {
			return nil, err
		}
		st.AdminToken = tok
		log.Info("created the admin principal", "token_file", st.AdminTokenPath)
	}
	return st, nil
}

// writeSecret writes s to path with mode 0600 through a synced temporary
// file, so the file is complete or absent.
func writeSecret(path, s string) error {
	tmp := path + ".tmp"
	// A leftover temporary file (a crash, or planted) would keep its own
	// mode, or be a symlink elsewhere: remove it and create afresh.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(f, s); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Config returns the server Config over the stores.
func (st *Stores) Config(log *slog.Logger, lim Limits) Config {
	return Config{Registry: st.Registry, Ledger: st.Ledger, Blobs: st.Blobs, Logger: log, Limits: lim}
}

// StartCollector starts, in the background, the blob store's collector:
// every interval until ctx is done or Close is called, it removes blobs no
// version references once grace has passed since they were last written or
// touched. grace must exceed the longest push (upload to CreateVersion).
// After Close it starts nothing.
func (st *Stores) StartCollector(ctx context.Context, interval, grace time.Duration, log *slog.Logger) {
	st.gcMu.Lock()
	defer st.gcMu.Unlock()
	if st.gcClosing {
		return
	}
	ctx, stop := context.WithCancel(ctx)
	st.gcStops = append(st.gcStops, stop)
	st.gcRunning.Add(1)
	go func() {
		defer st.gcRunning.Done()
		st.collectBlobs(ctx, interval, grace, log)
	}()
}

// collectBlobs is the loop of StartCollector.
func (st *Stores) collectBlobs(ctx context.Context, interval, grace time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		stats, err := st.Blobs.Collect(ctx, st.Registry.IsBlobReferenced, grace)
		switch {
		case errors.Is(err, blob.ErrBusy), errors.Is(err, context.Canceled), errors.Is(err, blob.ErrClosed):
		case err != nil:
			log.Error("blob collection failed", "err", err)
		default:
			log.Info("blob collection", "blobs_deleted", stats.BlobsDeleted, "chunks_deleted", stats.ChunksDeleted,
				"uploads_expired", stats.UploadsExpired, "blobs_kept", stats.BlobsKept)
		}
	}
}

// Close stops the collectors StartCollector started and waits for them
// (a collection in progress stops at its next check), then closes the
// stores; the registry holds no resources of its own. Requests using the
// stores must have finished: stop the HTTP server first (Run returns once
// its handlers have).
func (st *Stores) Close() error {
	st.gcMu.Lock()
	st.gcClosing = true
	for _, stop := range st.gcStops {
		stop()
	}
	st.gcStops = nil
	st.gcMu.Unlock()
	st.gcRunning.Wait()

	var errs []error
	if st.Blobs != nil {
		if err := st.Blobs.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing blob store: %w", err))
		}
		st.Blobs = nil
	}
	if st.Ledger != nil {
		if err := st.Ledger.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing ledger: %w", err))
		}
		st.Ledger = nil
	}
	return errors.Join(errs...)
}
