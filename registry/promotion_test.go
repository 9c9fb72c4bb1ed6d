package registry

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hallmark-dev/hallmark/policy"
	"github.com/hallmark-dev/hallmark/registry/blob"
	"github.com/hallmark-dev/hallmark/signing"
)

// promoEnv is a registry whose trust store holds one signing key, with the
// principals a promotion needs: ci pushes, rq requests, alice, bob and
// carol approve, dave holds no approver role.
type promoEnv struct {
	*testEnv
	signer signing.Signer
}

var (
	requesterActor = Actor{ID: "rq", Name: "Release Manager", Roles: []Role{RolePublisher}, Auth: AuthToken}
	aliceActor     = Actor{ID: "alice", Name: "Alice Approver", Roles: []Role{RoleApprover}, Auth: AuthToken}
	bobActor       = Actor{ID: "bob", Name: "Bob Approver", Roles: []Role{RoleApprover}, Auth: AuthToken}
	carolActor     = Actor{ID: "carol", Name: "Carol Approver", Roles: []Role{RoleApprover}, Auth: AuthToken}
	daveActor      = Actor{ID: "dave", Name: "Dave Publisher", Roles: []Role{RolePublisher}, Auth: AuthToken}
	// ciApprover is the version creator holding the approver role too.
	ciApprover  = Actor{ID: "ci", Name: "CI pipeline", Roles: []Role{RolePublisher, RoleApprover}, Auth: AuthToken}
	authorActor = Actor{ID: "pa", Name: "Policy Author", Roles: []Role{RolePolicyAuthor}, Auth: AuthToken}
)

func newPromoEnv(t testing.TB) *promoEnv {
	t.Helper()
	priv, err := signing.GenerateKey(signing.KeyEd25519)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := signing.NewKeySigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	e := &promoEnv{testEnv: newEnv(t, Options{Trust: signing.TrustStore{PublicKeys: []crypto.PublicKey{priv.Public()}}}), signer: signer}
	ctx := context.Background()
	if _, _, err := e.reg.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		a     Actor
		roles []Role
	}{
		{publisherActor, []Role{RolePublisher, RoleApprover}}, {requesterActor, []Role{RolePublisher, RoleApprover}},
		{aliceActor, aliceActor.Roles}, {bobActor, bobActor.Roles}, {carolActor, carolActor.Roles},
		{daveActor, daveActor.Roles}, {authorActor, authorActor.Roles},
	} {
		if _, _, err := e.reg.AddPrincipal(ctx, adminActor, p.a.ID, p.a.Name, p.roles); err != nil {
			t.Fatalf("adding %s: %v", p.a.ID, err)
		}
	}
	return e
}

