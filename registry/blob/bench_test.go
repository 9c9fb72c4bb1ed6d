package blob

import (
	"bytes"
	"context"
	"io"
	"testing"
)

// BenchmarkPut stores a 64 MiB blob in 4 MiB chunks, synced (a fresh blob
// each iteration: the first bytes differ, so no chunk is shared).
func BenchmarkPut(b *testing.B) {
	s := openTest(b, "", Options{ChunkSize: DefaultChunkSize})
	data := randBytes(1, 64<<20)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		for c := 0; c < len(data); c += DefaultChunkSize {
			data[c] = byte(i)
			data[c+1] = byte(i >> 8)
		}
		if err := s.Put(context.Background(), Sum(data), int64(len(data)), bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadVerified reads a 64 MiB blob through the pipelined WriteTo,
// checking chunk digests only (what the HTTP handler does by default) and
// also the whole digest; sha256 is the reference, one SHA-256 pass over the
// same bytes in memory.
func BenchmarkReadVerified(b *testing.B) {
	s := openTest(b, "", Options{ChunkSize: DefaultChunkSize})
	data := randBytes(2, 64<<20)
	d := mustPut(b, s, data)
	for _, bc := range []struct {
		name  string
		whole bool
	}{{"chunks", false}, {"chunks+whole", true}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				r, err := s.Open(context.Background(), d)
				if err != nil {
					b.Fatal(err)
				}
				if !bc.whole {
					r.SkipWholeDigest()
				}
				if _, err := io.Copy(io.Discard, r); err != nil {
					b.Fatal(err)
				}
				r.Close()
			}
		})
	}
	b.Run("sha256", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			Sum(data)
		}
	})
}
