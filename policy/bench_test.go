package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"slices"
	"testing"
	"time"
)

// BenchmarkDecide measures one decision of the default pack on a realistic
// production input (three segments of shadow evidence, two approvals),
// input parsing and validation included, and reports the median and 99th
// percentile of individually timed evaluations.
func BenchmarkDecide(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"validated", Options{Timeout: testTimeout}},
		{"prevalidated", Options{SkipInputValidation: true, Timeout: testTimeout}},
		{"prevalidated/topdown", Options{SkipInputValidation: true, Timeout: testTimeout, Evaluator: EvaluatorTopDown}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			p, err := Prepare(context.Background(), DefaultSet(), tc.opts)
			if err != nil {
				b.Fatal(err)
			}
			in := marshal(b, readInput(b, "production"))
			ctx := context.Background()
			times := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				d, err := p.Decide(ctx, in)
				times = append(times, time.Since(start))
				if err != nil || !d.Allow {
					b.Fatalf("Decide: %v %+v", err, d)
				}
			}
			reportQuantiles(b, times)
		})
	}
}

func reportQuantiles(b *testing.B, times []time.Duration) {
	if len(times) == 0 {
		return
	}
	slices.Sort(times)
	q := func(f float64) float64 { return float64(times[int(f*float64(len(times)-1))].Nanoseconds()) / 1e3 }
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
}

// BenchmarkReplay measures replay throughput of the default pack over a
// batch of 2,000 recorded production decisions, on GOMAXPROCS workers: with
// the default GOGC, and with GOGC=400 as `hallmark policy replay` runs it
// (cmd/hallmark tuneBatchGC); and top-down as the reference.
func BenchmarkReplay(b *testing.B) {
	ctx := context.Background()
	p, err := Prepare(ctx, DefaultSet(), Options{SkipInputValidation: true, Timeout: testTimeout})
	if err != nil {
		b.Fatal(err)
	}
	top, err := Prepare(ctx, DefaultSet(), Options{SkipInputValidation: true, Timeout: testTimeout, Evaluator: EvaluatorTopDown})
	if err != nil {
		b.Fatal(err)
	}
	records := make([]Recorded, 2000)
	for i := range records {
		m := readInput(b, "production")
		set(b, m, "evidence/segments/eu/n", 150+i%200)
		in, _ := json.Marshal(m)
		records[i] = Recorded{ID: string(rune('a' + i%26)), Input: in, Result: Decision{Allow: true}}
	}
	for _, tc := range []struct {
		gogc int // 0: leave GOGC as the environment set it
		p    *Policy
	}{{0, p}, {400, p}, {400, top}} {
		gogc := tc.gogc
		name := "gogc=default"
		if gogc > 0 {
			name = fmt.Sprintf("gogc=%d", gogc)
		}
		name += "/" + string(tc.p.Evaluator())
		b.Run(name, func(b *testing.B) {
			if gogc > 0 {
				defer debug.SetGCPercent(debug.SetGCPercent(gogc))
			}
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				if _, err := Replay(ctx, tc.p, records); err != nil {
					b.Fatal(err)
				}
				n += len(records)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "decisions/s")
		})
	}
}

// BenchmarkDecideInput measures the evaluation alone, on an input parsed
// once (as the registry does when it evaluates the active set and a dry-run
// draft on the same input): a production promotion the default pack allows,
// and the same request still waiting for its second approval (most of a
// request's evaluations are of that kind: one when it is made and one per
// approval). Each runs through the plan (what hallmark uses) and, as the
// reference in the same run, through OPA's top-down evaluator.
func BenchmarkDecideInput(b *testing.B) {
	for _, tc := range []struct {
		name      string
		approvals int
		allow     bool
		evaluator Evaluator
	}{
		{"allowed/plan", 2, true, EvaluatorPlan},
		{"allowed/topdown", 2, true, EvaluatorTopDown},
		{"waiting/plan", 1, false, EvaluatorPlan},
		{"waiting/topdown", 1, false, EvaluatorTopDown},
	} {
		b.Run(tc.name, func(b *testing.B) {
			p, err := Prepare(context.Background(), DefaultSet(), Options{Timeout: testTimeout, Evaluator: tc.evaluator})
			if err != nil {
				b.Fatal(err)
			}
			m := readInput(b, "production")
			m["approvals"] = m["approvals"].([]any)[:tc.approvals]
			in, err := ParseInput(marshal(b, m))
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			times := make([]time.Duration, 0, 1<<16)
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				d, err := p.DecideInput(ctx, in)
				times = append(times, time.Since(start))
				if err != nil || d.Allow != tc.allow {
					b.Fatalf("DecideInput: %v %+v", err, d)
				}
			}
			reportQuantiles(b, times)
		})
	}
}

// BenchmarkParseInput measures input parsing and schema validation alone.
func BenchmarkParseInput(b *testing.B) {
	in := marshal(b, readInput(b, "production"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseInput(in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseRecorded measures parsing a recorded input without schema
// validation, as Replay does for every record.
func BenchmarkParseRecorded(b *testing.B) {
	in := marshal(b, readInput(b, "production"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseUnvalidated(in); err != nil {
			b.Fatal(err)
		}
	}
}
