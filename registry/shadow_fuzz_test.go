package registry

import (
	"bytes"
	"context"
	"testing"
)

// FuzzApplyShadow feeds arbitrary entries to the projection after a real
// shadow deployment with accepted evidence: shadow entries are as untrusted
// as any (`hallmark ledger append` writes whatever it is given). apply must
// not panic, must be deterministic, and a rejection must write nothing but
// its counters and record.
func FuzzApplyShadow(f *testing.F) {
	ctx := context.Background()
	fx := newShadowFixture(f)
	if _, err := fx.e.reg.ReportShadowEvidence(ctx, fx.agentAct, fx.dep.ID, fx.batch(f, fx.dep.ID, fx.key, 1, []string{"a", "b"}, 3, 1)); err != nil {
		f.Fatal(err)
	}
	prefixSize := fx.e.log.Size()
	// Entries beyond the prefix become seeds: a second batch and a stop.
	if _, err := fx.e.reg.ReportShadowEvidence(ctx, fx.agentAct, fx.dep.ID, fx.batch(f, fx.dep.ID, fx.key, 2, []string{"a"}, 2, 0)); err != nil {
		f.Fatal(err)
	}
	if _, err := fx.e.reg.StopShadow(ctx, publisherActor, fx.dep.ID, "fuzz"); err != nil {
		f.Fatal(err)
	}
	p := &projector{blobs: fx.e.blobs}
	base := memState{}
	for i := uint64(0); i < fx.e.log.Size(); i++ {
		e, err := fx.e.log.Entry(i)
		if err != nil {
			f.Fatal(err)
		}
		if i < prefixSize {
			if _, _, err := p.apply(ctx, base, i, e, false); err != nil {
				f.Fatalf("seeding state with entry %d: %v", i, err)
			}
			if bytes.Contains(e, []byte(`"hallmark.shadow.`)) {
				f.Add(e) // replays of accepted entries must be rejected
			}
			continue
		}
		f.Add(e)
		f.Add(bytes.Replace(e, []byte(`"sequence":2`), []byte(`"sequence":3`), 1))
		f.Add(bytes.Replace(e, []byte(`"signed":"`), []byte(`"signed":"AAAA`), 1))
	}
	n := prefixSize
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
		if outA == outcomeRejected {
			changed := 0
			for k, v := range a {
				if w, ok := base[k]; !ok || !bytes.Equal(v, w) {
					changed++
				}
			}
			if changed > 4 {
				t.Fatalf("rejected entry changed %d keys", changed)
			}
		}
	})
}
