package server

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	policyv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/policy/v1"
	"github.com/hallmark-dev/hallmark/api/gen/hallmark/policy/v1/policyv1connect"
	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
	"github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1/registryv1connect"
	"github.com/hallmark-dev/hallmark/policy"
)

func (ts *testServer) promotions(token string) registryv1connect.PromotionServiceClient {
	return registryv1connect.NewPromotionServiceClient(ts.h2c, ts.URL, authed(token), connect.WithGRPC())
}

func (ts *testServer) policies(token string) policyv1connect.PolicyServiceClient {
	return policyv1connect.NewPolicyServiceClient(ts.h2c, ts.URL, authed(token))
}

// approvalSet needs n approvals for every move; its tests cover it.
func approvalSet(n string) []*policyv1.PolicyFile {
	return []*policyv1.PolicyFile{
		{Name: "p.rego", Text: `package hallmark.promotion

decision := {"allow": count(deny) == 0, "deny": deny, "warn": set(), "required_approvals": ` + n + `}

approvers contains a.approver if {
	some a in input.approvals
	a.meaning == "approved"
}

deny contains {"rule": "approvals.insufficient", "message": "more approvals needed"} if count(approvers) < ` + n + `
`},
		{Name: "p_test.rego", Text: `package hallmark.promotion_test

import data.hallmark.promotion

test_none if not promotion.decision.allow with input.approvals as []

test_enough if promotion.decision.allow with input.approvals as [{"approver": "a", "meaning": "approved", "at": "2026-01-01T00:00:00Z"}, {"approver": "b", "meaning": "approved", "at": "2026-01-01T00:00:00Z"}]
`},
	}
}

