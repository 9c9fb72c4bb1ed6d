package server

import (
	"slices"
	"strings"

	"github.com/hallmark-dev/hallmark/api/gen/hallmark/audit/v1/auditv1connect"
	"github.com/hallmark-dev/hallmark/api/gen/hallmark/ledger/v1/ledgerv1connect"
	"github.com/hallmark-dev/hallmark/api/gen/hallmark/policy/v1/policyv1connect"
	"github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1/registryv1connect"
	"github.com/hallmark-dev/hallmark/api/gen/hallmark/shadow/v1/shadowv1connect"
)

// Role names as the registry spells them. The table below is written with
// these strings so that it reads like the documentation.
const (
	roleAdmin        = "admin"
	rolePublisher    = "publisher"
	roleApprover     = "approver"
	rolePolicyAuthor = "policy-author"
	roleAuditor      = "auditor"
	roleShadowAgent  = "shadow-agent"
)

// allRoles lists every role, in the order documented in docs/api.md.
var allRoles = []string{roleAdmin, rolePublisher, roleApprover, rolePolicyAuthor, roleAuditor, roleShadowAgent}

// rule says which roles may call one procedure. admin may call everything
// in the table except personal procedures, so it is never listed.
type rule struct {
	// anyRole lets every authenticated principal call the procedure.
	anyRole bool
	// roles lists the non-admin roles that may call it.
	roles []string
	// personal procedures record the caller's own act in one of roles, so
	// holding admin does not stand in for the role: the registry would
	// refuse the act anyway, and the refusal belongs here, where the
	// message says which role is needed.
	personal bool
	// hint says what to do next when the rule refuses a caller.
	hint string
}

// Procedure names of the blob HTTP surface, authorised through the same
// table as the RPCs so that every entry point has exactly one rule.
const (
	blobReadProcedure  = "/v1/blobs#read"
	blobWriteProcedure = "/v1/blobs#write"
)

// readers may call every read-only procedure.
var readers = rule{anyRole: true}

// adminOnly is the rule of procedures only an admin may call.
var adminOnly = rule{}

// approverOnly is the rule of Approve (which records rejections too).
// Approvals are personal: only a principal holding approver may record one,
// admin included, as registry.checkApproval requires (separation of duties).
var approverOnly = rule{roles: []string{roleApprover}, personal: true,
	hint: "approvals are personal (separation of duties): only a principal holding approver may record one, admin included; " +
		`an admin adds an approver with: hallmark principals add ID --name "Printed Name" --role approver`}

// authzTable is the authorisation rule of every procedure the server
// serves. A procedure missing from it is denied to everyone, admin
// included: a new RPC must be given a rule before anyone can call it.
// TestAuthzTableCoversServices keeps it in step with the generated services.
var authzTable = map[string]rule{
	registryv1connect.RegistryServiceCreateVersionProcedure:   {roles: []string{rolePublisher}},
	registryv1connect.RegistryServiceGetVersionProcedure:      readers,
	registryv1connect.RegistryServiceListVersionsProcedure:    readers,
	registryv1connect.RegistryServiceGetModelProcedure:        readers,
	registryv1connect.RegistryServiceListModelsProcedure:      readers,
	registryv1connect.RegistryServiceGetAliasHistoryProcedure: readers,
	// SetAlias files a promotion request (the policy decides the move), so
	// whoever may request a promotion may call it.
	registryv1connect.RegistryServiceSetAliasProcedure:      {roles: []string{rolePublisher}},
	registryv1connect.RegistryServiceRevokeVersionProcedure: adminOnly,

	registryv1connect.AccessServiceAddPrincipalProcedure:    adminOnly,
	registryv1connect.AccessServiceRevokePrincipalProcedure: adminOnly,
	// Auditors need to know who the principals are to read the ledger.
	registryv1connect.AccessServiceListPrincipalsProcedure: {roles: []string{roleAuditor}},
	registryv1connect.AccessServiceWhoAmIProcedure:         readers,

	ledgerv1connect.LedgerServiceGetCheckpointProcedure:       readers,
	ledgerv1connect.LedgerServiceGetEntriesProcedure:          readers,
	ledgerv1connect.LedgerServiceGetInclusionProofProcedure:   readers,
	ledgerv1connect.LedgerServiceGetConsistencyProofProcedure: readers,

	// Shadow deployments: whoever publishes versions may shadow them; the
	// evidence comes from each deployment's own agent (the registry checks
	// that the caller is that deployment's agent, or an admin relaying its
	// signed batches).
	shadowv1connect.ShadowServiceStartShadowProcedure:    {roles: []string{rolePublisher}},
	shadowv1connect.ShadowServiceStopShadowProcedure:     {roles: []string{rolePublisher}},
	shadowv1connect.ShadowServiceGetShadowProcedure:      readers,
	shadowv1connect.ShadowServiceListShadowsProcedure:    readers,
	shadowv1connect.ShadowServiceReportEvidenceProcedure: {roles: []string{roleShadowAgent}},

	// Promotions: publishers request, approvers approve, the policy
	// decides; decisions with their inputs are for auditors and policy
	// authors (replay). Approvers' signing keys are registered by admins.
	registryv1connect.PromotionServiceRequestPromotionProcedure: {roles: []string{rolePublisher}},
	registryv1connect.PromotionServiceApproveProcedure:          approverOnly,
	registryv1connect.PromotionServiceGetPromotionProcedure:     readers,
	registryv1connect.PromotionServiceListPromotionsProcedure:   readers,
	registryv1connect.PromotionServiceGetDecisionProcedure:      readers,
	registryv1connect.PromotionServiceListDecisionsProcedure:    {roles: []string{roleAuditor, rolePolicyAuthor}},
	registryv1connect.PromotionServiceSetApproverKeyProcedure:   adminOnly,

	policyv1connect.PolicyServicePublishPolicySetProcedure: {roles: []string{rolePolicyAuthor}},
	policyv1connect.PolicyServiceStartDryRunProcedure:      {roles: []string{rolePolicyAuthor}},
	policyv1connect.PolicyServiceStopDryRunProcedure:       {roles: []string{rolePolicyAuthor}},
	policyv1connect.PolicyServiceGetPolicySetProcedure:     readers,
	policyv1connect.PolicyServiceListPolicySetsProcedure:   readers,

	// Audit exports and point-in-time answers are for auditors; an
	// export is recorded in the ledger.
	auditv1connect.AuditServiceExportProcedure: {roles: []string{roleAuditor}},
	auditv1connect.AuditServiceAtProcedure:     {roles: []string{roleAuditor}},

	blobReadProcedure:  readers,
	blobWriteProcedure: {roles: []string{rolePublisher}},
}

// authorize reports whether a principal holding roles may call procedure,
// and if not, why (for the error message and the ledgered denial).
func authorize(procedure string, roles []string) (bool, string) {
	r, ok := authzTable[procedure]
	if !ok {
		return false, "procedure has no authorisation rule"
	}
	if r.anyRole && len(roles) > 0 || !r.personal && slices.Contains(roles, roleAdmin) {
		return true, ""
	}
	for _, have := range roles {
		if slices.Contains(r.roles, have) {
			return true, ""
		}
	}
	need := r.roles
	if !r.personal {
		need = append([]string{roleAdmin}, r.roles...)
	}
	why := "requires role " + strings.Join(need, " or ")
	if r.hint != "" {
		why += "; " + r.hint
	}
	return false, why
}
