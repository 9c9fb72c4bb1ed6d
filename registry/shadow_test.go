package registry

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/hallmark-dev/hallmark/policy"
	"github.com/hallmark-dev/hallmark/shadow"
)

// checkEvidenceSchema validates raw against the policy input schema's
// evidence definition: the contract with policy authors.
func checkEvidenceSchema(t testing.TB, raw []byte) {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytesReader(policy.InputSchema()))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("input.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("input.schema.json#/definitions/evidence")
	if err != nil {
		t.Fatalf("compiling the evidence schema: %v", err)
	}
	v, err := jsonschema.UnmarshalJSON(bytesReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(v); err != nil {
		t.Fatalf("evidence does not match the policy input schema: %v\n%s", err, raw)
	}
}

// shadowFixture is a model with versions 1.0.0 (production) and 2.0.0, and a
// shadow deployment of 2.0.0 against production.
type shadowFixture struct {
	e        *testEnv
	base     Version
	cand     Version
	dep      ShadowDeployment
	token    string
	key      ed25519.PrivateKey
	cmp      *shadow.Comparator
	agentAct Actor
}

func testKey(t testing.TB, seed byte) ed25519.PrivateKey {
	t.Helper()
	s := make([]byte, ed25519.SeedSize)
	for i := range s {
		s[i] = seed
	}
	return ed25519.NewKeyFromSeed(s)
}

func newShadowFixture(t testing.TB) *shadowFixture {
	t.Helper()
	ctx := context.Background()
	e := newEnv(t, Options{})
	f := &shadowFixture{e: e}
	f.base = e.push(t, "credit", "1.0.0", "a")
	f.cand = e.push(t, "credit", "2.0.0", "b")
	if _, err := e.reg.SetAlias(ctx, adminActor, SetAliasInput{Model: "credit", Alias: "production", Version: "1.0.0", ExpectUnset: true}); err != nil {
		t.Fatalf("SetAlias: %v", err)
	}
	f.key = testKey(t, 1)
	cfg := shadow.ComparatorConfig{Kind: shadow.KindLabel, Pointer: "/label", Labels: []string{"benign", "malignant"}}
	var err error
	if f.cmp, err = shadow.NewComparator(cfg); err != nil {
		t.Fatal(err)
	}
	f.dep, f.token, err = e.reg.StartShadow(ctx, publisherActor, ShadowStartInput{Model: "credit", Candidate: "2.0.0", Alias: "production",
		Comparator: cfg, SegmentHeader: "X-Segment", MinSample: 10, AgentKey: f.key.Public().(ed25519.PublicKey)})
	if err != nil {
		t.Fatalf("StartShadow: %v", err)
	}
	f.agentAct, err = e.reg.Authenticate(ctx, f.token)
	if err != nil {
		t.Fatalf("authenticating the agent token: %v", err)
	}
	return f
}

// batch signs a batch of n agreeing and k disagreeing observations per
// segment.
func (f *shadowFixture) batch(t testing.TB, dep string, key ed25519.PrivateKey, seq uint64, segments []string, n, k int) []byte {
	t.Helper()
	agg := shadow.NewAggregator(f.cmp)
	for _, s := range segments {
		for i := 0; i < n+k; i++ {
			o := shadow.Observation{Segment: s, Outcome: shadow.OutcomeCompared, PrimaryLatency: time.Millisecond, ShadowLatency: 2 * time.Millisecond,
				Primary: shadow.Value{Label: "benign"}, Shadow: shadow.Value{Label: "benign"}}
			if i >= n {
				o.Shadow.Label = "malignant"
			}
			if err := agg.Record(o); err != nil {
				t.Fatal(err)
			}
		}
	}
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	sb, err := shadow.SignBatch(&shadow.Batch{DeploymentID: dep, AgentID: dep, Sequence: seq, Start: start, End: start.Add(time.Second), Evidence: agg.Take()}, key)
	if err != nil {
		t.Fatal(err)
	}
	return sb.Marshal()
}

func TestShadowLifecycle(t *testing.T) {
	ctx := context.Background()
	f := newShadowFixture(t)
	r := f.e.reg
	if f.dep.Agent != f.dep.ID || !strings.HasPrefix(f.dep.ID, "shd_") || f.dep.Baseline != f.base.Digest || f.dep.Candidate != f.cand.Digest {
		t.Fatalf("deployment: got %+v", f.dep)
	}
	if !f.agentAct.Has(RoleShadowAgent) || len(f.agentAct.Roles) != 1 {
		t.Fatalf("agent roles: got %v, want [shadow-agent]", f.agentAct.Roles)
	}
	b1 := f.batch(t, f.dep.ID, f.key, 10, []string{"north", "south"}, 8, 2)
	rep, err := r.ReportShadowEvidence(ctx, f.agentAct, f.dep.ID, b1)
	if err != nil {
		t.Fatalf("report 1: %v", err)
	}
	if rep.Duplicate || rep.Sequence != 10 {
		t.Fatalf("report 1: got %+v", rep)
	}
	size := f.e.log.Size()
	again, err := r.ReportShadowEvidence(ctx, f.agentAct, f.dep.ID, b1)
	if err != nil || !again.Duplicate || again.LedgerIndex != rep.LedgerIndex || again.Batch != rep.Batch {
		t.Fatalf("resend: got %+v, %v; want a duplicate of %+v", again, err, rep)
	}
	if f.e.log.Size() != size {
		t.Fatalf("resend grew the ledger from %d to %d", size, f.e.log.Size())
	}
	b2 := f.batch(t, f.dep.ID, f.key, 11, []string{"north"}, 5, 0)
	if _, err := r.ReportShadowEvidence(ctx, adminActor, f.dep.ID, b2); err != nil {
		t.Fatalf("report 2 relayed by admin: %v", err)
	}
	_, sum, err := r.GetShadow(ctx, f.dep.ID)
	if err != nil {
		t.Fatal(err)
	}
	north, south := sum.Segments["north"], sum.Segments["south"]
	if north.N != 15 || north.Disagreements != 2 || south.N != 10 || south.Disagreements != 2 || sum.Overall.N != 25 {
		t.Fatalf("summary: north %+v, south %+v, overall n %d", north, south, sum.Overall.N)
	}
	if !north.Sufficient || sum.MinSample != 10 || sum.Status != "running" {
		t.Fatalf("summary: sufficient %v, min_sample %d, status %q", north.Sufficient, sum.MinSample, sum.Status)
	}

	// The policy input's evidence is this deployment's summary.
	raw, err := shadowEvidenceFor(f.e.log, "credit", "production", f.cand.Digest)
	if err != nil || raw == nil {
		t.Fatalf("shadowEvidenceFor: %s, %v", raw, err)
	}
	var got shadow.Summary
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.DeploymentID != f.dep.ID || got.Overall.N != 25 || got.Baseline != f.base.Digest {
		t.Fatalf("evidence: got %+v", got)
	}
	checkEvidenceSchema(t, raw)
	if raw, _ := shadowEvidenceFor(f.e.log, "credit", "staging", f.cand.Digest); raw != nil {
		t.Fatalf("evidence for another alias: got %s, want none", raw)
	}

	d, err := r.StopShadow(ctx, publisherActor, f.dep.ID, "enough evidence")
	if err != nil || !d.Stopped || d.StopReason != "enough evidence" {
		t.Fatalf("StopShadow: %+v, %v", d, err)
	}
	if _, err := r.Authenticate(ctx, f.token); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("agent token after stop: got %v, want unauthenticated", err)
	}
	b3 := f.batch(t, f.dep.ID, f.key, 12, []string{"north"}, 1, 0)
	_, err = r.ReportShadowEvidence(ctx, adminActor, f.dep.ID, b3)
	wantErr(t, err, ErrFailedPrecondition, "stopped")
	_, err = r.StopShadow(ctx, publisherActor, f.dep.ID, "")
	wantErr(t, err, ErrFailedPrecondition, "already stopped")

	// A stopped deployment's evidence still counts.
	if raw, _ := shadowEvidenceFor(f.e.log, "credit", "production", f.cand.Digest); !strings.Contains(string(raw), `"status":"stopped"`) {
		t.Fatalf("evidence after stop: %s", raw)
	}
	// Once the alias moves, the baseline is no longer what the candidate
	// would replace: no evidence.
	v3 := f.e.push(t, "credit", "3.0.0", "c")
	if _, err := r.SetAlias(ctx, adminActor, SetAliasInput{Model: "credit", Alias: "production", Version: v3.Label, ExpectVersion: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	if raw, err := shadowEvidenceFor(f.e.log, "credit", "production", f.cand.Digest); raw != nil || err != nil {
		t.Fatalf("evidence after the alias moved: got %s, %v; want none", raw, err)
	}
	f.e.checkRebuildEqual(t)
}

func TestShadowEvidenceRefused(t *testing.T) {
	ctx := context.Background()
	f := newShadowFixture(t)
	r := f.e.reg
	other, otherTok, err := r.StartShadow(ctx, publisherActor, ShadowStartInput{Model: "credit", Candidate: "2.0.0", Alias: "production",
		Comparator: f.dep.Comparator.Config(), AgentKey: testKey(t, 2).Public().(ed25519.PublicKey), ID: "shd_other"})
	if err != nil {
		t.Fatal(err)
	}
	otherAct, err := r.Authenticate(ctx, otherTok)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReportShadowEvidence(ctx, f.agentAct, f.dep.ID, f.batch(t, f.dep.ID, f.key, 100, []string{"a"}, 3, 1)); err != nil {
		t.Fatal(err)
	}
	labelCmp, _ := shadow.NewComparator(shadow.ComparatorConfig{Kind: shadow.KindLabel, Pointer: "/other"})
	tests := []struct {
		name   string
		actor  Actor
		dep    string
		signed []byte
		kind   error
		substr string
	}{
		{"bad signature", f.agentAct, f.dep.ID, f.batch(t, f.dep.ID, testKey(t, 9), 101, []string{"a"}, 1, 0), ErrInvalidArgument, "signature does not verify"},
		{"replayed sequence", f.agentAct, f.dep.ID, f.batch(t, f.dep.ID, f.key, 99, []string{"a"}, 1, 0), ErrAlreadyExists, "replayed"},
		{"same sequence, other content", f.agentAct, f.dep.ID, f.batch(t, f.dep.ID, f.key, 100, []string{"b"}, 1, 0), ErrAlreadyExists, "already accepted with other content"},
		{"batch of another deployment", adminActor, other.ID, f.batch(t, f.dep.ID, f.key, 101, []string{"a"}, 1, 0), ErrInvalidArgument, "signature does not verify"},
		{"foreign agent's token", otherAct, f.dep.ID, f.batch(t, f.dep.ID, f.key, 101, []string{"a"}, 1, 0), ErrPermissionDenied, "only its agent"},
		{"other deployment's agent for its own id", f.agentAct, other.ID, f.batch(t, other.ID, testKey(t, 2), 1, []string{"a"}, 1, 0), ErrPermissionDenied, "only its agent"},
		{"unknown deployment", adminActor, "shd_nope", f.batch(t, "shd_nope", f.key, 1, []string{"a"}, 1, 0), ErrNotFound, "does not exist"},
		{"bad id", adminActor, "nope", nil, ErrInvalidArgument, "shadow deployment id"},
		{"not an envelope", adminActor, f.dep.ID, []byte("junk"), ErrInvalidArgument, "signed batch"},
		{"other comparator", f.agentAct, f.dep.ID, func() []byte {
			g := *f
			g.cmp = labelCmp
			return g.batch(t, f.dep.ID, f.key, 101, []string{"a"}, 1, 0)
		}(), ErrInvalidArgument, "comparator"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			size := f.e.log.Size()
			_, err := r.ReportShadowEvidence(ctx, tt.actor, tt.dep, tt.signed)
			wantErr(t, err, tt.kind, tt.substr)
			if f.e.log.Size() != size {
				t.Errorf("refused batch grew the ledger from %d to %d", size, f.e.log.Size())
			}
		})
	}
	_, sum, err := r.GetShadow(ctx, f.dep.ID)
	if err != nil || sum.Overall.N != 4 {
		t.Fatalf("summary after refusals: n %d, %v; want 4", sum.Overall.N, err)
	}
	f.e.checkRebuildEqual(t)
}

func TestShadowStartRefused(t *testing.T) {
	ctx := context.Background()
	f := newShadowFixture(t)
	pub := testKey(t, 3).Public().(ed25519.PublicKey)
	cfg := f.dep.Comparator.Config()
	tests := []struct {
		name   string
		in     ShadowStartInput
		kind   error
		substr string
	}{
		{"no key", ShadowStartInput{Model: "credit", Candidate: "2.0.0", Alias: "production", Comparator: cfg}, ErrInvalidArgument, "public key"},
		{"candidate is baseline", ShadowStartInput{Model: "credit", Candidate: "1.0.0", Alias: "production", Comparator: cfg, AgentKey: pub}, ErrFailedPrecondition, "must differ"},
		{"alias unset", ShadowStartInput{Model: "credit", Candidate: "2.0.0", Alias: "staging", Comparator: cfg, AgentKey: pub}, ErrFailedPrecondition, "not set"},
		{"unknown candidate", ShadowStartInput{Model: "credit", Candidate: "9.9.9", Alias: "production", Comparator: cfg, AgentKey: pub}, ErrNotFound, "9.9.9"},
		{"bad comparator", ShadowStartInput{Model: "credit", Candidate: "2.0.0", Alias: "production", Comparator: shadow.ComparatorConfig{Kind: "fuzzy"}, AgentKey: pub}, ErrInvalidArgument, "comparator"},
		{"both segment sources", ShadowStartInput{Model: "credit", Candidate: "2.0.0", Alias: "production", Comparator: cfg, AgentKey: pub, SegmentHeader: "X", SegmentPointer: "/s"}, ErrInvalidArgument, "not both"},
		{"bad header", ShadowStartInput{Model: "credit", Candidate: "2.0.0", Alias: "production", Comparator: cfg, AgentKey: pub, SegmentHeader: "X Seg"}, ErrInvalidArgument, "header"},
		{"bad pointer", ShadowStartInput{Model: "credit", Candidate: "2.0.0", Alias: "production", Comparator: cfg, AgentKey: pub, SegmentPointer: "seg"}, ErrInvalidArgument, "pointer"},
		{"taken id", ShadowStartInput{Model: "credit", Candidate: "2.0.0", Alias: "production", Comparator: cfg, AgentKey: pub, ID: f.dep.ID}, ErrAlreadyExists, "already exists"},
		{"principal id taken", ShadowStartInput{Model: "credit", Candidate: "2.0.0", Alias: "production", Comparator: cfg, AgentKey: pub, ID: "shd_admin"}, ErrAlreadyExists, "principal"},
		{"bad id", ShadowStartInput{Model: "credit", Candidate: "2.0.0", Alias: "production", Comparator: cfg, AgentKey: pub, ID: "shd_a b"}, ErrInvalidArgument, "not allowed"},
	}
	if _, _, err := f.e.reg.AddPrincipal(ctx, adminActor, "shd_admin", "squatter", []Role{RoleAuditor}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			size := f.e.log.Size()
			_, _, err := f.e.reg.StartShadow(ctx, publisherActor, tt.in)
			wantErr(t, err, tt.kind, tt.substr)
			if f.e.log.Size() != size {
				t.Errorf("refused start grew the ledger from %d to %d", size, f.e.log.Size())
			}
		})
	}
}

