package registry

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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
