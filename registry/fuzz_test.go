package registry

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// FuzzApply feeds arbitrary entries (untrusted: `hallmark ledger append`
// writes whatever it is given) to the projection after a realistic prefix.
// apply must never panic, must either apply, skip or reject the entry or
// fail with an error that leaves a copy of the state untouched, and must be
// deterministic.
func FuzzApply(f *testing.F) {
	golden, err := os.ReadFile(filepath.Join("testdata", "events.golden"))
	if err != nil {
		f.Fatal(err)
	}
	prefix := lines(golden)
	for _, l := range prefix {
		f.Add([]byte(l))
	}
	for _, s := range []string{
		"", "null", "{}", `{"type":"hallmark.model.created"}`, `{"type":"hallmark.model.created","v":1}`,
		`{"type":"hallmark.alias.moved","v":1,"time":"2026-03-01T12:00:00Z","actor":{"id":"a","name":"a","auth":"token"},"model":"credit-risk","alias":"production","version":"sha256:6a64383ab84ca3bd6c13235b3b275ab9620321bdd7eddfdbdbc82a708d7b5681","label":"1.1.0","previous":"sha256:2b48c82dde2a46366b4d270607dc0f95aa90d3b7a9cd1c170391c4cae78fa58b"}`,
		`{"type":"hallmark.version.created","v":1,"time":"x","actor":{"id":"a"}}`,
	} {
		f.Add([]byte(s))
	}
	ctx := context.Background()
	p := &projector{}
	base := memState{}
	for i, l := range prefix {
		if _, _, err := p.apply(ctx, base, uint64(i), []byte(l), false); err != nil {
			f.Fatalf("seeding state with golden entry %d: %v", i, err)
		}
	}
	n := uint64(len(prefix))
	f.Fuzz(func(t *testing.T, entry []byte) {
		a, b := clone(base), clone(base)
		outA, reasonA, errA := p.apply(ctx, a, n, entry, false)
		outB, reasonB, errB := p.apply(ctx, b, n, entry, false)
		if outA != outB || reasonA != reasonB || (errA == nil) != (errB == nil) {
			t.Fatalf("apply is not deterministic: %v %q %v vs %v %q %v", outA, reasonA, errA, outB, reasonB, errB)
		}
		if errA != nil {
			return
		}
		if d := diffState(a, b); d != nil {
			t.Fatalf("apply is not deterministic: %v", d)
		}
		applied, _ := getU64(a, keyApplied)
		if applied != n+1 {
			t.Fatalf("applied: got %d, want %d", applied, n+1)
		}
		if outA == outcomeRejected {
			// A rejection writes only its counters and record.
			changed := 0
			for k, v := range a {
				if w, ok := base[k]; !ok || !bytes.Equal(v, w) {
					changed++
				}
			}
			if changed > 4 { // applied, head, rejected count, rejection record
				t.Fatalf("rejected entry changed %d keys", changed)
			}
		}
	})
}

func clone(m memState) memState {
	out := make(memState, len(m))
	for k, v := range m {
		out[k] = bytes.Clone(v)
	}
	return out
}
