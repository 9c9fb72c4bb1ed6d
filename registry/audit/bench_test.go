package audit

import (
	"io"
	"testing"
)

// The scale target: about 100,000 ledger entries (20,000 versions, each with
// a signature, an approval, a decision and an alias move).
const benchVersions = 20000

func BenchmarkRenderHTML100k(b *testing.B) {
	r := bigReport(b, benchVersions)
	b.ReportAllocs()
	for b.Loop() {
		if err := RenderHTML(io.Discard, r, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRenderCSV100k(b *testing.B) {
	r := bigReport(b, benchVersions)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := RenderCSV(r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRenderPDF100k(b *testing.B) {
	r := bigReport(b, benchVersions)
	b.ReportAllocs()
	for b.Loop() {
		if err := RenderPDF(io.Discard, r, nil); err != nil {
			b.Fatal(err)
		}
	}
}
