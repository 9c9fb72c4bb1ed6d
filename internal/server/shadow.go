package server

import (
	"context"
	"encoding/json"
	"fmt"

	"connectrpc.com/connect"

	shadowv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/shadow/v1"
	"github.com/hallmark-dev/hallmark/registry"
	"github.com/hallmark-dev/hallmark/shadow"
)

// shadowService implements shadowv1connect.ShadowServiceHandler over the
// registry's shadow deployments.
type shadowService struct{ s *server }

func comparatorFromPB(c *shadowv1.Comparator) shadow.ComparatorConfig {
	return shadow.ComparatorConfig{
		Kind: shadow.Kind(c.GetKind()), Pointer: c.GetPointer(), AbsTol: c.GetAbsTol(), RelTol: c.GetRelTol(),
		Labels: c.GetLabels(), Edges: c.GetEdges(),
	}
}

func shadowDeploymentPB(d registry.ShadowDeployment) *shadowv1.Deployment {
	return &shadowv1.Deployment{
		Id: d.ID, Model: d.Model, Alias: d.Alias,
		Candidate: d.Candidate, CandidateLabel: d.CandidateLabel,
		Baseline: d.Baseline, BaselineLabel: d.BaselineLabel,
		PolicySet: d.PolicySet,
		Comparator: &shadowv1.Comparator{
			Kind: d.Comparator.Kind, Pointer: d.Comparator.Pointer, AbsTol: d.Comparator.AbsTol, RelTol: d.Comparator.RelTol,
			Labels: d.Comparator.Labels, Edges: d.Comparator.Edges, Digest: d.Comparator.Digest,
		},
		SegmentHeader: d.SegmentHeader, SegmentPointer: d.SegmentPointer, MinSample: d.MinSample,
		AgentId: d.Agent, AgentPublicKey: d.AgentKey,
		StartedBy: d.StartedBy, StartedAt: ts(d.Started), UpdatedAt: ts(d.Updated),
		Stopped: d.Stopped, StoppedBy: d.StoppedBy, StoppedAt: ts(d.StoppedAt), StopReason: d.StopReason,
		LastSequence: d.LastSequence, Batches: d.Batches, LedgerIndex: d.LedgerIndex,
	}
}

func (h shadowService) StartShadow(ctx context.Context, req *connect.Request[shadowv1.StartShadowRequest]) (*connect.Response[shadowv1.StartShadowResponse], error) {
	actor, err := mustActor(ctx)
	if err != nil {
		return nil, err
	}
	m := req.Msg
	d, tok, err := h.s.reg.StartShadow(ctx, actor, registry.ShadowStartInput{
		Model: m.GetModel(), Candidate: m.GetCandidate(), Alias: m.GetAlias(),
		Comparator:    comparatorFromPB(m.GetComparator()),
		SegmentHeader: m.GetSegmentHeader(), SegmentPointer: m.GetSegmentPointer(),
		MinSample: m.GetMinSample(), AgentKey: m.GetAgentPublicKey(), ID: m.GetId(),
	})
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&shadowv1.StartShadowResponse{Deployment: shadowDeploymentPB(d), AgentToken: tok}), nil
}

func (h shadowService) GetShadow(ctx context.Context, req *connect.Request[shadowv1.GetShadowRequest]) (*connect.Response[shadowv1.GetShadowResponse], error) {
	d, sum, err := h.s.reg.GetShadow(ctx, req.Msg.GetId())
	if err != nil {
		return nil, toConnectError(err)
	}
	b, err := json.Marshal(sum)
	if err != nil {
		return nil, toConnectError(fmt.Errorf("encoding the summary of %s: %w", d.ID, err))
	}
	return connect.NewResponse(&shadowv1.GetShadowResponse{Deployment: shadowDeploymentPB(d), SummaryJson: string(b)}), nil
}

func (h shadowService) ListShadows(ctx context.Context, req *connect.Request[shadowv1.ListShadowsRequest]) (*connect.Response[shadowv1.ListShadowsResponse], error) {
	ds, err := h.s.reg.ListShadows(ctx, req.Msg.GetModel())
	if err != nil {
		return nil, toConnectError(err)
	}
	out := &shadowv1.ListShadowsResponse{Deployments: make([]*shadowv1.Deployment, len(ds))}
	for i, d := range ds {
		out.Deployments[i] = shadowDeploymentPB(d)
	}
	return connect.NewResponse(out), nil
}

func (h shadowService) StopShadow(ctx context.Context, req *connect.Request[shadowv1.StopShadowRequest]) (*connect.Response[shadowv1.StopShadowResponse], error) {
	actor, err := mustActor(ctx)
	if err != nil {
		return nil, err
	}
	d, err := h.s.reg.StopShadow(ctx, actor, req.Msg.GetId(), req.Msg.GetReason())
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&shadowv1.StopShadowResponse{Deployment: shadowDeploymentPB(d)}), nil
}

func (h shadowService) ReportEvidence(ctx context.Context, req *connect.Request[shadowv1.ReportEvidenceRequest]) (*connect.Response[shadowv1.ReportEvidenceResponse], error) {
	actor, err := mustActor(ctx)
	if err != nil {
		return nil, err
	}
	rep, err := h.s.reg.ReportShadowEvidence(ctx, actor, req.Msg.GetDeploymentId(), req.Msg.GetSignedBatch())
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&shadowv1.ReportEvidenceResponse{BatchId: rep.Batch, Sequence: rep.Sequence, Duplicate: rep.Duplicate, LedgerIndex: rep.LedgerIndex}), nil
}