func TestPromotionOverConnect(t *testing.T) {
	ctx := context.Background()
	ts := newTestServer(t)
	pub := ts.addPrincipal("ci", registryv1.Role_ROLE_PUBLISHER)
	rq := ts.addPrincipal("rq", registryv1.Role_ROLE_PUBLISHER)
	alice := ts.addPrincipal("alice", registryv1.Role_ROLE_APPROVER)
	pa := ts.addPrincipal("pa", registryv1.Role_ROLE_POLICY_AUTHOR)
	aud := ts.addPrincipal("aud", registryv1.Role_ROLE_AUDITOR)
	for _, l := range []string{"1", "2"} {
		if _, err := ts.push(pub, "m", l, map[string]string{"w.bin": "weights " + l}); err != nil {
			t.Fatal(err)
		}
	}
	// A set with a failing test is refused with file:line; nothing recorded.
	bad := approvalSet("1")
	bad[1].Text += "\ntest_broken if {\n\tfalse\n}\n"
	before := ts.st.Ledger.Size()
	_, err := ts.policies(pa).PublishPolicySet(ctx, connect.NewRequest(&policyv1.PublishPolicySetRequest{Files: bad}))
	wantCode(t, "publishing a failing set", err, connect.CodeFailedPrecondition)
	if err == nil || !strings.Contains(err.Error(), "p_test.rego:") {
		t.Fatalf("refusal: got %v, want it to name p_test.rego:line", err)
	}
	if ts.st.Ledger.Size() != before {
		t.Fatalf("a refused publication grew the ledger")
	}
	if _, err := ts.policies(pa).PublishPolicySet(ctx, connect.NewRequest(&policyv1.PublishPolicySetRequest{Files: approvalSet("1")})); err != nil {
		t.Fatal(err)
	}
	res, err := ts.promotions(rq).RequestPromotion(ctx, connect.NewRequest(&registryv1.RequestPromotionRequest{
		Model: "m", Version: "1", Alias: "prod", Expect: &registryv1.RequestPromotionRequest_ExpectUnset{ExpectUnset: true}, Reason: "CHG-1"}))
	if err != nil {
		t.Fatal(err)
	}
	if d := res.Msg.GetDecision(); d.GetStatus() != "waiting" || res.Msg.GetWaitingFor() != 1 || d.GetInputJson() == "" || d.GetOpaVersion() != policy.OPAVersion {
		t.Fatalf("request: got %+v", res.Msg)
	}
	id := res.Msg.GetPromotion().GetId()
	// SetAlias files a request too: waiting, named in the refusal.
	_, err = ts.registry(rq).SetAlias(ctx, connect.NewRequest(&registryv1.SetAliasRequest{Model: "m", Alias: "staging", Version: "2",
		Expect: &registryv1.SetAliasRequest_ExpectUnset{ExpectUnset: true}}))
	wantCode(t, "SetAlias waiting", err, connect.CodeFailedPrecondition)
	if err == nil || !strings.Contains(err.Error(), "waiting for 1 approval") {
		t.Fatalf("SetAlias: got %v", err)
	}
	// The requester may not approve; the approver role is required.
	_, err = ts.promotions(rq).Approve(ctx, connect.NewRequest(&registryv1.ApproveRequest{RequestId: id, Meaning: "approved"}))
	wantCode(t, "requester approving", err, connect.CodePermissionDenied)
	ap, err := ts.promotions(alice).Approve(ctx, connect.NewRequest(&registryv1.ApproveRequest{RequestId: id, Meaning: "approved", Comment: "ok"}))
	if err != nil {
		t.Fatal(err)
	}
	if ap.Msg.GetDecision().GetStatus() != "allowed" || ap.Msg.GetPromotion().GetApprovals()[0].GetName() != "Test alice" {
		t.Fatalf("approval: got %+v", ap.Msg)
	}
	v, err := ts.registry(aud).GetVersion(ctx, connect.NewRequest(&registryv1.GetVersionRequest{Model: "m", Ref: "prod"}))
	if err != nil || v.Msg.GetVersion().GetLabel() != "1" {
		t.Fatalf("prod after approval: %v, %v", v, err)
	}
	_, err = ts.promotions(alice).Approve(ctx, connect.NewRequest(&registryv1.ApproveRequest{RequestId: id, Meaning: "approved"}))
	wantCode(t, "approving twice", err, connect.CodeFailedPrecondition)

	// Decisions: by request id (explained) and listed for replay.
	gd, err := ts.promotions(aud).GetDecision(ctx, connect.NewRequest(&registryv1.GetDecisionRequest{RequestId: id, Explain: true}))
	if err != nil || gd.Msg.GetDecision().GetStatus() != "allowed" || gd.Msg.GetExplanationJson() == "" {
		t.Fatalf("GetDecision: %v, %v", gd, err)
	}
	ld, err := ts.promotions(aud).ListDecisions(ctx, connect.NewRequest(&registryv1.ListDecisionsRequest{Model: "m"}))
	if err != nil || len(ld.Msg.GetDecisions()) != 3 || ld.Msg.GetNextFromIndex() != 0 {
		t.Fatalf("ListDecisions: got %d decisions (next %d), %v; want 3 and no next page", len(ld.Msg.GetDecisions()), ld.Msg.GetNextFromIndex(), err)
	}
	// Two to a page: next_from_index leads to the third, then to no more.
	p1, err := ts.promotions(aud).ListDecisions(ctx, connect.NewRequest(&registryv1.ListDecisionsRequest{Model: "m", PageSize: 2}))
	if err != nil || len(p1.Msg.GetDecisions()) != 2 || p1.Msg.GetNextFromIndex() != ld.Msg.GetDecisions()[2].GetIndex() {
		t.Fatalf("ListDecisions page 1: got %v, %v; want 2 decisions and next at the third", p1.Msg, err)
	}
	p2, err := ts.promotions(aud).ListDecisions(ctx, connect.NewRequest(&registryv1.ListDecisionsRequest{Model: "m", PageSize: 2, FromIndex: p1.Msg.GetNextFromIndex()}))
	if err != nil || len(p2.Msg.GetDecisions()) != 1 || p2.Msg.GetDecisions()[0].GetIndex() != ld.Msg.GetDecisions()[2].GetIndex() || p2.Msg.GetNextFromIndex() != 0 {
		t.Fatalf("ListDecisions page 2: got %v, %v; want the third decision and no next page", p2.Msg, err)
	}
	_, err = ts.promotions(aud).ListDecisions(ctx, connect.NewRequest(&registryv1.ListDecisionsRequest{PageSize: -1}))
	wantCode(t, "ListDecisions with a negative page size", err, connect.CodeInvalidArgument)
	_, err = ts.promotions(rq).ListDecisions(ctx, connect.NewRequest(&registryv1.ListDecisionsRequest{}))
	wantCode(t, "ListDecisions by a publisher", err, connect.CodePermissionDenied)
	gp, err := ts.policies(aud).GetPolicySet(ctx, connect.NewRequest(&policyv1.GetPolicySetRequest{}))
	if err != nil || gp.Msg.GetPolicySet().GetDigest() != gd.Msg.GetDecision().GetPolicySet() || len(gp.Msg.GetFiles()) != 2 {
		t.Fatalf("GetPolicySet: %v, %v", gp, err)
	}
	ts.verifyLedger()
}