// TestShadowLargeBatchAsBlob stores a batch that does not fit inline as a
// blob and checks that a rebuild (which reads it back) gives the same state.
func TestShadowLargeBatchAsBlob(t *testing.T) {
	ctx := context.Background()
	old := shadowInlineLimit
	shadowInlineLimit = 64
	t.Cleanup(func() { shadowInlineLimit = old })
	f := newShadowFixture(t)
	var segs []string
	for i := range 80 { // more than MaxShadowSegments: the rest overflow
		segs = append(segs, fmt.Sprintf("seg-%02d", i))
	}
	signed := f.batch(t, f.dep.ID, f.key, 1, segs, 2, 1)
	rep, err := f.e.reg.ReportShadowEvidence(ctx, f.agentAct, f.dep.ID, signed)
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	entry, err := f.e.log.Entry(rep.LedgerIndex)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(entry), `"signed_blob":"sha256:`) || strings.Contains(string(entry), `"signed":`) {
		t.Fatalf("entry does not reference a blob: %.300s", entry)
	}
	_, sum, err := f.e.reg.GetShadow(ctx, f.dep.ID)
	if err != nil || sum.Overall.N != 240 {
		t.Fatalf("summary: n %d, %v; want 240", sum.Overall.N, err)
	}
	f.e.checkRebuildEqual(t)
	// Reopening (catch-up path) keeps it too.
	f.e.close()
	f.e.open(t)
	if _, sum2, err := f.e.reg.GetShadow(ctx, f.dep.ID); err != nil || sum2.Overall.N != 240 {
		t.Fatalf("after reopen: n %d, %v", sum2.Overall.N, err)
	}
}

