package server

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
	"github.com/hallmark-dev/hallmark/registry"
)

// registryService implements registryv1connect.RegistryServiceHandler over
// the registry. Authentication and authorisation happened in the
// interceptor; handlers convert, call and map errors.
type registryService struct{ s *server }

// mustActor returns the interceptor's actor. A handler reached without one
// is a wiring bug; refusing is the safe answer.
func mustActor(ctx context.Context) (registry.Actor, error) {
	a, ok := actorFrom(ctx)
	if !ok {
		return registry.Actor{}, connect.NewError(connect.CodeInternal, fmt.Errorf("no authenticated actor in the request context"))
	}
	return a, nil
}

func (h registryService) CreateVersion(ctx context.Context, req *connect.Request[registryv1.CreateVersionRequest]) (*connect.Response[registryv1.CreateVersionResponse], error) {
	actor, err := mustActor(ctx)
	if err != nil {
		return nil, err
	}
	files, err := filesFromPB(req.Msg.GetFiles())
	if err != nil {
		return nil, toConnectError(err)
	}
	v, existed, err := h.s.reg.CreateVersion(ctx, actor, registry.CreateVersionInput{
		Model:           req.Msg.GetModel(),
		Label:           req.Msg.GetLabel(),
		Files:           files,
		Metadata:        metadataFromPB(req.Msg.GetMetadata()),
		SignatureBundle: req.Msg.GetSignatureBundle(),
	})
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&registryv1.CreateVersionResponse{Version: versionPB(v), AlreadyExisted: existed}), nil
}

func (h registryService) GetVersion(ctx context.Context, req *connect.Request[registryv1.GetVersionRequest]) (*connect.Response[registryv1.GetVersionResponse], error) {
	v, err := h.s.reg.GetVersion(ctx, req.Msg.GetModel(), req.Msg.GetRef())
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&registryv1.GetVersionResponse{Version: versionPB(v)}), nil
}

func (h registryService) ListVersions(ctx context.Context, req *connect.Request[registryv1.ListVersionsRequest]) (*connect.Response[registryv1.ListVersionsResponse], error) {
	vs, next, err := h.s.reg.ListVersions(ctx, req.Msg.GetModel(), req.Msg.GetPageToken(), int(req.Msg.GetPageSize()))
	if err != nil {
		return nil, toConnectError(err)
	}
	out := &registryv1.ListVersionsResponse{NextPageToken: next, Versions: make([]*registryv1.Version, len(vs))}
	for i, v := range vs {
		out.Versions[i] = versionPB(v)
	}
	return connect.NewResponse(out), nil
}

func (h registryService) GetModel(ctx context.Context, req *connect.Request[registryv1.GetModelRequest]) (*connect.Response[registryv1.GetModelResponse], error) {
	m, err := h.s.reg.GetModel(ctx, req.Msg.GetName())
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&registryv1.GetModelResponse{Model: modelPB(m)}), nil
}

func (h registryService) ListModels(ctx context.Context, req *connect.Request[registryv1.ListModelsRequest]) (*connect.Response[registryv1.ListModelsResponse], error) {
	ms, next, err := h.s.reg.ListModels(ctx, req.Msg.GetPageToken(), int(req.Msg.GetPageSize()))
	if err != nil {
		return nil, toConnectError(err)
	}
	out := &registryv1.ListModelsResponse{NextPageToken: next, Models: make([]*registryv1.Model, len(ms))}
	for i, m := range ms {
		out.Models[i] = modelPB(m)
	}
	return connect.NewResponse(out), nil
}

