package server

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
	"github.com/hallmark-dev/hallmark/registry"
	"github.com/hallmark-dev/hallmark/registry/blob"
	"github.com/hallmark-dev/hallmark/signing"
)

// Conversions between the registry's plain Go types and the API's
// messages. The registry knows nothing of protobuf; this file is the only
// place that knows both.

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func versionPB(v registry.Version) *registryv1.Version {
	out := &registryv1.Version{
		Model:                 v.Model,
		Label:                 v.Label,
		Digest:                v.Digest,
		Metadata:              metadataPB(v.Metadata),
		Signature:             signaturePB(v.Signature),
		Creator:               v.Creator,
		CreateTime:            ts(v.Created),
		LedgerIndex:           v.LedgerIndex,
		Revoked:               v.Revoked,
		RevokeReason:          v.RevokeReason,
		SignatureBundleDigest: v.Signature.Bundle,
	}
	out.Files = make([]*registryv1.File, len(v.Files))
	for i, f := range v.Files {
		out.Files[i] = &registryv1.File{Path: f.Path, Size: f.Size, Sha256: blob.Digest(f.Digest).String()}
	}
	return out
}

func signaturePB(s registry.SignatureCheck) *registryv1.SignatureCheck {
	if !s.Present {
		return &registryv1.SignatureCheck{}
	}
	return &registryv1.SignatureCheck{
		Present: s.Present,
		Valid:   s.Valid,
		Method:  s.Method,
		Signer:  s.Signer,
		Issuer:  s.Issuer,
		Error:   s.Error,
	}
}

func metadataPB(m registry.Metadata) *registryv1.Metadata {
	out := &registryv1.Metadata{
		Framework:   m.Framework,
		Metrics:     m.Metrics,
		Labels:      m.Labels,
		Description: m.Description,
	}
	l := m.Lineage
	if len(l.Datasets) > 0 || l.CodeRepository != "" || l.CodeCommit != "" || l.CIRunURL != "" || l.BaseModel != "" {
		out.Lineage = &registryv1.Lineage{
			CodeRepository: l.CodeRepository,
			CodeCommit:     l.CodeCommit,
			CiRunUrl:       l.CIRunURL,
			BaseModel:      l.BaseModel,
		}
		for _, d := range l.Datasets {
			out.Lineage.Datasets = append(out.Lineage.Datasets, &registryv1.DatasetRef{Name: d.Name, Digest: d.Digest, Uri: d.URI})
		}
	}
	return out
}

func metadataFromPB(m *registryv1.Metadata) registry.Metadata {
	if m == nil {
		return registry.Metadata{}
	}
	out := registry.Metadata{
		Framework:   m.GetFramework(),
		Metrics:     m.GetMetrics(),
		Labels:      m.GetLabels(),
		Description: m.GetDescription(),
	}
	if l := m.GetLineage(); l != nil {
		out.Lineage = registry.Lineage{
			CodeRepository: l.GetCodeRepository(),
			CodeCommit:     l.GetCodeCommit(),
			CIRunURL:       l.GetCiRunUrl(),
			BaseModel:      l.GetBaseModel(),
		}
		for _, d := range l.GetDatasets() {
			out.Lineage.Datasets = append(out.Lineage.Datasets, registry.DatasetRef{Name: d.GetName(), Digest: d.GetDigest(), URI: d.GetUri()})
		}
	}
	return out
}

// filesFromPB converts a request's file list. Digests are parsed here so
// that a malformed one is reported with its path; everything else (paths,
// duplicates, sizes) is the registry's to validate.
func filesFromPB(files []*registryv1.File) ([]registry.File, error) {
	out := make([]registry.File, len(files))
	for i, f := range files {
		d, err := signing.ParseDigest(f.GetSha256())
		if err != nil || len(f.GetSha256()) != 64 {
			// Accept the "sha256:" prefix too, the form every other
			// digest in the API takes.
			bd, berr := blob.ParseDigest(f.GetSha256())
			if berr != nil {
				return nil, fmt.Errorf("%w: file %d (%s): sha256 %s: want 64 lower-case hex digits",
					registry.ErrInvalidArgument, i, registry.QuoteInput(f.GetPath()), registry.QuoteInput(f.GetSha256()))
			}
			d = signing.Digest(bd)
		}
		out[i] = registry.File{Path: f.GetPath(), Size: f.GetSize(), Digest: d}
	}
	return out, nil
}

func aliasPB(a registry.Alias) *registryv1.Alias {
	return &registryv1.Alias{
		Model:         a.Model,
		Name:          a.Name,
		VersionDigest: a.VersionDigest,
		VersionLabel:  a.VersionLabel,
		UpdatedBy:     a.UpdatedBy,
		UpdateTime:    ts(a.Updated),
		LedgerIndex:   a.LedgerIndex,
	}
}

func modelPB(m registry.Model) *registryv1.Model {
	out := &registryv1.Model{
		Name:         m.Name,
		Creator:      m.Creator,
		CreateTime:   ts(m.Created),
		VersionCount: m.VersionCount,
	}
	for _, a := range m.Aliases {
		out.Aliases = append(out.Aliases, aliasPB(a))
	}
	return out
}

var rolesPB = map[registry.Role]registryv1.Role{
	registry.RoleAdmin:        registryv1.Role_ROLE_ADMIN,
	registry.RolePublisher:    registryv1.Role_ROLE_PUBLISHER,
	registry.RoleApprover:     registryv1.Role_ROLE_APPROVER,
	registry.RolePolicyAuthor: registryv1.Role_ROLE_POLICY_AUTHOR,
	registry.RoleAuditor:      registryv1.Role_ROLE_AUDITOR,
	registry.RoleShadowAgent:  registryv1.Role_ROLE_SHADOW_AGENT,
}

func rolesFromPB(roles []registryv1.Role) ([]registry.Role, error) {
	out := make([]registry.Role, 0, len(roles))
	for _, r := range roles {
		found := false
		for dom, pb := range rolesPB {
			if pb == r {
				out = append(out, dom)
				found = true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("%w: role %s (%d) is not a role a principal can hold", registry.ErrInvalidArgument, r, int32(r))
		}
	}
	return out, nil
}

func principalPB(p registry.Principal) *registryv1.Principal {
	out := &registryv1.Principal{
		Id:         p.ID,
		Name:       p.Name,
		Revoked:    p.Revoked,
		CreatedBy:  p.CreatedBy,
		CreateTime: ts(p.Created),
	}
	for _, r := range p.Roles {
		out.Roles = append(out.Roles, rolesPB[r])
	}
	return out
}
