package server

import (
	"context"
	"encoding/json"
	"fmt"

	"connectrpc.com/connect"

	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
	"github.com/hallmark-dev/hallmark/policy"
	"github.com/hallmark-dev/hallmark/registry"
)

// promotionService implements registryv1connect.PromotionServiceHandler over
// the registry's promotions.
type promotionService struct{ s *server }

func policyResultPB(d *policy.Decision) *registryv1.PolicyResult {
	if d == nil {
		return nil
	}
	out := &registryv1.PolicyResult{Allow: d.Allow, RequiredApprovals: int64(d.RequiredApprovals)}
	for _, r := range d.Deny {
		out.Deny = append(out.Deny, &registryv1.PolicyReason{Rule: r.Rule, Message: r.Message})
	}
	for _, r := range d.Warn {
		out.Warn = append(out.Warn, &registryv1.PolicyReason{Rule: r.Rule, Message: r.Message})
	}
	return out
}

func decisionPB(d registry.DecisionRecord) *registryv1.Decision {
	out := &registryv1.Decision{
		Index: d.Index, RequestId: d.Request, Model: d.Model, Alias: d.Alias, Trigger: d.Trigger, Actor: d.Actor,
		Time: ts(d.Time), PolicySet: d.PolicySet, InputJson: string(d.Input), InputSha256: d.InputSHA256,
		Result: policyResultPB(&d.Result), Status: d.Status, OpaVersion: d.OPAVersion, EvalNs: d.EvalNanos,
	}
	if d.DryRun != nil {
		out.DryRun = &registryv1.DryRunResult{PolicySet: d.DryRun.PolicySet, Result: policyResultPB(d.DryRun.Result), Error: d.DryRun.Error}
	}
	return out
}

func promotionPB(p registry.PromotionRequest) *registryv1.Promotion {
	out := &registryv1.Promotion{
		Id: p.ID, Model: p.Model, Alias: p.Alias, VersionDigest: p.Version, VersionLabel: p.Label, PreviousDigest: p.Previous,
		Reason: p.Reason, Rollback: p.Rollback, Requester: p.Requester, RequesterName: p.RequesterName,
		CreateTime: ts(p.Created), UpdateTime: ts(p.Updated), LedgerIndex: p.LedgerIndex, Status: p.Status,
		Decisions: p.Decisions, SupersededBy: p.SupersededBy,
	}
	for _, a := range p.Approvals {
		out.Approvals = append(out.Approvals, &registryv1.Approval{
			Approver: a.Approver, Name: a.Name, Meaning: a.Meaning, Comment: a.Comment, Time: ts(a.At),
			Signed: a.Signed, SignatureValid: a.SignatureValid, KeyFingerprint: a.KeyFingerprint,
			SignedAt: ts(a.SignedAt), LedgerIndex: a.LedgerIndex,
		})
	}
	return out
}

func (h promotionService) RequestPromotion(ctx context.Context, req *connect.Request[registryv1.RequestPromotionRequest]) (*connect.Response[registryv1.RequestPromotionResponse], error) {
	actor, err := mustActor(ctx)
	if err != nil {
		return nil, err
	}
	in := registry.PromoteInput{Model: req.Msg.GetModel(), Alias: req.Msg.GetAlias(), Version: req.Msg.GetVersion(), Reason: req.Msg.GetReason(), ID: req.Msg.GetId()}
	switch e := req.Msg.GetExpect().(type) {
	case *registryv1.RequestPromotionRequest_ExpectVersion:
		in.ExpectVersion = e.ExpectVersion
	case *registryv1.RequestPromotionRequest_ExpectUnset:
		in.ExpectUnset = e.ExpectUnset
	}
	res, err := h.s.reg.Promote(ctx, actor, in)
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&registryv1.RequestPromotionResponse{Promotion: promotionPB(res.Request), Decision: decisionPB(res.Decision),
		WaitingFor: int64(h.s.reg.WaitingFor(res.Request, res.Decision))}), nil
}

func (h promotionService) Approve(ctx context.Context, req *connect.Request[registryv1.ApproveRequest]) (*connect.Response[registryv1.ApproveResponse], error) {
	actor, err := mustActor(ctx)
	if err != nil {
		return nil, err
	}
	in := registry.ApproveInput{Request: req.Msg.GetRequestId(), Meaning: req.Msg.GetMeaning(), Comment: req.Msg.GetComment(), Signature: req.Msg.GetSignature()}
	if st := req.Msg.GetSignedAt(); st != nil {
		in.SignedAt = st.AsTime()
	}
	res, err := h.s.reg.Approve(ctx, actor, in)
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&registryv1.ApproveResponse{Promotion: promotionPB(res.Request), Decision: decisionPB(res.Decision),
		WaitingFor: int64(h.s.reg.WaitingFor(res.Request, res.Decision))}), nil
}

func (h promotionService) GetPromotion(ctx context.Context, req *connect.Request[registryv1.GetPromotionRequest]) (*connect.Response[registryv1.GetPromotionResponse], error) {
	p, err := h.s.reg.GetPromotion(ctx, req.Msg.GetId())
	if err != nil {
		return nil, toConnectError(err)
	}
	out := &registryv1.GetPromotionResponse{Promotion: promotionPB(p)}
	if n := len(p.Decisions); n > 0 {
		d, err := h.s.reg.GetDecision(ctx, p.Decisions[n-1])
		if err != nil {
			return nil, toConnectError(err)
		}
		out.LatestDecision = decisionPB(d)
		out.WaitingFor = int64(h.s.reg.WaitingFor(p, d))
	}
	return connect.NewResponse(out), nil
}

