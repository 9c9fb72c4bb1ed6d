package registry

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/registry/blob"
	"github.com/hallmark-dev/hallmark/signing"
)

const benchVersions = 100_000

var (
	benchOnce sync.Once
	benchEnv  *testEnv
	benchDir  string
	benchErr  error
	benchVers []string // digests by seq-1
)

func TestMain(m *testing.M) {
	code := m.Run()
	if benchEnv != nil {
		benchEnv.close()
	}
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}

// bigRegistry builds, once per process, a registry whose model "big" has
// 100,000 versions. The versions are appended a thousand to a batch through
// the registry's own commit path (model event, version events, apply), which
// is what a long series of pushes produces, without 100,000 fsyncs.
func bigRegistry(b *testing.B) *testEnv {
	b.Helper()
	benchOnce.Do(func() {
		benchDir, benchErr = os.MkdirTemp("", "hallmark-registry-bench-")
		if benchErr != nil {
			return
		}
		e := &testEnv{dir: benchDir, opts: Options{Now: newClock().Now}}
		var l *ledger.Log
		if l, benchErr = ledger.Open(filepath.Join(benchDir, "ledger"), ledger.Options{}); benchErr != nil {
			return
		}
		e.log = l
		if e.blobs, benchErr = blob.Open(filepath.Join(benchDir, "blobs"), blob.Options{}); benchErr != nil {
			return
		}
		if e.reg, benchErr = Open(e.log, e.blobs, e.opts); benchErr != nil {
			return
		}
		benchEnv = e
		ctx := context.Background()
		data := []byte("weights")
		d := blob.Sum(data)
		if benchErr = e.blobs.Put(ctx, d, int64(len(data)), bytesReader(data)); benchErr != nil {
			return
		}
		const batch = 1000
		for start := 0; start < benchVersions; start += batch {
			_, benchErr = e.log.Append(ctx, func(tx *ledger.Tx) error {
				var entries [][]byte
				h, err := e.reg.header(tx, TypeModelCreated, publisherActor)
				if err != nil {
					return err
				}
				if start == 0 {
					b, err := encodeEvent(&modelCreatedEvent{header: h, Model: "big"})
					if err != nil {
						return err
					}
					entries = append(entries, b)
				}
				for i := start; i < start+batch; i++ {
					files := []File{{Path: fmt.Sprintf("w-%06d.bin", i), Size: int64(len(data)), Digest: signing.Digest(d)}}
					man, err := signing.NewManifest(files)
					if err != nil {
						return err
					}
					h.Type = TypeVersionCreated
					b, err := encodeEvent(&versionCreatedEvent{header: h, Model: "big", Label: fmt.Sprintf("1.0.%d", i),
						Digest: digestText(man.Digest()), Files: files, FileCount: 1, TotalSize: int64(len(data))})
					if err != nil {
						return err
					}
					entries = append(entries, b)
					benchVers = append(benchVers, digestText(man.Digest()))
				}
				_, err = e.reg.commit(ctx, tx, entries...)
				return err
			})
			if benchErr != nil {
				return
			}
		}
	})
	if benchErr != nil {
		b.Fatalf("building the 100,000-version registry: %v", benchErr)
	}
	return benchEnv
}

func BenchmarkListVersions100k(b *testing.B) {
	e := bigRegistry(b)
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		token string
		limit int
	}{
		{"first-page-100", "", 100},
		{"middle-page-100", "v:50000", 100},
		{"last-page-100", "v:100", 100},
		{"page-1000", "", 1000},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				vs, _, err := e.reg.ListVersions(ctx, "big", c.token, c.limit)
				if err != nil || len(vs) != c.limit {
					b.Fatalf("ListVersions: %d versions, %v", len(vs), err)
				}
			}
		})
	}
}

func BenchmarkGetVersion100k(b *testing.B) {
	e := bigRegistry(b)
	ctx := context.Background()
	b.Run("by-label", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i = (i + 7919) % benchVersions
			if _, err := e.reg.GetVersion(ctx, "big", fmt.Sprintf("1.0.%d", i)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("by-digest", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i = (i + 7919) % benchVersions
			if _, err := e.reg.GetVersion(ctx, "big", benchVers[i]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCreateVersion measures a durable push of a one-file version
// (blob check, touch, append with fsync, apply).
func BenchmarkCreateVersion(b *testing.B) {
	e := newEnv(b, Options{})
	ctx := context.Background()
	f := e.putFile(b, "w", []byte("weights"))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		f.Path = fmt.Sprintf("w-%d", i)
		if _, _, err := e.reg.CreateVersion(ctx, publisherActor, CreateVersionInput{Model: "m", Label: fmt.Sprint("1.", i), Files: []File{f}}); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
