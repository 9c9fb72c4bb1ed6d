package registry

import (
	"encoding/json"

	"github.com/hallmark-dev/hallmark/policy"
)

// Promotion, approval and policy-set events (docs/design/events.md,
// "Promotions"; docs/promotions.md for the flow).
const (
	// TypePolicyPublished records a vetted policy set and makes it the
	// active one, in the same entry.
	TypePolicyPublished = "hallmark.policy.published"
	// TypePolicyDryRunStarted records a vetted draft set that runs beside
	// the active one on every decision, recorded but never enforced.
	TypePolicyDryRunStarted = "hallmark.policy.dry_run_started"
	// TypePolicyDryRunStopped ends the dry run.
	TypePolicyDryRunStopped = "hallmark.policy.dry_run_stopped"
	// TypePrincipalKeySet registers the public key a principal signs
	// approvals with.
	TypePrincipalKeySet = "hallmark.principal.key_set"
	// TypePromotionRequested records a promotion request.
	TypePromotionRequested = "hallmark.promotion.requested"
	// TypeApprovalRecorded records one approval of a request.
	TypeApprovalRecorded = "hallmark.approval.recorded"
	// TypeDecisionRecorded records one policy evaluation of a request. An
	// allowed decision is followed, in the same append, by the
	// hallmark.alias.moved entry that names it.
	TypeDecisionRecorded = "hallmark.policy.decision"
)

// promotionEvent is implemented by the events of this file, so that the
// shared decoding and apply switches dispatch them with one case each.
type promotionEvent interface{ promotionHeader() header }

// policyFileRecord is one file of a recorded set. Rego and data.json are
// text: the ledger keeps them readable (a set with a non-UTF-8 file is
// refused at publication).
type policyFileRecord struct {
	Name string `json:"name"`
	Text string `json:"text"`
}

// policyTestRecord is one test result as recorded.
type policyTestRecord struct {
	Name   string `json:"name"` // data.pkg.test_name
	File   string `json:"file"`
	Line   int    `json:"line"`
	Status string `json:"status"` // PASS, FAIL, ERROR, SKIPPED
}

// policyBody is the bulky part of a publication: the full text and the test
// results. It is inline in the entry, or the canonical JSON of it is the
// blob BodyBlob names when the entry would exceed the ledger's limit.
type policyBody struct {
	Files []policyFileRecord `json:"files"`
	Tests []policyTestRecord `json:"tests"`
}

type policySetEvent struct {
	header
	Digest string `json:"digest"`
	// Default is true for the embedded default pack published by hallmark
	// itself (see docs/promotions.md, "The default pack").
	Default             bool        `json:"default,omitempty"`
	Body                *policyBody `json:"body,omitempty"`
	BodyBlob            string      `json:"body_blob,omitempty"`
	Passed              int         `json:"tests_passed"`
	Coverage            float64     `json:"coverage"`
	MinCoverage         float64     `json:"min_coverage"`
	OPAVersion          string      `json:"opa_version"`
	CapabilitiesVersion string      `json:"capabilities_version"`
	SchemaVersion       int         `json:"schema_version"`
}

type dryRunStoppedEvent struct {
	header
	Digest string `json:"digest"`
	Reason string `json:"reason,omitempty"`
}

type principalKeySetEvent struct {
	header
	Principal string `json:"principal"`
	// PublicKey is the PKIX public key in PEM.
	PublicKey   string `json:"public_key"`
	Fingerprint string `json:"fingerprint"`
}

type promotionRequestedEvent struct {
	header
	Request string `json:"request"`
	Model   string `json:"model"`
	Alias   string `json:"alias"`
	Version string `json:"version"`
	Label   string `json:"label"`
	// Previous is the digest the alias must point at ("" = unset): the
	// compare-and-swap expectation checked when the alias moves.
	Previous string `json:"previous,omitempty"`
	Reason   string `json:"reason"`
	Rollback bool   `json:"rollback"`
}

type approvalRecordedEvent struct {
	header
	Request string `json:"request"`
	Meaning string `json:"meaning"`
	Comment string `json:"comment,omitempty"`
	// SignedAt, Signature (standard base64) and KeyFingerprint are set when
	// the approver signed ApprovalMessage with their registered key.
	SignedAt       string `json:"signed_at,omitempty"`
	Signature      string `json:"signature,omitempty"`
	KeyFingerprint string `json:"key_fingerprint,omitempty"`
}

// dryRunRecord is the draft set's result beside a decision.
type dryRunRecord struct {
	PolicySet string           `json:"policy_set"`
	Result    *policy.Decision `json:"result,omitempty"`
	Error     string           `json:"error,omitempty"`
}

type decisionEvent struct {
	header
	Request string `json:"request"`
	Model   string `json:"model"`
	Alias   string `json:"alias"`
	// Trigger is what caused the evaluation: "request" or "approval".
	Trigger   string `json:"trigger"`
	PolicySet string `json:"policy_set"`
	// Input is the exact input document evaluated, or empty when
	// InputBlob names the blob holding it.
	Input       json.RawMessage `json:"input,omitempty"`
	InputBlob   string          `json:"input_blob,omitempty"`
	InputSHA256 string          `json:"input_sha256"`
	Result      policy.Decision `json:"result"`
	// Status is what the registry did: "allowed" (the alias moves in this
	// append), "waiting" (only approvals are missing) or "denied".
	Status     string        `json:"status"`
	OPAVersion string        `json:"opa_version"`
	EvalNanos  int64         `json:"eval_ns"`
	DryRun     *dryRunRecord `json:"dry_run,omitempty"`
}

func (e *policySetEvent) promotionHeader() header          { return e.header }
func (e *dryRunStoppedEvent) promotionHeader() header      { return e.header }
func (e *principalKeySetEvent) promotionHeader() header    { return e.header }
func (e *promotionRequestedEvent) promotionHeader() header { return e.header }
func (e *approvalRecordedEvent) promotionHeader() header   { return e.header }
func (e *decisionEvent) promotionHeader() header           { return e.header }

// newPromotionEvent returns the pointer to decode an entry of type t into,
// or nil.
func newPromotionEvent(t string) any {
	switch t {
	case TypePolicyPublished, TypePolicyDryRunStarted:
		return new(policySetEvent)
	case TypePolicyDryRunStopped:
		return new(dryRunStoppedEvent)
	case TypePrincipalKeySet:
		return new(principalKeySetEvent)
	case TypePromotionRequested:
		return new(promotionRequestedEvent)
	case TypeApprovalRecorded:
		return new(approvalRecordedEvent)
	case TypeDecisionRecorded:
		return new(decisionEvent)
	}
	return nil
}
