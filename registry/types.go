package registry

import (
	"slices"
	"time"

	"github.com/hallmark-dev/hallmark/signing"
)

// Role is what a principal may do. The server's authorisation table maps
// procedures to roles; the registry only stores them.
type Role string

// The roles.
const (
	RoleAdmin        Role = "admin"
	RolePublisher    Role = "publisher"
	RoleApprover     Role = "approver"
	RolePolicyAuthor Role = "policy-author"
	RoleAuditor      Role = "auditor"
	RoleShadowAgent  Role = "shadow-agent"
)

// Roles lists every role, in a fixed order.
var Roles = []Role{RoleAdmin, RolePublisher, RoleApprover, RolePolicyAuthor, RoleAuditor, RoleShadowAgent}

// Valid reports whether r is one of Roles.
func (r Role) Valid() bool { return slices.Contains(Roles, r) }

// Ways an actor was authenticated, recorded in every entry.
const (
	AuthToken = "token"
	AuthMTLS  = "mtls"
	// AuthLocal is the server itself (bootstrap) or an offline tool.
	AuthLocal = "local"
)

// Actor is an authenticated caller: who did it, as every entry records.
type Actor struct {
	ID    string
	Name  string
	Roles []Role
	// Auth is AuthToken, AuthMTLS or AuthLocal.
	Auth string
}

// Has reports whether the actor holds role r.
func (a Actor) Has(r Role) bool { return slices.Contains(a.Roles, r) }

// SystemActor is the server acting on its own behalf (first start).
var SystemActor = Actor{ID: "hallmark", Name: "hallmark server", Auth: AuthLocal}

// Principal is an identity that can authenticate. Its token is never stored,
// only the token's SHA-256.
type Principal struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Roles     []Role    `json:"roles"`
	Revoked   bool      `json:"revoked,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	RevokedBy string    `json:"revoked_by,omitempty"`
	Reason    string    `json:"revoke_reason,omitempty"`
	CreatedBy string    `json:"created_by"`
	Created   time.Time `json:"created"`
	// LedgerIndex is the index of the principal-added entry.
	LedgerIndex uint64 `json:"ledger_index"`
}

// File is one file of a version: the signing package's manifest entry
// (slash-separated relative path, size, SHA-256).
type File = signing.File

// DatasetRef identifies a data set a version was trained or evaluated on.
type DatasetRef struct {
	Name string `json:"name,omitempty"`
	// Digest is "sha256:<64 hex>" when given.
	Digest string `json:"digest,omitempty"`
	URI    string `json:"uri,omitempty"`
}

// Lineage says where a version came from.
type Lineage struct {
	Datasets       []DatasetRef `json:"datasets,omitempty"`
	CodeRepository string       `json:"code_repository,omitempty"`
	CodeCommit     string       `json:"code_commit,omitempty"`
	CIRunURL       string       `json:"ci_run_url,omitempty"`
	// BaseModel is the digest of the version this one was tuned from.
	BaseModel string `json:"base_model,omitempty"`
}

// Metadata describes a version; it is recorded with the version but is not
// part of the manifest digest.
type Metadata struct {
	Framework   string             `json:"framework,omitempty"`
	Metrics     map[string]float64 `json:"metrics,omitempty"`
	Lineage     Lineage            `json:"lineage,omitzero"`
	Labels      map[string]string  `json:"labels,omitempty"`
	Description string             `json:"description,omitempty"`
}

// SignatureCheck is the recorded result of verifying a version's OMS
// signature bundle against the server's trust store at push time.
type SignatureCheck struct {
	Present bool `json:"present"`
	Valid   bool `json:"valid"`
	// Method is the bundle's material: "public-key", "certificate-chain"
	// or "keyless".
	Method string `json:"method,omitempty"`
	// Signer: the key fingerprint, certificate subject or keyless identity.
	Signer         string `json:"signer,omitempty"`
	Issuer         string `json:"issuer,omitempty"`
	KeyFingerprint string `json:"key_fingerprint,omitempty"`
	KeyAlgorithm   string `json:"key_algorithm,omitempty"`
	// Error says why verification failed.
	Error string `json:"error,omitempty"`
	// Bundle is the digest of the stored bundle blob ("sha256:<hex>").
	Bundle string `json:"bundle,omitempty"`
	// LedgerIndex is the index of the signature-verified entry.
	LedgerIndex uint64 `json:"ledger_index,omitempty"`
}

// Version is an immutable model version. Revocation is recorded beside it,
// never by changing what it is.
type Version struct {
	Model string `json:"model"`
	Label string `json:"label"`
	// Digest is the manifest digest, "sha256:<hex>": the version's identity.
	Digest   string   `json:"digest"`
	Files    []File   `json:"files"`
	Metadata Metadata `json:"metadata,omitzero"`
	// Manifest is the digest of the manifest blob when the manifest was too
	// large for the ledger entry, else "".
	Manifest    string         `json:"manifest_blob,omitempty"`
	Signature   SignatureCheck `json:"signature"`
	Creator     string         `json:"creator"`
	Created     time.Time      `json:"created"`
	LedgerIndex uint64         `json:"ledger_index"`
	// Seq is the version's position in its model, from 1.
	Seq          uint64    `json:"seq"`
	Revoked      bool      `json:"revoked,omitempty"`
	RevokeReason string    `json:"revoke_reason,omitempty"`
	RevokedBy    string    `json:"revoked_by,omitempty"`
	RevokedAt    time.Time `json:"revoked_at,omitzero"`
}

// Alias is a movable name on a model; as an element of a history it is one
// move.
type Alias struct {
	Model         string    `json:"model"`
	Name          string    `json:"name"`
	VersionDigest string    `json:"version"`
	VersionLabel  string    `json:"label"`
	Previous      string    `json:"previous,omitempty"`
	Reason        string    `json:"reason,omitempty"`
	UpdatedBy     string    `json:"updated_by"`
	Updated       time.Time `json:"updated"`
	LedgerIndex   uint64    `json:"ledger_index"`
	// Decision is the ledger index of the policy decision that allowed
	// the move (0 for moves recorded before policy-gated promotions).
	Decision uint64 `json:"decision,omitempty"`
}

// Model is a named line of work.
type Model struct {
	Name         string    `json:"name"`
	Creator      string    `json:"creator"`
	Created      time.Time `json:"created"`
	LedgerIndex  uint64    `json:"ledger_index"`
	VersionCount uint64    `json:"version_count"`
	// Aliases is filled by GetModel and ListModels, not stored.
	Aliases []Alias `json:"-"`
}

// CreateVersionInput is a push.
type CreateVersionInput struct {
	Model, Label string
	Files        []File
	Metadata     Metadata
	// SignatureBundle is an optional OMS Sigstore bundle (model.sig bytes).
	SignatureBundle []byte
}

// SetAliasInput is an alias move. Exactly one of ExpectVersion (a label or
// digest the alias must point at now) and ExpectUnset must be given.
type SetAliasInput struct {
	Model, Alias  string
	Version       string // label or digest to point at
	ExpectVersion string
	ExpectUnset   bool
	Reason        string
}