func (h registryService) SetAlias(ctx context.Context, req *connect.Request[registryv1.SetAliasRequest]) (*connect.Response[registryv1.SetAliasResponse], error) {
	actor, err := mustActor(ctx)
	if err != nil {
		return nil, err
	}
	in := registry.SetAliasInput{
		Model:   req.Msg.GetModel(),
		Alias:   req.Msg.GetAlias(),
		Version: req.Msg.GetVersion(),
		Reason:  req.Msg.GetReason(),
	}
	switch e := req.Msg.GetExpect().(type) {
	case *registryv1.SetAliasRequest_ExpectVersion:
		in.ExpectVersion = e.ExpectVersion
	case *registryv1.SetAliasRequest_ExpectUnset:
		in.ExpectUnset = e.ExpectUnset
	}
	a, err := h.s.setAliasByPromotion(ctx, actor, in)
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&registryv1.SetAliasResponse{Alias: aliasPB(a)}), nil
}

func (h registryService) GetAliasHistory(ctx context.Context, req *connect.Request[registryv1.GetAliasHistoryRequest]) (*connect.Response[registryv1.GetAliasHistoryResponse], error) {
	moves, err := h.s.reg.AliasHistory(ctx, req.Msg.GetModel(), req.Msg.GetAlias())
	if err != nil {
		return nil, toConnectError(err)
	}
	out := &registryv1.GetAliasHistoryResponse{Moves: make([]*registryv1.Alias, len(moves))}
	for i, a := range moves {
		out.Moves[i] = aliasPB(a)
	}
	return connect.NewResponse(out), nil
}

func (h registryService) RevokeVersion(ctx context.Context, req *connect.Request[registryv1.RevokeVersionRequest]) (*connect.Response[registryv1.RevokeVersionResponse], error) {
	actor, err := mustActor(ctx)
	if err != nil {
		return nil, err
	}
	v, err := h.s.reg.RevokeVersion(ctx, actor, req.Msg.GetModel(), req.Msg.GetRef(), req.Msg.GetReason())
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&registryv1.RevokeVersionResponse{Version: versionPB(v)}), nil
}

// accessService implements registryv1connect.AccessServiceHandler.
type accessService struct{ s *server }

func (h accessService) AddPrincipal(ctx context.Context, req *connect.Request[registryv1.AddPrincipalRequest]) (*connect.Response[registryv1.AddPrincipalResponse], error) {
	actor, err := mustActor(ctx)
	if err != nil {
		return nil, err
	}
	roles, err := rolesFromPB(req.Msg.GetRoles())
	if err != nil {
		return nil, toConnectError(err)
	}
	p, tok, err := h.s.reg.AddPrincipal(ctx, actor, req.Msg.GetId(), req.Msg.GetName(), roles)
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&registryv1.AddPrincipalResponse{Principal: principalPB(p), Token: tok}), nil
}

func (h accessService) ListPrincipals(ctx context.Context, req *connect.Request[registryv1.ListPrincipalsRequest]) (*connect.Response[registryv1.ListPrincipalsResponse], error) {
	ps, err := h.s.reg.ListPrincipals(ctx)
	if err != nil {
		return nil, toConnectError(err)
	}
	out := &registryv1.ListPrincipalsResponse{Principals: make([]*registryv1.Principal, len(ps))}
	for i, p := range ps {
		out.Principals[i] = principalPB(p)
	}
	return connect.NewResponse(out), nil
}

func (h accessService) RevokePrincipal(ctx context.Context, req *connect.Request[registryv1.RevokePrincipalRequest]) (*connect.Response[registryv1.RevokePrincipalResponse], error) {
	actor, err := mustActor(ctx)
	if err != nil {
		return nil, err
	}
	p, err := h.s.reg.RevokePrincipal(ctx, actor, req.Msg.GetId(), req.Msg.GetReason())
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&registryv1.RevokePrincipalResponse{Principal: principalPB(p)}), nil
}

func (h accessService) WhoAmI(ctx context.Context, _ *connect.Request[registryv1.WhoAmIRequest]) (*connect.Response[registryv1.WhoAmIResponse], error) {
	actor, err := mustActor(ctx)
	if err != nil {
		return nil, err
	}
	p, err := h.s.reg.GetPrincipal(ctx, actor.ID)
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&registryv1.WhoAmIResponse{Principal: principalPB(p)}), nil
}