// BenchmarkPromotionLatency measures end-to-end promotion latency over the
// API (Connect, binary protobuf, h2c) on a real server: "allowed" is one
// RequestPromotion that the policy allows at once (request, decision and
// alias move in one synced append); "approved" is a RequestPromotion that
// waits plus the Approve that allows it (two appends). Aliases move back
// and forth between two versions; each model takes 50 moves, so the alias
// history in the input stays realistic.
func BenchmarkPromotionLatency(b *testing.B) {
	for _, mode := range []string{"allowed", "approved"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			ts := newTestServer(b)
			// The test server's permissive set allows every move at once.
			if mode == "approved" {
				if _, err := ts.policies(ts.admin).PublishPolicySet(ctx, connect.NewRequest(&policyv1.PublishPolicySetRequest{Files: approvalSet("1")})); err != nil {
					b.Fatal(err)
				}
			}
			rq := ts.addPrincipal("rq", registryv1.Role_ROLE_PUBLISHER)
			alice := ts.addPrincipal("alice", registryv1.Role_ROLE_APPROVER)
			const perModel = 50
			models := (b.N + perModel - 1) / perModel
			for m := range models {
				for _, l := range []string{"a", "b"} {
					if _, err := ts.push(ts.admin, modelName(m), l, map[string]string{"w.bin": modelName(m) + l}); err != nil {
						b.Fatal(err)
					}
				}
			}
			pc, ac := ts.promotions(rq), ts.promotions(alice)
			lat := make([]time.Duration, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				m, k := modelName(i/perModel), i%perModel
				req := &registryv1.RequestPromotionRequest{Model: m, Alias: "prod", Reason: "bench"}
				req.Version, req.Expect = "a", &registryv1.RequestPromotionRequest_ExpectUnset{ExpectUnset: true}
				if k > 0 {
					from, to := "a", "b"
					if k%2 == 0 {
						from, to = "b", "a"
					}
					req.Version, req.Expect = to, &registryv1.RequestPromotionRequest_ExpectVersion{ExpectVersion: from}
				}
				t0 := time.Now()
				res, err := pc.RequestPromotion(ctx, connect.NewRequest(req))
				if err != nil {
					b.Fatal(err)
				}
				if mode == "approved" {
					if res, err := ac.Approve(ctx, connect.NewRequest(&registryv1.ApproveRequest{RequestId: res.Msg.GetPromotion().GetId(), Meaning: "approved"})); err != nil {
						b.Fatal(err)
					} else if res.Msg.GetDecision().GetStatus() != "allowed" {
						b.Fatalf("approved promotion: %s", res.Msg.GetDecision().GetStatus())
					}
				} else if res.Msg.GetDecision().GetStatus() != "allowed" {
					b.Fatalf("promotion: %s", res.Msg.GetDecision().GetStatus())
				}
				lat[i] = time.Since(t0)
			}
			b.StopTimer()
			slices.Sort(lat)
			q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
			b.ReportMetric(q(0.50), "p50-µs")
			b.ReportMetric(q(0.99), "p99-µs")
		})
	}
}

func modelName(i int) string {
	return "bench-" + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676%26))
}