// BenchmarkReportShadowEvidence measures accepting one signed batch of four
// segments: verify, append (one synced commit), merge into the summary.
func BenchmarkReportShadowEvidence(b *testing.B) {
	ctx := context.Background()
	f := newShadowFixture(b)
	batches := make([][]byte, b.N)
	for i := range batches {
		batches[i] = f.batch(b, f.dep.ID, f.key, uint64(i+1), []string{"a", "b", "c", "d"}, 20, 2)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := f.e.reg.ReportShadowEvidence(ctx, f.agentAct, f.dep.ID, batches[i]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkShadowEvidenceFor measures building the policy input's evidence
// object from the projection.
func BenchmarkShadowEvidenceFor(b *testing.B) {
	ctx := context.Background()
	f := newShadowFixture(b)
	if _, err := f.e.reg.ReportShadowEvidence(ctx, f.agentAct, f.dep.ID, f.batch(b, f.dep.ID, f.key, 1, []string{"a", "b", "c", "d"}, 200, 5)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if raw, err := shadowEvidenceFor(f.e.log, "credit", "production", f.cand.Digest); err != nil || raw == nil {
			b.Fatal(raw, err)
		}
	}
}

var numericShadowCfg = shadow.ComparatorConfig{Kind: shadow.KindNumeric, Pointer: "/score", AbsTol: 0.05, Edges: []float64{0.1, 0.3, 0.5, 0.7, 0.9}}

// startNumericShadow starts deployment id of the fixture's candidate with a
// numeric comparator and the agent key of seed.
func startNumericShadow(t testing.TB, f *shadowFixture, id string, seed byte) (ShadowDeployment, Actor, ed25519.PrivateKey) {
	t.Helper()
	ctx := context.Background()
	k := testKey(t, seed)
	d, tok, err := f.e.reg.StartShadow(ctx, publisherActor, ShadowStartInput{Model: "credit", Candidate: "2.0.0", Alias: "production",
		Comparator: numericShadowCfg, MinSample: 5, AgentKey: k.Public().(ed25519.PublicKey), ID: id})
	if err != nil {
		t.Fatal(err)
	}
	act, err := f.e.reg.Authenticate(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	return d, act, k
}

// randomNumericEvidence is one batch's worth of mixed outcomes.
func randomNumericEvidence(t testing.TB, cmp *shadow.Comparator, rng *rand.Rand) *shadow.Evidence {
	t.Helper()
	agg := shadow.NewAggregator(cmp)
	segs := []string{"", "north", "south", "east", "west"}
	for range 1 + rng.IntN(60) {
		o := shadow.Observation{Segment: segs[rng.IntN(len(segs))], Outcome: shadow.Outcome(1 + rng.IntN(7)),
			PrimaryLatency: time.Duration(rng.IntN(5e7)), ShadowLatency: time.Duration(rng.IntN(9e7))}
		if o.Outcome == shadow.OutcomeCompared {
			o.Primary = shadow.Value{Number: rng.Float64(), IsNumber: true}
			o.Shadow = shadow.Value{Number: rng.Float64(), IsNumber: true}
		}
		if err := agg.Record(o); err != nil {
			t.Fatal(err)
		}
	}
	return agg.Take()
}

func signEvidence(t testing.TB, id string, k ed25519.PrivateKey, seq uint64, ev *shadow.Evidence) []byte {
	t.Helper()
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	sb, err := shadow.SignBatch(&shadow.Batch{DeploymentID: id, AgentID: id, Sequence: seq, Start: start, End: start, Evidence: ev}, k)
	if err != nil {
		t.Fatal(err)
	}
	return sb.Marshal()
}

// withoutDeploymentFacts drops the summary fields that differ between
// deployments of the same evidence.
func withoutDeploymentFacts(t testing.TB, raw []byte) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"deployment_id", "started_at", "updated_at", "policy_set", "status"} {
		delete(m, k)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The same batches reported in different orders to three deployments, and
// merged offline, give the same summary; it survives a rebuild, a reopen and
// a resend of every batch (each answered as a duplicate).
func TestShadowEvidenceOrderIndependent(t *testing.T) {
	ctx := context.Background()
	f := newShadowFixture(t)
	if _, err := f.e.reg.StopShadow(ctx, publisherActor, f.dep.ID, "not this one"); err != nil {
		t.Fatal(err)
	}
	cmp, err := shadow.NewComparator(numericShadowCfg)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var evs []*shadow.Evidence
	for range 40 {
		evs = append(evs, randomNumericEvidence(t, cmp, rng))
	}
	offline := shadow.NewEvidence(cmp)
	for _, ev := range evs {
		if err := offline.MergeLimit(ev.Clone(), MaxShadowSegments); err != nil {
			t.Fatal(err)
		}
	}
	wraw, err := json.Marshal(shadow.Summarize(shadow.Deployment{Candidate: f.cand.Digest, Baseline: f.base.Digest, Alias: "production"}, offline, 5))
	if err != nil {
		t.Fatal(err)
	}
	want := withoutDeploymentFacts(t, wraw)
	var last [][]byte
	for i, id := range []string{"shd_order1", "shd_order2", "shd_order3"} {
		d, act, k := startNumericShadow(t, f, id, byte(10+i))
		last = nil
		for j, p := range rng.Perm(len(evs)) {
			b := signEvidence(t, d.ID, k, uint64(j+1), evs[p])
			last = append(last, b)
			if _, err := f.e.reg.ReportShadowEvidence(ctx, act, d.ID, b); err != nil {
				t.Fatal(err)
			}
		}
		_, sum, err := f.e.reg.GetShadow(ctx, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(sum)
		if got := withoutDeploymentFacts(t, raw); got != want {
			t.Errorf("%s: summary differs from the offline merge:\n got %s\nwant %s", id, got, want)
		}
		if i < 2 {
			if _, err := f.e.reg.StopShadow(ctx, publisherActor, d.ID, "next order"); err != nil {
				t.Fatal(err)
			}
		}
	}
	pol, err := shadowEvidenceFor(f.e.log, "credit", "production", f.cand.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if got := withoutDeploymentFacts(t, pol); got != want {
		t.Errorf("policy evidence differs from the offline merge:\n got %s\nwant %s", got, want)
	}
	f.e.checkRebuildEqual(t)
	f.e.close()
	f.e.open(t)
	for _, b := range last {
		rep, err := f.e.reg.ReportShadowEvidence(ctx, adminActor, "shd_order3", b)
		if err != nil || !rep.Duplicate {
			t.Fatalf("resend after reopen: %+v, %v; want a duplicate", rep, err)
		}
	}
	if again, _ := shadowEvidenceFor(f.e.log, "credit", "production", f.cand.Digest); string(again) != string(pol) {
		t.Errorf("evidence changed after reopen and resend:\n%s\n%s", pol, again)
	}
}

// Differences of ordinary but large numbers (a score in currency units)
// saturate the fixed-point sum; the batch is accepted like any other, and
// the summary's mean is the maximum, an upper bound.
func TestShadowSaturatedDeltaSumAccepted(t *testing.T) {
	ctx := context.Background()
	f := newShadowFixture(t)
	d, act, k := startNumericShadow(t, f, "shd_sat", 20)
	cmp, _ := shadow.NewComparator(numericShadowCfg)
	agg := shadow.NewAggregator(cmp)
	rec := func(a, b float64) {
		if err := agg.Record(shadow.Observation{Outcome: shadow.OutcomeCompared, Primary: shadow.Value{Number: a, IsNumber: true}, Shadow: shadow.Value{Number: b, IsNumber: true}}); err != nil {
			t.Fatal(err)
		}
	}
	rec(1, 2)
	if _, err := f.e.reg.ReportShadowEvidence(ctx, act, d.ID, signEvidence(t, d.ID, k, 1, agg.Take())); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		rec(0, 1e10)
	}
	if _, err := f.e.reg.ReportShadowEvidence(ctx, act, d.ID, signEvidence(t, d.ID, k, 2, agg.Take())); err != nil {
		t.Fatalf("report of a batch with a saturated delta sum: %v", err)
	}
	rec(0, 1.7e308)
	rec(-1.7e308, 1.7e308) // the difference overflows float64
	if _, err := f.e.reg.ReportShadowEvidence(ctx, act, d.ID, signEvidence(t, d.ID, k, 3, agg.Take())); err != nil {
		t.Fatalf("report of a batch with an overflowing difference: %v", err)
	}
	_, sum, err := f.e.reg.GetShadow(ctx, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	nd := sum.Overall.NumericDelta
	if sum.Overall.N != 8 || nd == nil || nd.MaxAbs != math.MaxFloat64 || nd.MeanAbs != nd.MaxAbs {
		t.Fatalf("overall: n %d, numeric delta %+v; want 8 and mean = max = MaxFloat64", sum.Overall.N, nd)
	}
	f.e.checkRebuildEqual(t)
}

// Batches that would pass VerifyBatch but cannot merge into the deployment's
// evidence are refused before the append, as invalid arguments naming the
// problem, not as internal errors from the sequencer.
func TestShadowUnmergeableBatchRefused(t *testing.T) {
	ctx := context.Background()
	f := newShadowFixture(t)
	d, act, k := startNumericShadow(t, f, "shd_shape", 21)
	cmp, _ := shadow.NewComparator(numericShadowCfg)
	dropped := func(c *shadow.Comparator) *shadow.Evidence {
		agg := shadow.NewAggregator(c)
		_ = agg.Record(shadow.Observation{Outcome: shadow.OutcomeDropped})
		return agg.Take()
	}
	// Right digest, numeric flag cleared.
	flagless := dropped(cmp)
	flagless.Numeric = false
	// Right digest, another bin count.
	wider, _ := shadow.NewComparator(shadow.ComparatorConfig{Kind: shadow.KindNumeric, Pointer: "/score", Edges: []float64{0.5}})
	binned := dropped(wider)
	binned.Comparator = cmp.Digest()
	// Counts that each decode but overflow 2^53 once merged.
	huge := func() *shadow.Evidence {
		ev := dropped(cmp)
		s := ev.Segments[shadow.DefaultSegment]
		s.Requests, s.Drops = 1<<53, 1<<53
		return ev
	}
	if _, err := f.e.reg.ReportShadowEvidence(ctx, act, d.ID, signEvidence(t, d.ID, k, 1, huge())); err != nil {
		t.Fatalf("first batch of 2^53 requests: %v", err)
	}
	tests := []struct {
		name   string
		ev     *shadow.Evidence
		substr string
	}{
		{"numeric flag cleared", flagless, "(label, 6 bins), want " + cmp.Digest() + " (numeric, 6 bins)"},
		{"other bin count", binned, "(numeric, 2 bins), want " + cmp.Digest() + " (numeric, 6 bins)"},
		{"counts overflow once merged", huge(), "cannot be added to the evidence of deployment \"shd_shape\""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			size := f.e.log.Size()
			_, err := f.e.reg.ReportShadowEvidence(ctx, act, d.ID, signEvidence(t, d.ID, k, uint64(2+i), tt.ev))
			wantErr(t, err, ErrInvalidArgument, tt.substr)
			var de *Error
			if !errors.As(err, &de) {
				t.Errorf("error is not a domain error (an RPC would answer internal): %v", err)
			}
			if f.e.log.Size() != size {
				t.Errorf("refused batch grew the ledger from %d to %d", size, f.e.log.Size())
			}
		})
	}
	f.e.checkRebuildEqual(t)
}

// allocated returns the bytes allocated while fn runs.
func allocated(fn func()) uint64 {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	fn()
	runtime.ReadMemStats(&m1)
	return m1.TotalAlloc - m0.TotalAlloc
}

// A large batch the deployment will refuse costs a hash of its bytes, not a
// decoding of its segments: the signature is checked before anything but the
// header is read, and a signed batch of the wrong shape is refused from its
// header.
func TestShadowHostileBatchRefusedCheaply(t *testing.T) {
	ctx := context.Background()
	f := newShadowFixture(t)
	d, act, k := startNumericShadow(t, f, "shd_cost", 22)
	var edges []float64
	for i := range 1023 {
		edges = append(edges, float64(i))
	}
	wide, err := shadow.NewComparator(shadow.ComparatorConfig{Kind: shadow.KindNumeric, Pointer: "/s", Edges: edges})
	if err != nil {
		t.Fatal(err)
	}
	cmp, _ := shadow.NewComparator(numericShadowCfg)
	many := func(c *shadow.Comparator, segments int) *shadow.Evidence {
		agg, err := shadow.NewAggregatorWith(c, shadow.AggregatorConfig{MaxSegments: 4095})
		if err != nil {
			t.Fatal(err)
		}
		for i := range segments {
			for j := 0; j < 2400; j += 40 {
				_ = agg.Record(shadow.Observation{Segment: fmt.Sprintf("s%d", i), Outcome: shadow.OutcomeShadowError,
					PrimaryLatency: time.Duration(float64(time.Microsecond) * math.Pow(1.02, float64(j))),
					ShadowLatency:  time.Duration(float64(time.Microsecond) * math.Pow(1.02, float64(j+1)))})
			}
		}
		return agg.Take()
	}
	tests := []struct {
		name   string
		signed []byte
		substr string
	}{
		{"wrong key", signEvidence(t, d.ID, testKey(t, 99), 1, many(wide, 1800)), "signature does not verify"},
		{"other comparator", signEvidence(t, d.ID, k, 1, many(wide, 1800)), "want " + cmp.Digest()},
		{"too many segments", signEvidence(t, d.ID, k, 1, many(cmp, 4000)), "at least 3999 named segments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.signed) < 512<<10 {
				t.Fatalf("batch of %d bytes is too small to show anything", len(tt.signed))
			}
			var err error
			n := allocated(func() { _, err = f.e.reg.ReportShadowEvidence(ctx, act, d.ID, tt.signed) })
			wantErr(t, err, ErrInvalidArgument, tt.substr)
			// Copying the envelope and the signed message is about twice its
			// size; decoding its segments was about forty times.
			t.Logf("%d-byte batch refused with %d bytes allocated (%.1fx)", len(tt.signed), n, float64(n)/float64(len(tt.signed)))
			if n > 4*uint64(len(tt.signed)) {
				t.Errorf("refusing a %d-byte batch allocated %d bytes, more than 4 times its size", len(tt.signed), n)
			}
		})
	}
}

// Resends keep their answers now that the signature is checked before the
// payload is decoded: an exact resend is a duplicate (even once the
// deployment has stopped), a forged one a bad signature, and other content
// under an accepted sequence a replay.
func TestShadowResendAnswers(t *testing.T) {
	ctx := context.Background()
	f := newShadowFixture(t)
	b1 := f.batch(t, f.dep.ID, f.key, 5, []string{"a"}, 3, 1)
	rep, err := f.e.reg.ReportShadowEvidence(ctx, f.agentAct, f.dep.ID, b1)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := shadow.ParseSignedBatch(b1)
	if err != nil {
		t.Fatal(err)
	}
	forged := &shadow.SignedBatch{Payload: sb.Payload, Signature: append([]byte(nil), sb.Signature...)}
	forged.Signature[0] ^= 1
	_, err = f.e.reg.ReportShadowEvidence(ctx, f.agentAct, f.dep.ID, forged.Marshal())
	wantErr(t, err, ErrInvalidArgument, "signature does not verify")
	_, err = f.e.reg.ReportShadowEvidence(ctx, f.agentAct, f.dep.ID, f.batch(t, f.dep.ID, f.key, 5, []string{"b"}, 1, 0))
	wantErr(t, err, ErrAlreadyExists, "already accepted with other content")
	if _, err := f.e.reg.StopShadow(ctx, publisherActor, f.dep.ID, "done"); err != nil {
		t.Fatal(err)
	}
	again, err := f.e.reg.ReportShadowEvidence(ctx, adminActor, f.dep.ID, b1)
	if err != nil || !again.Duplicate || again.LedgerIndex != rep.LedgerIndex {
		t.Fatalf("exact resend after stop: %+v, %v; want a duplicate of %+v", again, err, rep)
	}
	_, err = f.e.reg.ReportShadowEvidence(ctx, adminActor, f.dep.ID, f.batch(t, f.dep.ID, f.key, 6, []string{"a"}, 1, 0))
	wantErr(t, err, ErrFailedPrecondition, "stopped")
}

// Concurrent reports (each batch sent twice at once) racing a stop: what was
// acknowledged as new is exactly what is counted, each batch once.
func TestShadowReportsRaceStop(t *testing.T) {
	ctx := context.Background()
	f := newShadowFixture(t)
	d, act, k := startNumericShadow(t, f, "shd_race", 30)
	cmp, _ := shadow.NewComparator(numericShadowCfg)
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 30
	var batches [][]byte
	var reqs []uint64
	for i := range n {
		ev := randomNumericEvidence(t, cmp, rng)
		var r uint64
		for _, s := range ev.Segments {
			r += s.Requests
		}
		reqs = append(reqs, r)
		batches = append(batches, signEvidence(t, d.ID, k, uint64(i+1), ev))
	}
	type result struct {
		i   int
		rep ShadowReport
		err error
	}
	out := make(chan result, 2*n)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range n {
			var pair sync.WaitGroup
			for range 2 {
				pair.Add(1)
				go func() {
					defer pair.Done()
					rep, err := f.e.reg.ReportShadowEvidence(ctx, act, d.ID, batches[i])
					out <- result{i, rep, err}
				}()
			}
			pair.Wait()
		}
	}()
	if _, err := f.e.reg.StopShadow(ctx, publisherActor, d.ID, "race"); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(out)
	var fresh, acked uint64
	counted := map[int]int{}
	for r := range out {
		if r.err == nil && !r.rep.Duplicate {
			fresh++
			counted[r.i]++
			acked += reqs[r.i]
		}
	}
	for i, c := range counted {
		if c != 1 {
			t.Errorf("batch %d acknowledged as new %d times", i, c)
		}
	}
	dd, sum, err := f.e.reg.GetShadow(ctx, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if dd.Batches != fresh || sum.Overall.Requests != acked {
		t.Errorf("acknowledged %d batches of %d requests; deployment counts %d batches of %d requests", fresh, acked, dd.Batches, sum.Overall.Requests)
	}
	f.e.checkRebuildEqual(t)
}

// Design facts the review raised (docs/design/shadow-registry.md): revoking
// the candidate does not stop its deployment; its agent keeps reporting
// until the deployment is stopped.
func TestShadowRevokedCandidateKeepsRunning(t *testing.T) {
	ctx := context.Background()
	f := newShadowFixture(t)
	if _, err := f.e.reg.RevokeVersion(ctx, adminActor, "credit", "2.0.0", "bad"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.e.reg.Authenticate(ctx, f.token); err != nil {
		t.Fatalf("agent token after the candidate was revoked: %v", err)
	}
	if _, err := f.e.reg.ReportShadowEvidence(ctx, f.agentAct, f.dep.ID, f.batch(t, f.dep.ID, f.key, 1, []string{"a"}, 3, 0)); err != nil {
		t.Fatalf("report after the candidate was revoked: %v", err)
	}
	if d, _, _ := f.e.reg.GetShadow(ctx, f.dep.ID); d.Stopped || d.Batches != 1 {
		t.Fatalf("deployment after the candidate was revoked: stopped %v, batches %d; want running with 1", d.Stopped, d.Batches)
	}
}
