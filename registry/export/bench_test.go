package export

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/hallmark-dev/hallmark/ledger"
)

// benchEntries appends n version entries of one model to f's ledger in
// large batches (the registry's projection is not updated: the exporter
// reads the ledger, and the verifier only the bundle).
func benchEntries(b *testing.B, f *fixture, n int) {
	b.Helper()
	ctx := context.Background()
	base := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	const batch = 2000
	for done := 0; done < n; {
		_, err := f.log.Append(ctx, func(tx *ledger.Tx) error {
			for j := 0; j < batch && done+j < n; j++ {
				i := done + j
				d := sha256.Sum256([]byte(strconv.Itoa(i)))
				w := sha256.Sum256([]byte("w" + strconv.Itoa(i)))
				e := fmt.Sprintf(`{"type":"hallmark.version.created","v":1,"time":"%s","actor":{"id":"ci","name":"CI pipeline","auth":"token"},`+
					`"model":"bench","label":"1.0.%d","digest":"sha256:%x","files":[{"path":"config.json","size":2,"sha256":"%x"},{"path":"weights.bin","size":1048576,"sha256":"%x"}],`+
					`"file_count":2,"total_size":1048578,"metadata":{"framework":"onnx","metrics":{"auc":0.9%d}}}`,
					base.Add(time.Duration(i)*time.Millisecond).Format("2006-01-02T15:04:05.000000000Z07:00"), i, d, d, w, i%10)
				if _, err := tx.Add([]byte(e)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		done += batch
	}
}

// BenchmarkExportVerify100k exports and verifies 100,000 entries (plus the
// fixture's promotions, decisions and signatures): Build, zip, unzip and
// Verify, which is what an auditor's round trip costs minus the network.
// The target (DESIGN.md §4) is 10 s on 2 cores.
func BenchmarkExportVerify100k(b *testing.B) {
	n := 100_000
	if s := os.Getenv("HALLMARK_BENCH_AUDIT_ENTRIES"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	f := newFixture(b)
	benchEntries(b, f, n)
	ctx := context.Background()
	key := f.log.VerifierKey()
	b.ReportAllocs()
	b.ResetTimer()
	var build, zipT, verifyT time.Duration
	var size int
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		res, err := Build(ctx, Source{Log: f.log, Registry: f.reg}, Options{GeneratedAt: genAt, GeneratedBy: auditor})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		var buf bytes.Buffer
		if err := res.Bundle.WriteZip(&buf); err != nil {
			b.Fatal(err)
		}
		bundle, err := ReadZip(buf.Bytes())
		if err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		rep, err := Verify(ctx, bundle, VerifyOptions{LogKey: key})
		if err != nil {
			b.Fatal(err)
		}
		if !rep.OK() {
			b.Fatalf("does not verify: %v", rep.Problems[0])
		}
		t3 := time.Now()
		build, zipT, verifyT = build+t1.Sub(t0), zipT+t2.Sub(t1), verifyT+t3.Sub(t2)
		size = buf.Len()
	}
	b.ReportMetric(build.Seconds()/float64(b.N), "build-s/op")
	b.ReportMetric(zipT.Seconds()/float64(b.N), "zip+unzip-s/op")
	b.ReportMetric(verifyT.Seconds()/float64(b.N), "verify-s/op")
	b.ReportMetric(float64(size)/(1<<20), "zip-MiB")
}
