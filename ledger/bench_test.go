package ledger

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// runWriters runs n operations spread over w goroutines and returns the
// elapsed time and every operation's latency.
func runWriters(b *testing.B, n, w int, op func() error) (time.Duration, []time.Duration) {
	b.Helper()
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range w {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				t := time.Now()
				if err := op(); err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(t)
			}
		})
	}
	wg.Wait()
	return time.Since(start), lat
}

func quantile(lat []time.Duration, q float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// rawPebbleRate measures n synced single-entry 1 KiB pebble batches
// committed by 64 goroutines: the physical yardstick for group commit.
func rawPebbleRate(b *testing.B, n int) float64 {
	b.Helper()
	db, err := openPebble(filepath.Join(b.TempDir(), "raw"), nil, 0, false)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	val := make([]byte, 1024)
	rand.Read(val)
	var k atomic.Uint64
	d, _ := runWriters(b, n, 64, func() error {
		bt := db.NewBatch()
		bt.Set(entryKey(k.Add(1)), val, nil)
		err := bt.Commit(pebble.Sync)
		bt.Close()
		return err
	})
	return float64(n) / d.Seconds()
}

// BenchmarkAppend measures durable 1 KiB appends with 1, 64 and 256
// concurrent writers: appends/s and acknowledgement latency. The 64-writer
// case also measures raw synced pebble commits from 64 goroutines in the
// same run and reports the ratio.
func BenchmarkAppend(b *testing.B) {
	for _, w := range []int{1, 64, 256} {
		b.Run("writers="+itoa(w), func(b *testing.B) {
			b.ReportAllocs()
			l, _ := openTest(b, Options{})
			entry := make([]byte, 1024)
			rand.Read(entry)
			n := max(b.N, w)
			var raw float64
			if w == 64 {
				raw = rawPebbleRate(b, max(n, 2000))
			}
			b.ResetTimer()
			d, lat := runWriters(b, n, w, func() error {
				_, err := l.AppendEntry(context.Background(), entry)
				return err
			})
			b.StopTimer()
			rate := float64(n) / d.Seconds()
			b.ReportMetric(rate, "appends/s")
			b.ReportMetric(float64(quantile(lat, 0.5).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(quantile(lat, 0.99).Microseconds())/1000, "p99-ms")
			if raw > 0 {
				b.ReportMetric(raw, "raw-pebble-commits/s")
				b.ReportMetric(100*rate/raw, "%-of-raw")
			}
		})
	}
}

// BenchmarkAppendPaced offers 5,000 appends/s (open loop: each append is
// due at a fixed time and its latency counts from then, so queueing shows)
// and reports the acknowledgement latency quantiles.
func BenchmarkAppendPaced5000(b *testing.B) {
	b.ReportAllocs()
	l, _ := openTest(b, Options{})
	entry := make([]byte, 1024)
	rand.Read(entry)
	const rate = 5000
	n := max(b.N, 2*rate) // at least 2 s of load
	lat := make([]time.Duration, n)
	due := make(chan time.Time, n)
	var wg sync.WaitGroup
	var idx atomic.Int64
	for range 256 {
		wg.Go(func() {
			for t := range due {
				if _, err := l.AppendEntry(context.Background(), entry); err != nil {
					b.Error(err)
					return
				}
				lat[idx.Add(1)-1] = time.Since(t)
			}
		})
	}
	b.ResetTimer()
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(i) * time.Second / rate)
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		due <- at
	}
	close(due)
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "achieved/s")
	b.ReportMetric(float64(quantile(lat, 0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(quantile(lat, 0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(quantile(lat, 0.999).Microseconds())/1000, "p999-ms")
}

func itoa(n int) string {
	s := ""
	for {
		s = string(rune('0'+n%10)) + s
		n /= 10
		if n == 0 {
			return s
		}
	}
}

// bigStore is a closed store of 1M 1 KiB entries, built once per process
// (in 4,096-entry appends, so ~245 checkpoints) for the proof and verify
// benchmarks.
var (
	bigOnce sync.Once
	bigDir  string
	bigErr  error
)

const bigSize = 1 << 20

func getBigStore(b *testing.B) string {
	b.Helper()
	bigOnce.Do(func() {
		base, err := os.MkdirTemp("", "ledger-bench")
		if err != nil {
			bigErr = err
			return
		}
		cleanups = append(cleanups, func() { os.RemoveAll(base) })
		bigDir = filepath.Join(base, "big")
		l, err := Open(bigDir, Options{})
		if err != nil {
			bigErr = err
			return
		}
		entry := make([]byte, 1024)
		rand.Read(entry)
		for l.Size() < bigSize {
			_, err := l.Append(context.Background(), func(tx *Tx) error {
				for range 4096 {
					i := tx.NextIndex()
					entry[0], entry[1], entry[2], entry[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24)
					if _, err := tx.Add(entry); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				bigErr = err
				break
			}
		}
		l.Close()
	})
	if bigErr != nil {
		b.Fatalf("building 1M store: %v", bigErr)
	}
	return bigDir
}

func BenchmarkVerifyStore1M(b *testing.B) {
	dir := getBigStore(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rep, err := VerifyStore(context.Background(), dir, VerifyOptions{})
		if err != nil || rep.Entries != bigSize {
			b.Fatalf("verify: %+v, %v", rep, err)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/verify")
	b.ReportMetric(float64(bigSize)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

func BenchmarkProofs1M(b *testing.B) {
	dir := getBigStore(b)
	l, err := Open(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	size := l.Size()
	root := l.head.Load().root
	idx := func(i int) uint64 { return uint64(i*7919) % size }
	b.Run("inclusion-generate", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := l.InclusionProof(idx(i), size); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("inclusion-verify", func(b *testing.B) {
		b.ReportAllocs()
		const k = 64
		var ps [k][]Hash
		var leaves [k]Hash
		for j := range k {
			ps[j], _ = l.InclusionProof(idx(j), size)
			leaves[j], _ = l.LeafHash(idx(j))
		}
		i := 0
		for b.Loop() {
			if err := VerifyInclusion(idx(i%k), size, leaves[i%k], ps[i%k], root); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/verify")
	})
	b.Run("consistency-generate", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := l.ConsistencyProof(idx(i)+1, size); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("consistency-verify", func(b *testing.B) {
		b.ReportAllocs()
		const k = 16
		var ps [k][]Hash
		var roots [k]Hash
		for j := range k {
			ps[j], _ = l.ConsistencyProof(idx(j)+1, size)
			roots[j], _ = l.RootAt(idx(j) + 1)
		}
		i := 0
		for b.Loop() {
			if err := VerifyConsistency(idx(i%k)+1, size, ps[i%k], roots[i%k], root); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/verify")
	})
}

func BenchmarkCheckpointVerify(b *testing.B) {
	l, _ := openTest(b, Options{})
	appendN(b, l, 10, 10)
	cp := l.Checkpoint()
	v := l.Verifier()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseCheckpoint(cp, l.Origin(), v); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/verify")
}
