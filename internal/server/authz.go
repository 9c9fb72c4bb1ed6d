package server

import (
	"slices"
	"strings"

	"github.com/hallmark-dev/hallmark/api/gen/hallmark/ledger/v1/ledgerv1connect"
	"github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1/registryv1connect"
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
// in the table, so it is never listed.
type rule struct {
	// anyRole lets every authenticated principal call the procedure.
	anyRole bool
	// roles lists the non-admin roles that may call it.
	roles []string
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
	// Until the policy issue lands, only admin moves aliases; policy
	// decisions replace this rule then.
	registryv1connect.RegistryServiceSetAliasProcedure:      adminOnly,
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
	if slices.Contains(roles, roleAdmin) || r.anyRole && len(roles) > 0 {
		return true, ""
	}
	for _, have := range roles {
		if slices.Contains(r.roles, have) {
			return true, ""
		}
	}
	return false, "requires role " + strings.Join(append([]string{roleAdmin}, r.roles...), " or ")
}
