package signing

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// benchModel writes n files of size bytes each (random, so nothing
// compresses or dedupes) into a temporary directory.
func benchModel(b *testing.B, n int, size int64) string {
	b.Helper()
	dir := b.TempDir()
	buf := make([]byte, 1<<20)
	for i := range n {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("shard-%d.bin", i)))
		if err != nil {
			b.Fatal(err)
		}
		for w := int64(0); w < size; w += int64(len(buf)) {
			rand.Read(buf)
			if _, err := f.Write(buf[:min(int64(len(buf)), size-w)]); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
	return dir
}

// BenchmarkSHA256Memory is the in-memory SHA-256 limit, for reference.
func BenchmarkSHA256Memory(b *testing.B) {
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		sha256.Sum256(buf)
	}
}

func benchmarkManifest(b *testing.B, files int, size int64, workers int) {
	dir := benchModel(b, files, size)
	ctx := context.Background()
	b.SetBytes(int64(files) * size)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ManifestFromPath(ctx, dir, WalkOptions{Workers: workers}); err != nil {
			b.Fatal(err)
		}
	}
}

// Files are in the page cache after the first iteration: these measure
// hashing and I/O overhead, not the disk.
func BenchmarkManifest1x64MiB(b *testing.B)          { benchmarkManifest(b, 1, 64<<20, 0) }
func BenchmarkManifest4x16MiB(b *testing.B)          { benchmarkManifest(b, 4, 16<<20, 0) }
func BenchmarkManifest4x16MiBOneWorker(b *testing.B) { benchmarkManifest(b, 4, 16<<20, 1) }

func BenchmarkSignVerifyManifest(b *testing.B) {
	priv, err := GenerateKey(KeyECDSAP256)
	if err != nil {
		b.Fatal(err)
	}
	s, err := NewKeySigner(priv)
	if err != nil {
		b.Fatal(err)
	}
	var files []File
	for i := range 1000 {
		files = append(files, File{Path: fmt.Sprintf("layer-%04d.safetensors", i), Size: int64(i), Digest: Digest{byte(i)}})
	}
	m, err := NewManifest(files)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	ts := TrustStore{PublicKeys: []crypto.PublicKey{priv.Public()}}
	b.ReportAllocs()
	for b.Loop() {
		bundle, err := Sign(ctx, m, "model", s, SignOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := VerifyManifest(ctx, bundle, m, ts); err != nil {
			b.Fatal(err)
		}
	}
}