func (h promotionService) ListPromotions(ctx context.Context, req *connect.Request[registryv1.ListPromotionsRequest]) (*connect.Response[registryv1.ListPromotionsResponse], error) {
	ps, err := h.s.reg.ListPromotions(ctx, req.Msg.GetModel())
	if err != nil {
		return nil, toConnectError(err)
	}
	out := &registryv1.ListPromotionsResponse{Promotions: make([]*registryv1.Promotion, len(ps))}
	for i, p := range ps {
		out.Promotions[i] = promotionPB(p)
	}
	return connect.NewResponse(out), nil
}

func (h promotionService) GetDecision(ctx context.Context, req *connect.Request[registryv1.GetDecisionRequest]) (*connect.Response[registryv1.GetDecisionResponse], error) {
	index := req.Msg.GetIndex()
	if id := req.Msg.GetRequestId(); id != "" {
		p, err := h.s.reg.GetPromotion(ctx, id)
		if err != nil {
			return nil, toConnectError(err)
		}
		if len(p.Decisions) == 0 {
			return nil, toConnectError(&registry.Error{Kind: registry.ErrNotFound, Msg: fmt.Sprintf("promotion request %s has no decision", id)})
		}
		index = p.Decisions[len(p.Decisions)-1]
	}
	d, err := h.s.reg.GetDecision(ctx, index)
	if err != nil {
		return nil, toConnectError(err)
	}
	out := &registryv1.GetDecisionResponse{Decision: decisionPB(d)}
	if req.Msg.GetExplain() {
		ex, err := h.s.reg.ExplainDecision(ctx, d.Index)
		if err != nil {
			return nil, toConnectError(fmt.Errorf("explaining decision %d: %w", d.Index, err))
		}
		b, err := json.Marshal(ex)
		if err != nil {
			return nil, toConnectError(fmt.Errorf("encoding the explanation of decision %d: %w", d.Index, err))
		}
		out.ExplanationJson = string(b)
	}
	return connect.NewResponse(out), nil
}

func (h promotionService) ListDecisions(ctx context.Context, req *connect.Request[registryv1.ListDecisionsRequest]) (*connect.Response[registryv1.ListDecisionsResponse], error) {
	f := registry.DecisionFilter{From: req.Msg.GetFromIndex(), Model: req.Msg.GetModel()}
	if s := req.Msg.GetSince(); s != nil {
		f.Since = s.AsTime()
	}
	ds, next, err := h.s.reg.ListDecisions(ctx, f, int(req.Msg.GetPageSize()))
	if err != nil {
		return nil, toConnectError(err)
	}
	out := &registryv1.ListDecisionsResponse{NextFromIndex: next, Decisions: make([]*registryv1.Decision, len(ds))}
	for i, d := range ds {
		out.Decisions[i] = decisionPB(d)
	}
	return connect.NewResponse(out), nil
}

func (h promotionService) SetApproverKey(ctx context.Context, req *connect.Request[registryv1.SetApproverKeyRequest]) (*connect.Response[registryv1.SetApproverKeyResponse], error) {
	actor, err := mustActor(ctx)
	if err != nil {
		return nil, err
	}
	k, err := h.s.reg.SetPrincipalKey(ctx, actor, req.Msg.GetPrincipalId(), []byte(req.Msg.GetPublicKeyPem()))
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&registryv1.SetApproverKeyResponse{PrincipalId: k.Principal, Fingerprint: k.Fingerprint, LedgerIndex: k.LedgerIndex}), nil
}

// setAliasByPromotion is what SetAlias does since alias moves are
// policy-gated: it files a promotion request. An allowed decision returns
// the moved alias; a waiting or denied one is FAILED_PRECONDITION naming
// the request, so that no alias moves without a recorded decision and old
// clients learn where their request went.
func (s *server) setAliasByPromotion(ctx context.Context, actor registry.Actor, in registry.SetAliasInput) (registry.Alias, error) {
	reason := in.Reason
	if reason == "" {
		reason = "alias set"
	}
	res, err := s.reg.Promote(ctx, actor, registry.PromoteInput{Model: in.Model, Alias: in.Alias, Version: in.Version,
		ExpectVersion: in.ExpectVersion, ExpectUnset: in.ExpectUnset, Reason: reason})
	if err != nil {
		return registry.Alias{}, err
	}
	if res.Moved != nil {
		return *res.Moved, nil
	}
	var why string
	switch res.Decision.Status {
	case registry.StatusWaiting:
		why = fmt.Sprintf("waiting for %d approval(s): hallmark approve %s", s.reg.WaitingFor(res.Request, res.Decision), res.Request.ID)
	default:
		why = "denied: " + denySummary(res.Decision.Result)
	}
	return registry.Alias{}, &registry.Error{Kind: registry.ErrFailedPrecondition,
		Msg: fmt.Sprintf("alias moves are promotions: request %s recorded (decision %d), %s", res.Request.ID, res.Decision.Index, why)}
}

func denySummary(d policy.Decision) string {
	s := ""
	for i, r := range d.Deny {
		if i > 0 {
			s += "; "
		}
		s += r.Rule + ": " + r.Message
	}
	return s
}