// pushSigned pushes a version signed with the trusted key (signed false:
// no signature at all).
func (e *promoEnv) pushSigned(t testing.TB, model, label string, signed bool) Version {
	t.Helper()
	ctx := context.Background()
	files := []File{e.putFile(t, "weights.bin", []byte("weights "+model+label)), e.putFile(t, "config.json", []byte(`{"l":"`+label+`"}`))}
	in := CreateVersionInput{Model: model, Label: label, Files: files, Metadata: Metadata{Framework: "onnx", Metrics: map[string]float64{"auc": 0.9}}}
	if signed {
		man, err := signing.NewManifest(files)
		if err != nil {
			t.Fatal(err)
		}
		if in.SignatureBundle, err = signing.Sign(ctx, man, model, e.signer, signing.SignOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	v, _, err := e.reg.CreateVersion(ctx, publisherActor, in)
	if err != nil {
		t.Fatalf("pushing %s@%s: %v", model, label, err)
	}
	return v
}

func (e *promoEnv) promote(t testing.TB, model, version, alias, expect string) PromotionResult {
	t.Helper()
	in := PromoteInput{Model: model, Alias: alias, Version: version, ExpectVersion: expect, ExpectUnset: expect == "", Reason: "CHG-1 " + version}
	res, err := e.reg.Promote(context.Background(), requesterActor, in)
	if err != nil {
		t.Fatalf("promoting %s@%s to %s: %v", model, version, alias, err)
	}
	return res
}

func approve(t testing.TB, r *Registry, a Actor, id, meaning string) PromotionResult {
	t.Helper()
	res, err := r.Approve(context.Background(), a, ApproveInput{Request: id, Meaning: meaning, Comment: "looked at it"})
	if err != nil {
		t.Fatalf("%s approving %s: %v", a.ID, id, err)
	}
	return res
}

// testPolicy is a small set whose approval count and deny-all switch are
// parameters: enough to drive the request states without shadow evidence.
func testPolicy(t testing.TB, need int, denyAll bool) []policy.File {
	t.Helper()
	mod := fmt.Sprintf(`package hallmark.promotion

decision := {"allow": count(deny) == 0, "deny": deny, "warn": set(), "required_approvals": need}

need := %d

eligible contains a.approver if {
	some a in input.approvals
	a.meaning == "approved"
	a.approver != input.candidate.creator
	a.approver != input.request.requester
}

deny contains {"rule": "approvals.insufficient", "message": msg} if {
	count(eligible) < need
	msg := sprintf("needs %%d approvals, has %%d", [need, count(eligible)])
}

deny contains {"rule": "version.revoked", "message": "revoked"} if input.candidate.revoked == true

deny contains {"rule": "approvals.rejected", "message": "rejected"} if {
	some a in input.approvals
	a.meaning == "rejected"
}

deny contains {"rule": "test.deny_all", "message": "draft denies everything"} if %v
`, need, denyAll)
	tests := `package hallmark.promotion_test

import data.hallmark.promotion

base := {"schema_version": 1, "now": "2026-01-01T00:00:00Z",
	"request": {"id": "r", "model": "m", "alias": "a", "from_version": "", "to_version": "sha256:0000000000000000000000000000000000000000000000000000000000000000", "requester": "rq", "reason": "x", "rollback": false},
	"candidate": {"digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000", "model": "m", "label": "1", "creator": "ci", "created_at": "2026-01-01T00:00:00Z", "revoked": false, "metadata": {}, "metrics": {}, "lineage": {}, "aliases": []},
	"signatures": [], "approvals": [], "alias_history": []}

test_decides if {
	d := promotion.decision with input as base
	d.required_approvals == promotion.need
}

test_revoked_denied if {
	inp := json.patch(base, [{"op": "replace", "path": "/candidate/revoked", "value": true}])
	d := promotion.decision with input as inp
	not d.allow
}

test_rejected_denied if {
	inp := json.patch(base, [{"op": "replace", "path": "/approvals", "value": [{"approver": "x", "meaning": "rejected", "at": "2026-01-01T00:00:00Z"}, {"approver": "y", "meaning": "approved", "at": "2026-01-01T00:00:00Z"}]}])
	d := promotion.decision with input as inp
	not d.allow
}
`
	return []policy.File{{Name: "promotion.rego", Data: []byte(mod)}, {Name: "promotion_test.rego", Data: []byte(tests)}}
}

func (e *promoEnv) publish(t testing.TB, files []policy.File) PolicySet {
	t.Helper()
	ps, err := e.reg.PublishPolicySet(context.Background(), authorActor, files, PublishOptions{MinCoverage: -1})
	if err != nil {
		t.Fatalf("publishing: %v", err)
	}
	return ps
}

func TestPromoteWithDefaultPack(t *testing.T) {
	ctx := context.Background()
	e := newPromoEnv(t)
	v1 := e.pushSigned(t, "m", "1.0", true)

	st, err := e.reg.PolicyStatus(ctx)
	if err != nil || !st.ActiveDefault || st.Active != policy.DefaultSet().Digest().String() {
		t.Fatalf("fresh policy status: got %+v, %v; want the default pack", st, err)
	}
	res := e.promote(t, "m", "1.0", "staging", "")
	if res.Request.Status != StatusWaiting || res.Decision.Status != StatusWaiting || res.Moved != nil {
		t.Fatalf("first decision: got request %s, decision %s %+v; want waiting", res.Request.Status, res.Decision.Status, res.Decision.Result)
	}
	if got := e.reg.WaitingFor(res.Request, res.Decision); got != 1 {
		t.Fatalf("waiting for: got %d approvals, want 1", got)
	}
	ps, files, err := e.reg.GetPolicySet(ctx, "")
	if err != nil || !ps.Published || !ps.Default || ps.LedgerIndex == 0 || len(files) == 0 {
		t.Fatalf("default pack after first decision: got %+v (%d files), %v; want it recorded", ps, len(files), err)
	}
	if res.Decision.PolicySet != ps.Digest || res.Decision.OPAVersion != policy.OPAVersion {
		t.Fatalf("decision policy set %s (OPA %s), want %s (%s)", res.Decision.PolicySet, res.Decision.OPAVersion, ps.Digest, policy.OPAVersion)
	}

	res = approve(t, e.reg, aliceActor, res.Request.ID, MeaningApproved)
	if res.Decision.Status != StatusAllowed || res.Moved == nil || res.Moved.VersionDigest != v1.Digest || res.Moved.Decision != res.Decision.Index {
		t.Fatalf("after approval: got %s, moved %+v; want allowed and staging at %s by decision %d", res.Decision.Status, res.Moved, v1.Digest, res.Decision.Index)
	}
	if _, err := e.reg.Approve(ctx, bobActor, ApproveInput{Request: res.Request.ID, Meaning: MeaningApproved}); !errors.Is(err, ErrFailedPrecondition) {
		t.Fatalf("approving an allowed request: got %v, want ErrFailedPrecondition", err)
	}

	// An unsigned version is denied for good, with the rule named.
	e.pushSigned(t, "m", "2.0-unsigned", false)
	res = e.promote(t, "m", "2.0-unsigned", "staging", "1.0")
	if res.Decision.Status != StatusDenied || !strings.Contains(strings.Join(res.Decision.Result.DenyRules(), ","), "signature.trusted_required") {
		t.Fatalf("unsigned: got %s %v, want denied by signature.trusted_required", res.Decision.Status, res.Decision.Result.DenyRules())
	}

	// Forward to 3.0, then roll back to 1.0 (the rollback rules apply).
	e.pushSigned(t, "m", "3.0", true)
	res = e.promote(t, "m", "3.0", "staging", "1.0")
	res = approve(t, e.reg, bobActor, res.Request.ID, MeaningApproved)
	if res.Moved == nil {
		t.Fatalf("3.0 to staging: got %s %v", res.Decision.Status, res.Decision.Result.DenyRules())
	}
	res = e.promote(t, "m", "1.0", "staging", "3.0")
	if !res.Request.Rollback {
		t.Fatalf("promotion back to 1.0: rollback false, want true")
	}
	res = approve(t, e.reg, aliceActor, res.Request.ID, MeaningApproved)
	if res.Moved == nil || res.Moved.VersionDigest != v1.Digest {
		t.Fatalf("rollback: got %s %v, want staging back at 1.0", res.Decision.Status, res.Decision.Result.DenyRules())
	}

	// A revoked version is never promoted.
	if _, err := e.reg.RevokeVersion(ctx, adminActor, "m", "3.0", "bad calibration"); err != nil {
		t.Fatal(err)
	}
	res = e.promote(t, "m", "3.0", "staging", "1.0")
	if res.Decision.Status != StatusDenied || !strings.Contains(strings.Join(res.Decision.Result.DenyRules(), ","), "version.revoked") {
		t.Fatalf("revoked: got %s %v, want denied by version.revoked", res.Decision.Status, res.Decision.Result.DenyRules())
	}
	if a, err := e.reg.GetVersion(ctx, "m", "staging"); err != nil || a.Digest != v1.Digest {
		t.Fatalf("staging after the revoked promotion: got %s, %v; want 1.0", a.Label, err)
	}
	checkReplaysOwnSets(t, e.reg)
	e.checkRebuildEqual(t)
}

// TestRevokedApproverNoLongerCounts: an approval recorded before its
// approver's principal was revoked stays on record, is marked in later
// decisions' inputs, and no longer counts under the default pack.
func TestRevokedApproverNoLongerCounts(t *testing.T) {
	ctx := context.Background()
	e := newPromoEnv(t)
	e.pushSigned(t, "m", "1.0", true)
	res := e.promote(t, "m", "1.0", "staging", "")
	if res = approve(t, e.reg, carolActor, res.Request.ID, MeaningApproved); res.Moved == nil {
		t.Fatalf("staging: got %s %v", res.Decision.Status, res.Decision.Result.DenyRules())
	}
	// A first release to production: no evidence to shadow, two approvals.
	id := e.promote(t, "m", "1.0", "production", "").Request.ID
	approve(t, e.reg, aliceActor, id, MeaningApproved)
	if _, err := e.reg.RevokePrincipal(ctx, adminActor, "alice", "account compromised"); err != nil {
		t.Fatal(err)
	}
	res = approve(t, e.reg, bobActor, id, MeaningApproved)
	if res.Decision.Status != StatusWaiting || res.Moved != nil || e.reg.WaitingFor(res.Request, res.Decision) != 1 {
		t.Fatalf("after bob's approval: got %s, moved %v, deny %v; want waiting for 1 more approval", res.Decision.Status, res.Moved, res.Decision.Result.Deny)
	}
	in := string(res.Decision.Input)
	if !strings.Contains(in, `{"approver":"alice","meaning":"approved",`) || !strings.Contains(in, `"approver_revoked":true}`) ||
		!strings.Contains(in, `"approver":"bob","meaning":"approved"`) || strings.Count(in, `"approver_revoked":true`) != 1 {
		t.Fatalf("decision input does not mark alice (only) as revoked since:\n%s", in)
	}
	checkReplaysOwnSets(t, e.reg)
	e.checkRebuildEqual(t)
}

// allDecisions walks every page of ListDecisions from f, checking that
// pages follow each other in ledger order.
func allDecisions(t testing.TB, r *Registry, f DecisionFilter) []DecisionRecord {
	t.Helper()
	var out []DecisionRecord
	for {
		ds, next, err := r.ListDecisions(context.Background(), f, 0)
		if err != nil {
			t.Fatalf("ListDecisions from %d: %v", f.From, err)
		}
		for _, d := range ds {
			if d.Index < f.From || len(out) > 0 && d.Index <= out[len(out)-1].Index {
				t.Fatalf("ListDecisions from %d: decision %d out of order", f.From, d.Index)
			}
			out = append(out, d)
		}
		if next == 0 {
			return out
		}
		if len(ds) == 0 || next <= ds[len(ds)-1].Index {
			t.Fatalf("ListDecisions from %d: next %d does not move on", f.From, next)
		}
		f.From = next
	}
}

// checkReplaysOwnSets replays every recorded decision with the set that made
// it and wants the recorded result back, exactly.
func checkReplaysOwnSets(t testing.TB, r *Registry) {
	t.Helper()
	ctx := context.Background()
	ds := allDecisions(t, r, DecisionFilter{})
	if len(ds) == 0 {
		t.Fatalf("no decisions recorded")
	}
	bySet := map[string][]DecisionRecord{}
	for _, d := range ds {
		bySet[d.PolicySet] = append(bySet[d.PolicySet], d)
	}
	for digest, group := range bySet {
		p, err := r.preparePolicy(ctx, r.log, digest)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := policy.Replay(ctx, p, Recorded(group))
		if err != nil {
			t.Fatal(err)
		}
		if rep.Total != len(group) || rep.Unchanged != len(group) || len(rep.Changes)+len(rep.Errors) != 0 {
			t.Fatalf("replaying %d decisions of %s with their own set: got %+v", len(group), digest, rep)
		}
		for _, d := range group {
			got, err := p.Decide(ctx, d.Input)
			if err != nil {
				t.Fatal(err)
			}
			gb, _ := json.Marshal(got)
			wb, _ := json.Marshal(d.Result)
			if string(gb) != string(wb) {
				t.Fatalf("decision %d: replay gives %s, recorded %s", d.Index, gb, wb)
			}
		}
	}
}

func TestSeparationOfDuties(t *testing.T) {
	ctx := context.Background()
	e := newPromoEnv(t)
	e.publish(t, testPolicy(t, 2, false))
	e.pushSigned(t, "m", "1.0", true)
	id := e.promote(t, "m", "1.0", "prod", "").Request.ID
	if _, err := e.reg.RevokePrincipal(ctx, adminActor, "carol", "left"); err != nil {
		t.Fatal(err)
	}
	before := e.log.Size()
	for _, c := range []struct {
		name  string
		actor Actor
		kind  error
		msg   string
	}{
		{"creator", ciApprover, ErrPermissionDenied, "pushed version"},
		{"requester", Actor{ID: "rq", Name: "Release Manager", Roles: []Role{RoleApprover}, Auth: AuthToken}, ErrPermissionDenied, "requested promotion"},
		{"no approver role", daveActor, ErrPermissionDenied, "approver role"},
		// admin is no approver either, and the refusal says what to do next.
		{"admin", adminActor, ErrPermissionDenied, `approvals are personal (separation of duties): only a principal holding approver may record one, admin included; an admin adds an approver with hallmark principals add ID --name "Printed Name" --role approver`},
		{"revoked", carolActor, ErrPermissionDenied, "revoked"},
		{"unknown", Actor{ID: "mallory", Name: "M", Roles: []Role{RoleApprover}, Auth: AuthToken}, ErrPermissionDenied, "not a principal"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.reg.Approve(ctx, c.actor, ApproveInput{Request: id, Meaning: MeaningApproved})
			wantErr(t, err, c.kind, c.msg)
		})
	}
	if e.log.Size() != before {
		t.Fatalf("refused approvals appended %d entries", e.log.Size()-before)
	}
	res := approve(t, e.reg, aliceActor, id, MeaningApproved)
	if res.Decision.Status != StatusWaiting || e.reg.WaitingFor(res.Request, res.Decision) != 1 {
		t.Fatalf("one of two approvals: got %s, waiting for %d", res.Decision.Status, e.reg.WaitingFor(res.Request, res.Decision))
	}
	_, err := e.reg.Approve(ctx, aliceActor, ApproveInput{Request: id, Meaning: MeaningApproved})
	wantErr(t, err, ErrAlreadyExists, "counts once")
	_, err = e.reg.Approve(ctx, aliceActor, ApproveInput{Request: id, Meaning: MeaningReviewed})
	wantErr(t, err, ErrAlreadyExists, "counts once")
	res = approve(t, e.reg, bobActor, id, MeaningApproved)
	if res.Decision.Status != StatusAllowed || res.Moved == nil {
		t.Fatalf("two approvals: got %s %v", res.Decision.Status, res.Decision.Result.DenyRules())
	}
	// A rejection ends a request.
	e.pushSigned(t, "m", "2.0", true)
	id2 := e.promote(t, "m", "2.0", "prod", "1.0").Request.ID
	res = approve(t, e.reg, bobActor, id2, MeaningRejected)
	if res.Request.Status != StatusDenied {
		t.Fatalf("rejected: got %s, want denied", res.Request.Status)
	}
	checkReplaysOwnSets(t, e.reg)
	e.checkRebuildEqual(t)
}

func TestApprovalSignatures(t *testing.T) {
	ctx := context.Background()
	e := newPromoEnv(t)
	e.publish(t, testPolicy(t, 2, false))
	e.pushSigned(t, "m", "1.0", true)
	e.pushSigned(t, "m", "2.0", true)
	id := e.promote(t, "m", "1.0", "prod", "").Request.ID
	other := e.promote(t, "m", "2.0", "prod", "").Request.ID

	key, _ := signing.GenerateKey(signing.KeyEd25519)
	wrong, _ := signing.GenerateKey(signing.KeyECDSAP256)
	pemText, _ := signing.MarshalPublicKeyPEM(key.Public())
	if _, err := e.reg.SetPrincipalKey(ctx, adminActor, "alice", pemText); err != nil {
		t.Fatal(err)
	}
	req, _ := e.reg.GetPromotion(ctx, id)
	now := e.opts.Now()
	claim := ApprovalClaim{Request: id, Model: "m", Alias: "prod", Version: req.Version, Meaning: MeaningApproved, Approver: "alice", SignedAt: now}
	sign := func(k crypto.Signer, c ApprovalClaim) []byte {
		s, err := SignApproval(k, c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	otherReq, _ := e.reg.GetPromotion(ctx, other)
	before := e.log.Size()
	for _, c := range []struct {
		name string
		in   ApproveInput
		kind error
		msg  string
	}{
		{"unsigned", ApproveInput{Request: id, Meaning: MeaningApproved}, ErrPermissionDenied, "must be signed"},
		{"wrong key", ApproveInput{Request: id, Meaning: MeaningApproved, SignedAt: now, Signature: sign(wrong, claim)}, ErrPermissionDenied, "does not verify"},
		{"other meaning", ApproveInput{Request: id, Meaning: MeaningApproved, SignedAt: now, Signature: sign(key, func() ApprovalClaim { c := claim; c.Meaning = MeaningReviewed; return c }())}, ErrPermissionDenied, "does not verify"},
		{"other version", ApproveInput{Request: id, Meaning: MeaningApproved, SignedAt: now, Signature: sign(key, func() ApprovalClaim { c := claim; c.Version = otherReq.Version; return c }())}, ErrPermissionDenied, "does not verify"},
		{"replayed for another request", ApproveInput{Request: other, Meaning: MeaningApproved, SignedAt: now, Signature: sign(key, claim)}, ErrPermissionDenied, "does not verify"},
		{"stale time", ApproveInput{Request: id, Meaning: MeaningApproved, SignedAt: now.Add(-30 * time.Minute), Signature: sign(key, func() ApprovalClaim { c := claim; c.SignedAt = now.Add(-30 * time.Minute); return c }())}, ErrPermissionDenied, "away from the server's time"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.reg.Approve(ctx, aliceActor, c.in)
			wantErr(t, err, c.kind, c.msg)
		})
	}
	// bob has no key: a signature cannot be checked.
	_, err := e.reg.Approve(ctx, bobActor, ApproveInput{Request: id, Meaning: MeaningApproved, SignedAt: now, Signature: []byte("x")})
	wantErr(t, err, ErrFailedPrecondition, "no registered public key")
	if e.log.Size() != before {
		t.Fatalf("refused approvals appended %d entries", e.log.Size()-before)
	}
	res, err := e.reg.Approve(ctx, aliceActor, ApproveInput{Request: id, Meaning: MeaningApproved, SignedAt: now, Signature: sign(key, claim)})
	if err != nil {
		t.Fatalf("signed approval: %v", err)
	}
	a := res.Request.Approvals[0]
	if !a.Signed || !a.SignatureValid || a.KeyFingerprint == "" || a.Name != "Alice Approver" {
		t.Fatalf("signed approval recorded as %+v", a)
	}
	if !strings.Contains(string(res.Decision.Input), `"signed":true,"signature_valid":true`) {
		t.Fatalf("input approvals: %s", res.Decision.Input)
	}
	e.checkRebuildEqual(t)
}

func TestConcurrentPromotionsOneWins(t *testing.T) {
	ctx := context.Background()
	e := newPromoEnv(t)
	e.publish(t, testPolicy(t, 0, false))
	const n = 8
	for i := range n {
		e.pushSigned(t, "m", fmt.Sprint("v", i), true)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = e.reg.Promote(ctx, requesterActor, PromoteInput{Model: "m", Alias: "prod", Version: fmt.Sprint("v", i), ExpectUnset: true, Reason: "race"})
		})
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case errors.Is(err, ErrConflict):
		default:
			t.Fatalf("promotion %d: got %v, want success or ErrConflict", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("got %d winners, want exactly 1", won)
	}
	hist, _ := e.reg.AliasHistory(ctx, "m", "prod")
	if len(hist) != 1 || hist[0].Decision == 0 {
		t.Fatalf("alias history: got %+v, want one move naming its decision", hist)
	}
	e.checkRebuildEqual(t)
}

func TestWaitingRequestsSuperseded(t *testing.T) {
	e := newPromoEnv(t)
	e.publish(t, testPolicy(t, 1, false))
	e.pushSigned(t, "m", "1", true)
	e.pushSigned(t, "m", "2", true)
	a := e.promote(t, "m", "1", "prod", "").Request.ID
	b := e.promote(t, "m", "2", "prod", "").Request.ID
	approve(t, e.reg, aliceActor, a, MeaningApproved)
	got, _ := e.reg.GetPromotion(context.Background(), b)
	if got.Status != StatusSuperseded || got.SupersededBy != a {
		t.Fatalf("other waiting request: got %s by %q, want superseded by %s", got.Status, got.SupersededBy, a)
	}
	_, err := e.reg.Approve(context.Background(), bobActor, ApproveInput{Request: b, Meaning: MeaningApproved})
	wantErr(t, err, ErrFailedPrecondition, "superseded")
	e.checkRebuildEqual(t)
}

func TestPublishRefusedRecordsNothing(t *testing.T) {
	ctx := context.Background()
	e := newPromoEnv(t)
	files := testPolicy(t, 1, false)
	files[1].Data = append(files[1].Data, []byte("\ntest_fails if {\n\tfalse\n}\n")...)
	before := e.log.Size()
	_, err := e.reg.PublishPolicySet(ctx, authorActor, files, PublishOptions{MinCoverage: -1})
	var refused *PolicyRefusedError
	if !errors.As(err, &refused) || !errors.Is(err, ErrFailedPrecondition) || !strings.Contains(err.Error(), "promotion_test.rego:") {
		t.Fatalf("failing test: got %v, want a PolicyRefusedError naming promotion_test.rego:line", err)
	}
	// Coverage under the floor.
	_, err = e.reg.PublishPolicySet(ctx, authorActor, testPolicy(t, 1, false), PublishOptions{MinCoverage: 100})
	if !errors.As(err, &refused) || !strings.Contains(err.Error(), "coverage") {
		t.Fatalf("coverage floor: got %v, want refused for coverage", err)
	}
	// A compile error.
	bad := []policy.File{{Name: "p.rego", Data: []byte("package hallmark.promotion\n\ndecision := input.requst.model\n")}}
	_, err = e.reg.PublishPolicySet(ctx, authorActor, bad, PublishOptions{})
	if !errors.As(err, &refused) || !strings.Contains(err.Error(), "p.rego:3") {
		t.Fatalf("type error: got %v, want refused at p.rego:3", err)
	}
	if e.log.Size() != before {
		t.Fatalf("refused publications appended %d entries", e.log.Size()-before)
	}
	ps := e.publish(t, testPolicy(t, 1, false))
	st, _ := e.reg.PolicyStatus(ctx)
	if st.Active != ps.Digest || st.ActiveDefault {
		t.Fatalf("after publishing: active %s (default %v), want %s", st.Active, st.ActiveDefault, ps.Digest)
	}
	_, err = e.reg.PublishPolicySet(ctx, authorActor, testPolicy(t, 1, false), PublishOptions{MinCoverage: -1})
	wantErr(t, err, ErrAlreadyExists, "already the active")
	e.checkRebuildEqual(t)
}

func TestDryRunRecordedNotEnforced(t *testing.T) {
	ctx := context.Background()
	e := newPromoEnv(t)
	e.publish(t, testPolicy(t, 0, false))
	draft, err := e.reg.StartPolicyDryRun(ctx, authorActor, testPolicy(t, 0, true), PublishOptions{MinCoverage: -1})
	if err != nil {
		t.Fatal(err)
	}
	e.pushSigned(t, "m", "1", true)
	res := e.promote(t, "m", "1", "prod", "")
	dr := res.Decision.DryRun
	if res.Decision.Status != StatusAllowed || dr == nil || dr.PolicySet != draft.Digest || dr.Result == nil || dr.Result.Allow {
		t.Fatalf("with a deny-all draft: got %s, dry run %+v; want allowed, draft denying", res.Decision.Status, dr)
	}
	if _, err := e.reg.StopPolicyDryRun(ctx, authorActor, "seen enough"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.StopPolicyDryRun(ctx, authorActor, ""); !errors.Is(err, ErrFailedPrecondition) {
		t.Fatalf("stopping twice: got %v, want ErrFailedPrecondition", err)
	}
	e.pushSigned(t, "m", "2", true)
	res = e.promote(t, "m", "2", "prod", "1")
	if res.Decision.DryRun != nil {
		t.Fatalf("after stopping the dry run: got %+v", res.Decision.DryRun)
	}
	// Replaying with the draft shows the flips.
	p, err := e.reg.preparePolicy(ctx, e.log, draft.Digest)
	if err != nil {
		t.Fatal(err)
	}
	ds := allDecisions(t, e.reg, DecisionFilter{})
	rep, err := policy.Replay(ctx, p, Recorded(ds))
	if err != nil || len(rep.Changes) != 2 || rep.Changes[0].Kind != policy.AllowToDeny {
		t.Fatalf("replay with the draft: got %+v, %v; want 2 allow_to_deny", rep, err)
	}
	checkReplaysOwnSets(t, e.reg)
	e.checkRebuildEqual(t)
}

func TestLargePolicySetGoesToBlob(t *testing.T) {
	ctx := context.Background()
	e := newPromoEnv(t)
	files := testPolicy(t, 0, false)
	files[0].Data = append([]byte("# "+strings.Repeat("long commentary ", 5000)+"\n"), files[0].Data...)
	ps := e.publish(t, files)
	if ps.BodyBlob == "" {
		t.Fatalf("a %d-byte set was kept inline", len(files[0].Data))
	}
	// Compile it again from the blob store, as a restarted server would.
	preparedPolicies.Delete(ps.Digest)
	e.pushSigned(t, "m", "1", true)
	if res := e.promote(t, "m", "1", "prod", ""); res.Decision.Status != StatusAllowed || res.Decision.PolicySet != ps.Digest {
		t.Fatalf("promotion under the large set: got %s by %s", res.Decision.Status, res.Decision.PolicySet)
	}
	got, gotFiles, err := e.reg.GetPolicySet(ctx, ps.Digest)
	if err != nil || got.BodyBlob != ps.BodyBlob || len(gotFiles) != 2 || !bytes.Equal(gotFiles[0].Data, files[0].Data) {
		t.Fatalf("GetPolicySet: got %+v, %v", got, err)
	}
	bd, _ := blob.ParseDigest(ps.BodyBlob)
	if !e.reg.IsBlobReferenced(bd) {
		t.Fatalf("policy body blob is not referenced")
	}
	e.checkRebuildEqual(t)
}

func TestLargeDecisionInputGoesToBlob(t *testing.T) {
	ctx := context.Background()
	defer func(n int) { decisionInlineLimit = n }(decisionInlineLimit)
	decisionInlineLimit = 800
	e := newPromoEnv(t)
	e.publish(t, testPolicy(t, 0, false))
	e.pushSigned(t, "m", "1", true)
	res := e.promote(t, "m", "1", "prod", "")
	d := res.Decision
	if d.InputBlob == "" || len(d.Input) == 0 || d.Status != StatusAllowed {
		t.Fatalf("decision: blob %q, %d input bytes, %s; want the input in a blob", d.InputBlob, len(d.Input), d.Status)
	}
	entry, _ := e.log.Entry(d.Index)
	if bytes.Contains(entry, []byte(`"input":`)) {
		t.Fatalf("decision entry holds the input inline: %s", entry)
	}
	bd, _ := blob.ParseDigest(d.InputBlob)
	if !e.reg.IsBlobReferenced(bd) {
		t.Fatalf("input blob is not referenced")
	}
	got, err := e.reg.GetDecision(ctx, d.Index)
	if err != nil || !bytes.Equal(got.Input, d.Input) {
		t.Fatalf("GetDecision: %v", err)
	}
	checkReplaysOwnSets(t, e.reg)
	e.checkRebuildEqual(t)
}

// TestPromoteRefusesDigitOnlyID: decisions are also looked up by ledger
// index, so a request id of digits only would name two things.
func TestPromoteRefusesDigitOnlyID(t *testing.T) {
	e := newPromoEnv(t)
	e.pushSigned(t, "m", "1.0", true)
	size := e.log.Size()
	_, err := e.reg.Promote(context.Background(), requesterActor, PromoteInput{ID: "6", Model: "m", Alias: "staging", Version: "1.0", ExpectUnset: true, Reason: "CHG-1"})
	wantErr(t, err, ErrInvalidArgument, `promotion request id "6" is all digits`)
	if e.log.Size() != size {
		t.Fatalf("a refused request appended %d entries", e.log.Size()-size)
	}
	if _, err := e.reg.Promote(context.Background(), requesterActor, PromoteInput{ID: "req-6", Model: "m", Alias: "staging", Version: "1.0", ExpectUnset: true, Reason: "CHG-1"}); err != nil {
		t.Fatalf("id with a letter: %v", err)
	}
}
