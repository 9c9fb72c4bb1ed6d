package server

import (
	"context"

	"connectrpc.com/connect"

	policyv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/policy/v1"
	"github.com/hallmark-dev/hallmark/policy"
	"github.com/hallmark-dev/hallmark/registry"
)

// policyService implements policyv1connect.PolicyServiceHandler over the
// registry's policy sets.
type policyService struct{ s *server }

func policySetPB(p registry.PolicySet) *policyv1.PolicySet {
	out := &policyv1.PolicySet{
		Digest: p.Digest, Default: p.Default, Published: p.Published, Author: p.Author, AuthorName: p.AuthorName,
		PublishTime: ts(p.Time), LedgerIndex: p.LedgerIndex, DryRun: p.DryRun, TestsPassed: int64(p.TestsPassed),
		Coverage: p.Coverage, MinCoverage: p.MinCoverage, OpaVersion: p.OPAVersion, CapabilitiesVersion: p.CapabilitiesVersion,
		SchemaVersion: int64(p.SchemaVersion), BodyBlob: p.BodyBlob,
	}
	for _, t := range p.Tests {
		out.Tests = append(out.Tests, &policyv1.PolicyTest{Name: t.Name, File: t.File, Line: int64(t.Line), Status: t.Status})
	}
	return out
}

func policyFiles(fs []*policyv1.PolicyFile) []policy.File {
	out := make([]policy.File, len(fs))
	for i, f := range fs {
		out[i] = policy.File{Name: f.GetName(), Data: []byte(f.GetText())}
	}
	return out
}

func (s *server) publishOptions() registry.PublishOptions {
	return registry.PublishOptions{MinCoverage: s.cfg.PolicyMinCoverage}
}

func (h policyService) PublishPolicySet(ctx context.Context, req *connect.Request[policyv1.PublishPolicySetRequest]) (*connect.Response[policyv1.PublishPolicySetResponse], error) {
	actor, err := mustActor(ctx)
	if err != nil {
		return nil, err
	}
	ps, err := h.s.reg.PublishPolicySet(ctx, actor, policyFiles(req.Msg.GetFiles()), h.s.publishOptions())
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&policyv1.PublishPolicySetResponse{PolicySet: policySetPB(ps)}), nil
}

func (h policyService) StartDryRun(ctx context.Context, req *connect.Request[policyv1.StartDryRunRequest]) (*connect.Response[policyv1.StartDryRunResponse], error) {
	actor, err := mustActor(ctx)
	if err != nil {
		return nil, err
	}
	ps, err := h.s.reg.StartPolicyDryRun(ctx, actor, policyFiles(req.Msg.GetFiles()), h.s.publishOptions())
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&policyv1.StartDryRunResponse{PolicySet: policySetPB(ps)}), nil
}

func (h policyService) StopDryRun(ctx context.Context, req *connect.Request[policyv1.StopDryRunRequest]) (*connect.Response[policyv1.StopDryRunResponse], error) {
	actor, err := mustActor(ctx)
	if err != nil {
		return nil, err
	}
	d, err := h.s.reg.StopPolicyDryRun(ctx, actor, req.Msg.GetReason())
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&policyv1.StopDryRunResponse{Digest: d}), nil
}

func (h policyService) GetPolicySet(ctx context.Context, req *connect.Request[policyv1.GetPolicySetRequest]) (*connect.Response[policyv1.GetPolicySetResponse], error) {
	ps, files, err := h.s.reg.GetPolicySet(ctx, req.Msg.GetDigest())
	if err != nil {
		return nil, toConnectError(err)
	}
	st, err := h.s.reg.PolicyStatus(ctx)
	if err != nil {
		return nil, toConnectError(err)
	}
	out := &policyv1.GetPolicySetResponse{PolicySet: policySetPB(ps), ActiveDigest: st.Active, DryRunDigest: st.DryRun}
	for _, f := range files {
		out.Files = append(out.Files, &policyv1.PolicyFile{Name: f.Name, Text: string(f.Data)})
	}
	return connect.NewResponse(out), nil
}

func (h policyService) ListPolicySets(ctx context.Context, req *connect.Request[policyv1.ListPolicySetsRequest]) (*connect.Response[policyv1.ListPolicySetsResponse], error) {
	sets, err := h.s.reg.ListPolicySets(ctx)
	if err != nil {
		return nil, toConnectError(err)
	}
	st, err := h.s.reg.PolicyStatus(ctx)
	if err != nil {
		return nil, toConnectError(err)
	}
	out := &policyv1.ListPolicySetsResponse{ActiveDigest: st.Active, DryRunDigest: st.DryRun}
	for _, p := range sets {
		out.PolicySets = append(out.PolicySets, policySetPB(p))
	}
	return connect.NewResponse(out), nil
}
