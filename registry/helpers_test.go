package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/registry/blob"
	"github.com/hallmark-dev/hallmark/signing"
)

var (
	adminActor     = Actor{ID: "admin", Name: "Administrator", Roles: []Role{RoleAdmin}, Auth: AuthToken}
	publisherActor = Actor{ID: "ci", Name: "CI pipeline", Roles: []Role{RolePublisher}, Auth: AuthToken}
)

// testEnv is a registry over a real ledger and blob store in a temporary
// directory.
type testEnv struct {
	dir   string
	log   *ledger.Log
	blobs *blob.Store
	reg   *Registry
	opts  Options
}

// fakeClock advances by a millisecond on every reading, so times are
// deterministic and distinct.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func newEnv(t testing.TB, opts Options) *testEnv {
	t.Helper()
	dir := t.TempDir()
	if opts.Now == nil {
		opts.Now = newClock().Now
	}
	e := &testEnv{dir: dir, opts: opts}
	e.open(t)
	return e
}

// open (re)opens the stores and the registry; close releases them.
func (e *testEnv) open(t testing.TB) {
	t.Helper()
	l, err := ledger.Open(filepath.Join(e.dir, "ledger"), ledger.Options{})
	if err != nil {
		t.Fatalf("opening ledger: %v", err)
	}
	bs, err := blob.Open(filepath.Join(e.dir, "blobs"), blob.Options{ChunkSize: 64 << 10})
	if err != nil {
		l.Close()
		t.Fatalf("opening blob store: %v", err)
	}
	e.log, e.blobs = l, bs
	e.reg, err = Open(l, bs, e.opts)
	if err != nil {
		e.close()
		t.Fatalf("opening registry: %v", err)
	}
	t.Cleanup(e.close)
}

func (e *testEnv) close() {
	if e.log != nil {
		e.log.Close()
		e.log = nil
	}
	if e.blobs != nil {
		e.blobs.Close()
		e.blobs = nil
	}
}

// putFile stores data in the blob store and returns its manifest entry.
func (e *testEnv) putFile(t testing.TB, path string, data []byte) File {
	t.Helper()
	d := blob.Sum(data)
	if err := e.blobs.Put(context.Background(), d, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatalf("storing %s: %v", path, err)
	}
	return File{Path: path, Size: int64(len(data)), Digest: signing.Digest(d)}
}

// push creates a version of n small files whose content depends on seed.
func (e *testEnv) push(t testing.TB, model, label, seed string) Version {
	t.Helper()
	in := CreateVersionInput{Model: model, Label: label, Files: []File{
		e.putFile(t, "weights.bin", []byte("weights "+seed)),
		e.putFile(t, "config.json", []byte(`{"seed":"`+seed+`"}`)),
	}, Metadata: Metadata{Framework: "pytorch", Metrics: map[string]float64{"auc": 0.91}}}
	v, existed, err := e.reg.CreateVersion(context.Background(), publisherActor, in)
	if err != nil {
		t.Fatalf("pushing %s@%s: %v", model, label, err)
	}
	if existed {
		t.Fatalf("pushing %s@%s: existed, want new", model, label)
	}
	return v
}

// dump returns the whole committed state keyspace.
func dump(t testing.TB, l *ledger.Log) map[string]string {
	t.Helper()
	out := map[string]string{}
	if err := l.Scan(nil, func(k, v []byte) error { out[string(k)] = string(v); return nil }); err != nil {
		t.Fatalf("scanning state: %v", err)
	}
	return out
}

func diffDumps(a, b map[string]string) string {
	for k, v := range a {
		if w, ok := b[k]; !ok {
			return fmt.Sprintf("key %q only in the first", k)
		} else if w != v {
			return fmt.Sprintf("key %q: %q vs %q", k, v, w)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			return fmt.Sprintf("key %q only in the second", k)
		}
	}
	return ""
}

// checkRebuildEqual checks that the projection equals an in-memory replay
// and a stored rebuild, key for key.
func (e *testEnv) checkRebuildEqual(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	if err := e.reg.CheckProjection(ctx); err != nil {
		t.Fatalf("CheckProjection: %v", err)
	}
	if err := e.reg.CompareRebuild(ctx); err != nil {
		t.Fatalf("CompareRebuild: %v", err)
	}
	before := dump(t, e.log)
	if _, err := e.reg.Rebuild(ctx); err != nil {
		t.Fatalf("Rebuild: %v", err)
	}
	after := dump(t, e.log)
	if d := diffDumps(before, after); d != "" {
		t.Fatalf("projection differs from rebuild: %s", d)
	}
}

func wantErr(t testing.TB, err, kind error, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v containing %q", kind, substr)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("got error %q (%T), want errors.Is %v", err, err, kind)
	}
	if !bytes.Contains([]byte(err.Error()), []byte(substr)) {
		t.Fatalf("got error %q, want it to contain %q", err, substr)
	}
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
