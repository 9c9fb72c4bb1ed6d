package registry

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/policy"
	"github.com/hallmark-dev/hallmark/registry/blob"
)

// Promotions (docs/promotions.md).
//
// Every alias move goes through a promotion request decided by the active
// policy set. Promote records the request and its first decision; Approve
// records an approval and decides again. Each decision is a ledger entry with
// the exact input document, the policy set digest, the result with rule ids
// and messages, the OPA version and the evaluation time, and the dry-run
// draft's result beside it when one runs. When the decision allows the move,
// the hallmark.alias.moved entry (naming the decision) is part of the same
// atomic append; when only approvals are missing (every deny reason is
// WaitingRule) the request waits; otherwise it is denied.
//
// The decision is made inside the ledger's sequencer, on the state the
// entries will apply to: of concurrent promotions of one alias exactly one
// can win, and a decision can never be based on state that changed before
// it was recorded.

// Request statuses.
const (
	// StatusWaiting: only approvals are missing.
	StatusWaiting = "waiting"
	// StatusAllowed: the alias moved in the decision's append.
	StatusAllowed = "allowed"
	// StatusDenied: a rule other than WaitingRule denied it; final.
	StatusDenied = "denied"
	// StatusSuperseded: another request moved the alias while this one
	// waited; final.
	StatusSuperseded = "superseded"
)

// WaitingRule is the deny rule id meaning "more approvals are needed": a
// decision denied by this rule alone leaves its request waiting. Policy sets
// use it for exactly that (the default pack does).
const WaitingRule = "approvals.insufficient"

const (
	prefixPromotion = "promotion/"     // + request id -> PromotionRequest JSON
	prefixOpen      = "promotionopen/" // + model NUL alias NUL request id -> "" (waiting requests)
	prefixDecision  = "decision/"      // + u64 ledger index -> DecisionRecord JSON
	requestIDPrefix = "req-"
)

func decisionKey(index uint64) []byte { return append([]byte(prefixDecision), u64(index)...) }

// Approval is one approver's recorded decision on a request.
type Approval struct {
	Approver string    `json:"approver"`
	Name     string    `json:"name"`
	Meaning  string    `json:"meaning"`
	Comment  string    `json:"comment,omitempty"`
	At       time.Time `json:"at"`
	// Signed is true when the approver signed it with their registered key
	// (the registry verified it; an unverifiable signature is refused).
	Signed         bool      `json:"signed,omitempty"`
	SignatureValid bool      `json:"signature_valid,omitempty"`
	KeyFingerprint string    `json:"key_fingerprint,omitempty"`
	SignedAt       time.Time `json:"signed_at,omitzero"`
	LedgerIndex    uint64    `json:"ledger_index"`
}

// PromotionRequest is a request to move an alias, with its approvals and
// the ledger indexes of its decisions.
type PromotionRequest struct {
	ID      string `json:"id"`
	Model   string `json:"model"`
	Alias   string `json:"alias"`
	Version string `json:"version"`
	Label   string `json:"label"`
	// Previous is the digest the alias must point at when it moves ("" for
	// a new alias).
	Previous      string     `json:"previous,omitempty"`
	Reason        string     `json:"reason"`
	Rollback      bool       `json:"rollback"`
	Requester     string     `json:"requester"`
	RequesterName string     `json:"requester_name"`
	Created       time.Time  `json:"created"`
	Updated       time.Time  `json:"updated"`
	LedgerIndex   uint64     `json:"ledger_index"`
	Status        string     `json:"status"`
	Approvals     []Approval `json:"approvals"`
	Decisions     []uint64   `json:"decisions"`
	// SupersededBy names the request that moved the alias first.
	SupersededBy string `json:"superseded_by,omitempty"`
}

// DryRunResult is the draft set's result recorded beside a decision.
type DryRunResult struct {
	PolicySet string           `json:"policy_set"`
	Result    *policy.Decision `json:"result,omitempty"`
	Error     string           `json:"error,omitempty"`
}

// DecisionRecord is one recorded policy evaluation.
type DecisionRecord struct {
	Index   uint64 `json:"index"`
	Request string `json:"request"`
	Model   string `json:"model"`
	Alias   string `json:"alias"`
	Trigger string `json:"trigger"`
	Actor   string `json:"actor"`
	// Time is the decision time (input.now).
	Time      time.Time `json:"time"`
	PolicySet string    `json:"policy_set"`
	// Input is the exact input document; GetDecision and ListDecisions
	// fill it from the blob store when it was too large for the entry.
	Input       json.RawMessage `json:"input,omitempty"`
	InputBlob   string          `json:"input_blob,omitempty"`
	InputSHA256 string          `json:"input_sha256"`
	Result      policy.Decision `json:"result"`
	Status      string          `json:"status"`
	OPAVersion  string          `json:"opa_version"`
	EvalNanos   int64           `json:"eval_ns"`
	DryRun      *DryRunResult   `json:"dry_run,omitempty"`
}

// WaitingFor returns how many more approvals the policy asks for in d, as
// far as the registry can tell: RequiredApprovals minus the distinct
// approvers of p who approved and whose principal is not revoked now (never
// negative). It is for people; the policy decides.
func (r *Registry) WaitingFor(p PromotionRequest, d DecisionRecord) int {
	n := d.Result.RequiredApprovals
	seen := map[string]bool{}
	for _, a := range p.Approvals {
		if a.Meaning != MeaningApproved || seen[a.Approver] {
			continue
		}
		seen[a.Approver] = true
		var pr Principal
		if found, err := getJSON(r.log, key(prefixPrincipal, a.Approver), &pr); err == nil && found && pr.Revoked {
			continue
		}
		n--
	}
	return max(n, 0)
}

// PromoteInput is a promotion request. Exactly one of ExpectVersion (a
// label or digest the alias must point at now) and ExpectUnset is required.
type PromoteInput struct {
	Model, Alias  string
	Version       string // label or digest to promote
	ExpectVersion string
	ExpectUnset   bool
	// Reason is the justification (change ticket); required.
	Reason string
	// ID names the request; the default is "req-" and the ledger index of
	// its entry. A chosen id makes a retry fail with ErrAlreadyExists
	// instead of filing the request twice.
	ID string
}

// ApproveInput is an approval. Signature and SignedAt are required when
// the approver has a registered key (see ApprovalMessage).
type ApproveInput struct {
	Request, Meaning, Comment string
	SignedAt                  time.Time
	Signature                 []byte
}

// PromotionResult is a request with the decision just recorded for it.
type PromotionResult struct {
	Request  PromotionRequest
	Decision DecisionRecord
	// Moved is the alias after the move, when the decision allowed it.
	Moved *Alias
}

// decisionInlineLimit is the largest decision entry kept with its input
// inline; tests lower it to exercise the blob path.
var decisionInlineLimit = ledger.MaxEntrySize

// errRetry ends an Append whose policy cache was stale; the caller retries.
var errRetry = errors.New("policy set changed; retry")

// retryStalePolicies runs once until it does not end with errRetry: the
// policies are prepared outside the sequencer (compiling is slow) and a
// publish that lands in between makes the attempt start again with the new
// set, so that every decision is made by the set active when it commits.
func retryStalePolicies[T any](once func() (T, error)) (T, error) {
	for {
		out, err := once()
		if !errors.Is(err, errRetry) {
			return out, err
		}
	}
}

// Promote records a promotion request and decides it with the active policy
// set. A lost compare-and-swap (*ConflictError) and malformed requests
// record nothing; every evaluated request is recorded with its decision,
// allowed, waiting or denied.
func (r *Registry) Promote(ctx context.Context, actor Actor, in PromoteInput) (PromotionResult, error) {
	if err := validActor(actor); err != nil {
		return PromotionResult{}, err
	}
	if err := validName("model name", in.Model, maxNameLen); err != nil {
		return PromotionResult{}, err
	}
	if err := validName("alias", in.Alias, maxNameLen); err != nil {
		return PromotionResult{}, err
	}
	if in.Version == "" {
		return PromotionResult{}, errorf(ErrInvalidArgument, "no version to promote: give a label or sha256:<hex>")
	}
	switch {
	case in.ExpectUnset && in.ExpectVersion != "":
		return PromotionResult{}, errorf(ErrInvalidArgument, "give either an expected current version or expect-unset, not both")
	case !in.ExpectUnset && in.ExpectVersion == "":
		return PromotionResult{}, errorf(ErrInvalidArgument, "alias %q: the expected current version is required (or expect it unset): promotions are compare-and-swap", in.Alias)
	}
	if strings.TrimSpace(in.Reason) == "" {
		return PromotionResult{}, errorf(ErrInvalidArgument, "a promotion needs a reason (change ticket)")
	}
	if err := validText("reason", in.Reason, maxTextLen); err != nil {
		return PromotionResult{}, err
	}
	if in.ID != "" {
		if err := validName("promotion request id", in.ID, maxIDLen); err != nil {
			return PromotionResult{}, err
		}
		// Decisions are also found by ledger index; an id made of digits
		// only would read as one (requests recorded before this rule keep
		// theirs).
		if strings.Trim(in.ID, "0123456789") == "" {
			return PromotionResult{}, errorf(ErrInvalidArgument, "promotion request id %q is all digits, which reads as a ledger index; add a letter (e.g. %q)", in.ID, "req-"+in.ID)
		}
	}
	return retryStalePolicies(func() (PromotionResult, error) { return r.promoteOnce(ctx, actor, in) })
}

func (r *Registry) promoteOnce(ctx context.Context, actor Actor, in PromoteInput) (PromotionResult, error) {
	pols, err := r.warmPolicies(ctx)
	if err != nil {
		return PromotionResult{}, err
	}
	var out PromotionResult
	_, err = r.log.Append(ctx, func(tx *ledger.Tx) error {
		if err := r.catchUp(ctx, tx); err != nil {
			return err
		}
		if err := pols.current(tx); err != nil {
			return err
		}
		if in.ID != "" {
			if old, err := getRequest(tx, in.ID); err == nil {
				return errorf(ErrAlreadyExists, "promotion request %s already exists (%s, ledger entry %d)", in.ID, old.Status, old.LedgerIndex)
			} else if !errors.Is(err, ErrNotFound) {
				return err
			}
		}
		target, _, err := r.resolve(tx, in.Model, in.Version)
		if err != nil {
			return err
		}
		cur, set, err := r.checkAliasSwap(tx, in.Model, in.Alias, in.ExpectVersion, in.ExpectUnset)
		if err != nil {
			return err
		}
		if set && cur.VersionDigest == target.Digest {
			return errorf(ErrFailedPrecondition, "model %q: alias %q already points at %q (%s)", in.Model, in.Alias, target.Label, target.Digest)
		}
		history, rollback, err := inputMoves(ctx, tx, in.Model, in.Alias, target.Digest)
		if err != nil {
			return err
		}

		var entries [][]byte
		if e, err := r.defaultPackEntry(tx); err != nil {
			return err
		} else if e != nil {
			entries = append(entries, e)
		}
		h, err := r.header(tx, TypePromotionRequested, actor)
		if err != nil {
			return err
		}
		reqIndex := tx.NextIndex() + uint64(len(entries))
		id := in.ID
		if id == "" {
			id = requestIDPrefix + strconv.FormatUint(reqIndex, 10)
		}
		reqEv := &promotionRequestedEvent{header: h, Request: id, Model: in.Model, Alias: in.Alias, Version: target.Digest,
			Label: target.Label, Previous: cur.VersionDigest, Reason: in.Reason, Rollback: rollback}
		b, err := encodeEvent(reqEv)
		if err != nil {
			return err
		}
		entries = append(entries, b)
		req := PromotionRequest{ID: id, Model: in.Model, Alias: in.Alias, Version: target.Digest, Label: target.Label,
			Previous: cur.VersionDigest, Reason: in.Reason, Rollback: rollback, Requester: actor.ID, RequesterName: actor.Name,
			Status: StatusWaiting}
		more, err := r.decide(ctx, tx, pols, &req, target, history, h, actor, "request", reqIndex+1)
		if err != nil {
			return err
		}
		entries = append(entries, more...)
		if _, err := r.commit(ctx, tx, entries...); err != nil {
			return err
		}
		out, err = r.result(ctx, tx, id, reqIndex+1)
		return err
	})
	if err != nil {
		return PromotionResult{}, err
	}
	return out, nil
}

// Approve records an approval of a waiting request and decides the request
// again. The approver must hold the approver role, not be revoked, be
// neither the requester nor the version's creator, and not have recorded an
// approval on the request before; with a registered key the approval must
// carry a valid signature (see ApprovalMessage). A refused approval records
// nothing. When the alias no longer points where the request expects, the
// approval is refused with a *ConflictError (the request is stale).
func (r *Registry) Approve(ctx context.Context, actor Actor, in ApproveInput) (PromotionResult, error) {
	if err := validActor(actor); err != nil {
		return PromotionResult{}, err
	}
	if err := validName("promotion request id", in.Request, maxIDLen); err != nil {
		return PromotionResult{}, err
	}
	if err := validText("comment", in.Comment, maxTextLen); err != nil {
		return PromotionResult{}, err
	}
	return retryStalePolicies(func() (PromotionResult, error) { return r.approveOnce(ctx, actor, in) })
}

func (r *Registry) approveOnce(ctx context.Context, actor Actor, in ApproveInput) (PromotionResult, error) {
	pols, err := r.warmPolicies(ctx)
	if err != nil {
		return PromotionResult{}, err
	}
	var out PromotionResult
	_, err = r.log.Append(ctx, func(tx *ledger.Tx) error {
		if err := r.catchUp(ctx, tx); err != nil {
			return err
		}
		if err := pols.current(tx); err != nil {
			return err
		}
		req, err := getRequest(tx, in.Request)
		if err != nil {
			return err
		}
		h, err := r.header(tx, TypeApprovalRecorded, actor)
		if err != nil {
			return err
		}
		ev := &approvalRecordedEvent{header: h, Request: req.ID, Meaning: in.Meaning, Comment: in.Comment}
		if len(in.Signature) > 0 {
			ev.Signature = base64.StdEncoding.EncodeToString(in.Signature)
			ev.SignedAt = formatTime(in.SignedAt)
			var k PrincipalKey
			if found, err := getJSON(tx, key(prefixPrincipalKey, actor.ID), &k); err != nil {
				return err
			} else if found {
				ev.KeyFingerprint = k.Fingerprint
			}
		}
		t, err := time.Parse(time.RFC3339Nano, h.Time)
		if err != nil {
			return err
		}
		a, err := checkApproval(tx, &req, actor.ID, ev, t)
		if err != nil {
			return err
		}
		var cur Alias
		set, err := getJSON(tx, key(prefixAlias, req.Model, req.Alias), &cur)
		if err != nil {
			return err
		}
		if set && cur.VersionDigest != req.Previous || !set && req.Previous != "" {
			return &ConflictError{Model: req.Model, Alias: req.Alias, Expected: req.Previous, ActualDigest: cur.VersionDigest, ActualLabel: cur.VersionLabel}
		}
		var target Version
		if _, err := getJSON(tx, versionKey(req.Model, req.Version), &target); err != nil {
			return err
		}
		history, _, err := inputMoves(ctx, tx, req.Model, req.Alias, req.Version)
		if err != nil {
			return err
		}
		var entries [][]byte
		if e, err := r.defaultPackEntry(tx); err != nil {
			return err
		} else if e != nil {
			entries = append(entries, e)
		}
		b, err := encodeEvent(ev)
		if err != nil {
			return err
		}
		entries = append(entries, b)
		apprIndex := tx.NextIndex() + uint64(len(entries)) - 1
		a.LedgerIndex = apprIndex
		req.Approvals = append(req.Approvals, a)
		more, err := r.decide(ctx, tx, pols, &req, target, history, h, actor, "approval", apprIndex+1)
		if err != nil {
			return err
		}
		entries = append(entries, more...)
		if _, err := r.commit(ctx, tx, entries...); err != nil {
			return err
		}
		out, err = r.result(ctx, tx, req.ID, apprIndex+1)
		return err
	})
	if err != nil {
		return PromotionResult{}, err
	}
	return out, nil
}

// policies are the compiled active and dry-run sets a decision uses,
// compiled before entering the sequencer.
type policies struct {
	status PolicyStatus
	active *policy.Policy
	dryRun *policy.Policy
	// dryErr is why the dry-run set could not be compiled (recorded).
	dryErr error
}

func (r *Registry) warmPolicies(ctx context.Context) (*policies, error) {
	st, err := policyStatus(r.log)
	if err != nil {
		return nil, err
	}
	p := &policies{status: st}
	if p.active, err = r.preparePolicy(ctx, r.log, st.Active); err != nil {
		return nil, fmt.Errorf("preparing the active policy set: %w", err)
	}
	if st.DryRun != "" {
		p.dryRun, p.dryErr = r.preparePolicy(ctx, r.log, st.DryRun)
	}
	return p, nil
}

// current returns errRetry when the sets changed since warmPolicies.
func (p *policies) current(st stateReader) error {
	s, err := policyStatus(st)
	if err != nil {
		return err
	}
	if s.Active != p.status.Active || s.DryRun != p.status.DryRun {
		return errRetry
	}
	return nil
}

// decide builds the input for req as of header h, evaluates it and returns
// the decision entry (to be at index decIndex) and, when allowed, the alias
// move entry. It updates req.Status. history is what inputMoves returns.
func (r *Registry) decide(ctx context.Context, st stateReader, pols *policies, req *PromotionRequest, target Version, history []Alias, h header, actor Actor, trigger string, decIndex uint64) ([][]byte, error) {
	t, err := time.Parse(time.RFC3339Nano, h.Time)
	if err != nil {
		return nil, err
	}
	doc, err := buildInput(ctx, st, req, target, history, t)
	if err != nil {
		return nil, err
	}
	parsed, err := policy.ParseInput(doc)
	if err != nil {
		return nil, fmt.Errorf("policy input of request %s: %w", req.ID, err)
	}
	start := time.Now()
	d, err := pols.active.DecideInput(ctx, parsed)
	elapsed := time.Since(start)
	if err != nil {
		return nil, fmt.Errorf("deciding request %s with policy set %s: %w", req.ID, pols.status.Active, err)
	}
	status := statusOf(d)
	if status == StatusAllowed && target.Revoked {
		// The registry's own floor under any policy: a revoked version is
		// never promoted (the alias move would be refused anyway).
		status = StatusDenied
	}
	sum := sha256.Sum256(doc)
	ev := &decisionEvent{header: h, Request: req.ID, Model: req.Model, Alias: req.Alias, Trigger: trigger,
		PolicySet: pols.status.Active, Input: doc, InputSHA256: hex.EncodeToString(sum[:]), Result: *d, Status: status,
		OPAVersion: policy.OPAVersion, EvalNanos: elapsed.Nanoseconds()}
	ev.Type = TypeDecisionRecorded
	if pols.status.DryRun != "" {
		dr := &dryRunRecord{PolicySet: pols.status.DryRun}
		if pols.dryErr != nil {
			dr.Error = pols.dryErr.Error()
		} else if dd, err := pols.dryRun.DecideInput(ctx, parsed); err != nil {
			dr.Error = err.Error()
		} else {
			dr.Result = dd
		}
		ev.DryRun = dr
	}
	b, err := encodeEvent(ev)
	if err != nil {
		return nil, err
	}
	if len(b) > decisionInlineLimit {
		// Rare (a long alias history, many segments): the input goes to the
		// blob store first, synced, so the entry never names missing bytes.
		bd, err := r.putBytes(ctx, "decision input", doc)
		if err != nil {
			return nil, err
		}
		ev.Input, ev.InputBlob = nil, bd.String()
		if b, err = encodeEvent(ev); err != nil {
			return nil, err
		}
		if len(b) > ledger.MaxEntrySize {
			return nil, fmt.Errorf("decision entry is %d bytes without its input, more than the ledger's %d", len(b), ledger.MaxEntrySize)
		}
	}
	entries := [][]byte{b}
	req.Status = status
	if status == StatusAllowed {
		mh := h
		mh.Type = TypeAliasMoved
		mv, err := encodeEvent(&aliasMovedEvent{header: mh, Model: req.Model, Alias: req.Alias, Version: target.Digest,
			Label: target.Label, Previous: req.Previous, Reason: req.Reason + " (promotion " + req.ID + ")", Decision: decIndex})
		if err != nil {
			return nil, err
		}
		entries = append(entries, mv)
	}
	return entries, nil
}

func statusOf(d *policy.Decision) string {
	if d.Allow {
		return StatusAllowed
	}
	for _, r := range d.Deny {
		if r.Rule != WaitingRule {
			return StatusDenied
		}
	}
	return StatusWaiting
}

// result reads back the request and the decision at decIndex.
func (r *Registry) result(ctx context.Context, st stateReader, id string, decIndex uint64) (PromotionResult, error) {
	req, err := getRequest(st, id)
	if err != nil {
		return PromotionResult{}, err
	}
	d, err := r.decisionAt(ctx, st, decIndex)
	if err != nil {
		return PromotionResult{}, err
	}
	out := PromotionResult{Request: req, Decision: d}
	if d.Status == StatusAllowed {
		var a Alias
		if _, err := getJSON(st, key(prefixAlias, req.Model, req.Alias), &a); err != nil {
			return PromotionResult{}, err
		}
		out.Moved = &a
	}
	return out, nil
}

// ---- the policy input --------------------------------------------------------

// The input document's shape (policy/schema/input.schema.json). Field order
// is fixed by the structs, so equal states give identical bytes.
type (
	inputDoc struct {
		SchemaVersion int             `json:"schema_version"`
		Now           string          `json:"now"`
		Request       inputRequest    `json:"request"`
		Candidate     inputCandidate  `json:"candidate"`
		Signatures    []inputSig      `json:"signatures"`
		Approvals     []inputApproval `json:"approvals"`
		Evidence      json.RawMessage `json:"evidence,omitempty"`
		AliasHistory  []inputMove     `json:"alias_history"`
	}
	inputRequest struct {
		ID          string `json:"id"`
		Model       string `json:"model"`
		Alias       string `json:"alias"`
		FromVersion string `json:"from_version"`
		ToVersion   string `json:"to_version"`
		Requester   string `json:"requester"`
		Reason      string `json:"reason"`
		Rollback    bool   `json:"rollback"`
	}
	inputCandidate struct {
		Digest     string             `json:"digest"`
		Model      string             `json:"model"`
		Label      string             `json:"label"`
		Creator    string             `json:"creator"`
		CreatedAt  string             `json:"created_at"`
		Revoked    bool               `json:"revoked"`
		Revocation *inputRevocation   `json:"revocation,omitempty"`
		Metadata   inputMetadata      `json:"metadata"`
		Metrics    map[string]float64 `json:"metrics"`
		Lineage    inputLineage       `json:"lineage"`
		Aliases    []inputPeriod      `json:"aliases"`
	}
	inputRevocation struct {
		By     string `json:"by"`
		At     string `json:"at"`
		Reason string `json:"reason"`
	}
	inputMetadata struct {
		Framework string            `json:"framework,omitempty"`
		Labels    map[string]string `json:"labels,omitempty"`
	}
	inputLineage struct {
		Datasets  []inputDataset `json:"datasets,omitempty"`
		GitCommit string         `json:"git_commit,omitempty"`
		CIRunURL  string         `json:"ci_run_url,omitempty"`
		Parents   []string       `json:"parents,omitempty"`
	}
	inputDataset struct {
		Name   string `json:"name"`
		Digest string `json:"digest"`
	}
	inputPeriod struct {
		Alias string `json:"alias"`
		Since string `json:"since"`
		Until string `json:"until,omitempty"`
	}
	inputSig struct {
		Valid   bool   `json:"valid"`
		Trusted bool   `json:"trusted"`
		Signer  string `json:"signer"`
		KeyID   string `json:"key_id"`
		Kind    string `json:"kind,omitempty"`
		Issuer  string `json:"issuer,omitempty"`
		Error   string `json:"error,omitempty"`
	}
	inputApproval struct {
		Approver       string `json:"approver"`
		Meaning        string `json:"meaning"`
		At             string `json:"at"`
		Signed         bool   `json:"signed"`
		SignatureValid bool   `json:"signature_valid"`
		// ApproverRevoked: the approver's principal was revoked after the
		// approval was recorded. The approval stays in the record; whether
		// it still counts is the policy's call (the default pack: no).
		ApproverRevoked bool `json:"approver_revoked"`
	}
	inputMove struct {
		Version  string `json:"version"`
		Label    string `json:"label,omitempty"`
		At       string `json:"at"`
		By       string `json:"by,omitempty"`
		Decision string `json:"decision,omitempty"`
	}
)

// signatureKinds maps the recorded verification method to the schema's kind.
var signatureKinds = map[string]string{"public-key": "key", "certificate-chain": "certificate", "keyless": "keyless"}

// buildInput makes the input document for req at time now from st. history
// is the alias's moves as inputMoves bounds them.
func buildInput(ctx context.Context, st stateReader, req *PromotionRequest, v Version, history []Alias, now time.Time) ([]byte, error) {
	doc := inputDoc{
		SchemaVersion: policy.SchemaVersion,
		Now:           formatTime(now),
		Request: inputRequest{ID: req.ID, Model: req.Model, Alias: req.Alias, FromVersion: req.Previous, ToVersion: req.Version,
			Requester: req.Requester, Reason: req.Reason, Rollback: req.Rollback},
		Signatures:   []inputSig{},
		Approvals:    []inputApproval{},
		AliasHistory: []inputMove{},
	}
	c := inputCandidate{Digest: v.Digest, Model: v.Model, Label: v.Label, Creator: v.Creator, CreatedAt: formatTime(v.Created),
		Revoked: v.Revoked, Metadata: inputMetadata{Framework: v.Metadata.Framework, Labels: v.Metadata.Labels},
		Metrics: v.Metadata.Metrics, Aliases: []inputPeriod{}}
	if c.Metrics == nil {
		c.Metrics = map[string]float64{}
	}
	if v.Revoked {
		c.Revocation = &inputRevocation{By: v.RevokedBy, At: formatTime(v.RevokedAt), Reason: v.RevokeReason}
	}
	l := v.Metadata.Lineage
	c.Lineage = inputLineage{GitCommit: l.CodeCommit, CIRunURL: l.CIRunURL}
	for _, d := range l.Datasets {
		c.Lineage.Datasets = append(c.Lineage.Datasets, inputDataset{Name: d.Name, Digest: d.Digest})
	}
	if _, err := blob.ParseDigest(l.BaseModel); err == nil {
		c.Lineage.Parents = []string{l.BaseModel}
	}
	periods, err := aliasPeriods(ctx, st, v.Model, v.Digest)
	if err != nil {
		return nil, err
	}
	c.Aliases = periods
	doc.Candidate = c
	if s := v.Signature; s.Present {
		doc.Signatures = append(doc.Signatures, inputSig{Valid: s.Valid, Trusted: s.Valid, Signer: s.Signer, KeyID: s.KeyFingerprint,
			Kind: signatureKinds[s.Method], Issuer: s.Issuer, Error: s.Error})
	}
	for _, a := range req.Approvals {
		var p Principal
		if _, err := getJSON(st, key(prefixPrincipal, a.Approver), &p); err != nil {
			return nil, fmt.Errorf("reading approver %q: %w", a.Approver, err)
		}
		doc.Approvals = append(doc.Approvals, inputApproval{Approver: a.Approver, Meaning: a.Meaning, At: formatTime(a.At),
			Signed: a.Signed, SignatureValid: a.SignatureValid, ApproverRevoked: p.Revoked})
	}
	ev, err := shadowEvidenceFor(st, req.Model, req.Alias, req.Version)
	if err != nil {
		return nil, fmt.Errorf("reading shadow evidence: %w", err)
	}
	doc.Evidence = ev
	for _, m := range history {
		mv := inputMove{Version: m.VersionDigest, Label: m.VersionLabel, At: formatTime(m.Updated), By: m.UpdatedBy}
		if m.Decision != 0 {
			mv.Decision = strconv.FormatUint(m.Decision, 10)
		}
		doc.AliasHistory = append(doc.AliasHistory, mv)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("encoding the policy input: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Bounds on what a decision input carries of alias history. Every decision
// is recorded with its input, so an input that carried a whole history would
// make each decision larger than the last: the ledger, ListDecisions and a
// replay would grow with the square of the moves (600 moves of one alias
// gave 38 MB of decisions). What the default pack reads stays exact: the
// candidate's own latest move to the alias (rollback rules) and the latest
// period at each alias (prerequisite-alias rules) are always carried.
const (
	// maxInputMoves bounds alias_history: the latest moves of the alias,
	// plus the candidate's latest move when it is older than those.
	maxInputMoves = 100
	// maxInputPeriods bounds candidate.aliases: the latest periods, plus
	// the latest period at each alias the candidate held before those.
	maxInputPeriods = 100
)

// inputMoves returns what a decision input carries of an alias's moves,
// oldest first: the latest maxInputMoves moves and, when candidate's latest
// move to the alias is older than those, that move ahead of them. wasAt
// reports whether candidate was ever at the alias (the request's rollback
// flag), from the whole history.
func inputMoves(ctx context.Context, st stateReader, model, alias, candidate string) (moves []Alias, wasAt bool, err error) {
	// A ring of the latest moves: the history is read once, and memory
	// stays bounded however long it is.
	ring := make([]Alias, 0, maxInputMoves)
	var n, seen int
	var last Alias // candidate's latest move
	lastAt := -1   // its position in the history, or -1
	err = st.Scan(key(prefixHistory, model, alias, ""), func(_, v []byte) error {
		if err := checkCtx(ctx, &seen); err != nil {
			return err
		}
		var a Alias
		if err := json.Unmarshal(v, &a); err != nil {
			return err
		}
		if a.VersionDigest == candidate {
			last, lastAt = a, n
		}
		if len(ring) < maxInputMoves {
			ring = append(ring, a)
		} else {
			ring[n%maxInputMoves] = a
		}
		n++
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("reading the history of alias %q of model %q: %w", alias, model, err)
	}
	out := make([]Alias, 0, len(ring)+1)
	first := max(n-maxInputMoves, 0) // position of the oldest move kept
	if lastAt >= 0 && lastAt < first {
		out = append(out, last)
	}
	for i := first; i < n; i++ {
		out = append(out, ring[i%maxInputMoves])
	}
	return out, lastAt >= 0, nil
}

// aliasPeriods lists the periods version digest was at an alias of model,
// oldest first: the latest maxInputPeriods of them, and before those the
// latest period at each other alias it held.
func aliasPeriods(ctx context.Context, st stateReader, model, digest string) ([]inputPeriod, error) {
	out := []inputPeriod{}
	open := map[string]int{} // alias -> index in out of its open period
	var seen int
	err := st.Scan(key(prefixHistory, model, ""), func(_, v []byte) error {
		if err := checkCtx(ctx, &seen); err != nil {
			return err
		}
		var a Alias
		if err := json.Unmarshal(v, &a); err != nil {
			return err
		}
		if i, ok := open[a.Name]; ok {
			out[i].Until = formatTime(a.Updated)
			delete(open, a.Name)
		}
		if a.VersionDigest == digest {
			open[a.Name] = len(out)
			out = append(out, inputPeriod{Alias: a.Name, Since: formatTime(a.Updated)})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the alias history of model %q: %w", model, err)
	}
	slices.SortStableFunc(out, func(a, b inputPeriod) int { return cmp.Compare(a.Since, b.Since) })
	return boundPeriods(out), nil
}

// boundPeriods keeps the latest maxInputPeriods of ps (oldest first) and,
// ahead of them, the latest earlier period of every alias they do not name,
// so that the set of aliases the version held is always exact.
func boundPeriods(ps []inputPeriod) []inputPeriod {
	if len(ps) <= maxInputPeriods {
		return ps
	}
	cut := len(ps) - maxInputPeriods
	named := map[string]bool{}
	for _, p := range ps[cut:] {
		named[p.Alias] = true
	}
	var older []inputPeriod
	for i := cut - 1; i >= 0; i-- {
		if !named[ps[i].Alias] {
			named[ps[i].Alias] = true
			older = append(older, ps[i])
		}
	}
	slices.Reverse(older)
	return append(older, ps[cut:]...)
}

// ---- reads --------------------------------------------------------------------

func getRequest(st stateReader, id string) (PromotionRequest, error) {
	var req PromotionRequest
	found, err := getJSON(st, key(prefixPromotion, id), &req)
	if err != nil {
		return PromotionRequest{}, err
	}
	if !found {
		return PromotionRequest{}, errorf(ErrNotFound, "promotion request %s does not exist", QuoteInput(id))
	}
	return req, nil
}

// GetPromotion returns a request with its approvals and decision indexes.
func (r *Registry) GetPromotion(ctx context.Context, id string) (PromotionRequest, error) {
	return getRequest(r.log, id)
}

// ListPromotions lists requests in ledger order, of one model when model is
// not "".
func (r *Registry) ListPromotions(ctx context.Context, model string) ([]PromotionRequest, error) {
	var out []PromotionRequest
	var seen int
	err := r.log.Scan([]byte(prefixPromotion), func(_, v []byte) error {
		if err := checkCtx(ctx, &seen); err != nil {
			return err
		}
		var req PromotionRequest
		if err := json.Unmarshal(v, &req); err != nil {
			return err
		}
		if model == "" || req.Model == model {
			out = append(out, req)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing promotion requests: %w", err)
	}
	slices.SortFunc(out, func(a, b PromotionRequest) int { return cmp.Compare(a.LedgerIndex, b.LedgerIndex) })
	return out, nil
}

// GetDecision returns the decision recorded at ledger index, with its input.
func (r *Registry) GetDecision(ctx context.Context, index uint64) (DecisionRecord, error) {
	return r.decisionAt(ctx, r.log, index)
}

func (r *Registry) decisionAt(ctx context.Context, st stateReader, index uint64) (DecisionRecord, error) {
	var d DecisionRecord
	found, err := getJSON(st, decisionKey(index), &d)
	if err != nil {
		return DecisionRecord{}, err
	}
	if !found {
		return DecisionRecord{}, errorf(ErrNotFound, "ledger entry %d is not a recorded decision", index)
	}
	if d.InputBlob != "" {
		bd, err := blob.ParseDigest(d.InputBlob)
		if err != nil {
			return DecisionRecord{}, fmt.Errorf("decision %d: input blob %q: %w", index, d.InputBlob, err)
		}
		if d.Input, err = r.ReadBlob(ctx, bd, maxPolicyBody); err != nil {
			return DecisionRecord{}, fmt.Errorf("decision %d: reading its input: %w", index, err)
		}
	}
	return d, nil
}

// DecisionFilter selects recorded decisions.
type DecisionFilter struct {
	// From is the first ledger index to consider.
	From uint64
	// Since keeps decisions made at or after it, when not zero.
	Since time.Time
	// Model keeps one model's decisions, when not "".
	Model string
}

// decisionPageBytes bounds a page of ListDecisions by the size of the
// inputs it carries as well as by decisions: an input recorded before
// inputs were bounded (maxInputMoves) can be hundreds of kilobytes. A page
// stops taking decisions once their inputs add up to this many bytes (4 MiB;
// tests lower it); it always holds at least one decision.
var decisionPageBytes = 4 << 20

// ListDecisions returns one page of the recorded decisions f selects, in
// ledger order, with their inputs: at most limit of them (0: DefaultPageSize,
// at most MaxPageSize), fewer when their inputs reach 4 MiB.
// next is the ledger index to pass as f.From for the following page, or 0
// when there is none.
func (r *Registry) ListDecisions(ctx context.Context, f DecisionFilter, limit int) (ds []DecisionRecord, next uint64, err error) {
	n, err := pageSize(limit)
	if err != nil {
		return nil, 0, err
	}
	// The scan starts at f.From, so walking all pages reads each decision
	// key once. One more match than the page holds tells whether there is
	// a next page.
	var idx []uint64
	errStop := errors.New("stop")
	from := decisionKey(f.From)
	var seen int
	err = r.log.ScanFrom([]byte(prefixDecision), from, func(k, v []byte) error {
		if err := checkCtx(ctx, &seen); err != nil {
			return err
		}
		if len(k) != len(prefixDecision)+8 {
			return fmt.Errorf("%w: decision key %q is not the prefix and a ledger index", ErrProjectionMismatch, k)
		}
		if bytes.Compare(k, from) < 0 {
			return nil
		}
		if !f.Since.IsZero() || f.Model != "" {
			// Only the fields filtered on: decoding the input (inline in
			// the record) for every decision scanned would cost more than
			// the page.
			var d struct {
				Model string    `json:"model"`
				Time  time.Time `json:"time"`
			}
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("decision record %x: %w", k[len(prefixDecision):], err)
			}
			if !f.Since.IsZero() && d.Time.Before(f.Since) || f.Model != "" && d.Model != f.Model {
				return nil
			}
		}
		idx = append(idx, binary.BigEndian.Uint64(k[len(prefixDecision):]))
		if len(idx) > n {
			return errStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, 0, fmt.Errorf("listing decisions: %w", err)
	}
	size := 0
	for i, index := range idx {
		if i == n || i > 0 && size >= decisionPageBytes {
			return ds, index, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		d, err := r.decisionAt(ctx, r.log, index)
		if err != nil {
			return nil, 0, err
		}
		ds = append(ds, d)
		size += len(d.Input)
	}
	return ds, 0, nil
}

// Recorded converts decisions for policy.Replay (ids are ledger indexes).
func Recorded(ds []DecisionRecord) []policy.Recorded {
	out := make([]policy.Recorded, len(ds))
	for i, d := range ds {
		out[i] = policy.Recorded{ID: strconv.FormatUint(d.Index, 10), Input: d.Input, Result: d.Result}
	}
	return out
}

// ExplainDecision evaluates a recorded decision's input again with the set
// that made it and attributes each reason to its rule.
func (r *Registry) ExplainDecision(ctx context.Context, index uint64) (*policy.Explanation, error) {
	d, err := r.decisionAt(ctx, r.log, index)
	if err != nil {
		return nil, err
	}
	p, err := r.preparePolicy(ctx, r.log, d.PolicySet)
	if err != nil {
		return nil, err
	}
	return p.Explain(ctx, d.Input)
}

// ---- apply --------------------------------------------------------------------

func (p *projector) applyPromotion(ctx context.Context, tx stateTx, index uint64, ev promotionEvent, hd header, t time.Time) error {
	switch e := ev.(type) {
	case *policySetEvent:
		return applyPolicySet(tx, index, e, hd, t)
	case *dryRunStoppedEvent:
		return applyDryRunStopped(tx, e)
	case *principalKeySetEvent:
		return applyPrincipalKeySet(tx, index, e, hd, t)
	case *promotionRequestedEvent:
		return applyRequested(tx, index, e, hd, t)
	case *approvalRecordedEvent:
		req, err := getRequest(tx, e.Request)
		if errors.Is(err, ErrNotFound) {
			return reject("%v", err)
		} else if err != nil {
			return err
		}
		a, err := checkApproval(tx, &req, hd.Actor.ID, e, t)
		if err != nil {
			var de *Error
			if errors.As(err, &de) {
				return reject("%v", err)
			}
			return err
		}
		a.LedgerIndex = index
		req.Approvals = append(req.Approvals, a)
		req.Updated = t
		return setJSON(tx, key(prefixPromotion, req.ID), req)
	case *decisionEvent:
		return applyDecision(tx, index, e, hd, t)
	}
	return fmt.Errorf("no projection for %T", ev)
}

func applyRequested(tx stateTx, index uint64, e *promotionRequestedEvent, hd header, t time.Time) error {
	if err := validName("promotion request id", e.Request, maxIDLen); err != nil {
		return reject("%v", err)
	}
	if err := validName("alias", e.Alias, maxNameLen); err != nil {
		return reject("%v", err)
	}
	v, err := projectedVersion(tx, e.Model, e.Version)
	if err != nil {
		return err
	}
	if v.Label != e.Label {
		return reject("version %s has label %q, not %q", e.Version, v.Label, e.Label)
	}
	if _, err := tx.Get(key(prefixPromotion, e.Request)); err == nil {
		return reject("promotion request %s already exists", e.Request)
	} else if !errors.Is(err, ledger.ErrNotFound) {
		return err
	}
	req := PromotionRequest{ID: e.Request, Model: e.Model, Alias: e.Alias, Version: e.Version, Label: e.Label,
		Previous: e.Previous, Reason: e.Reason, Rollback: e.Rollback, Requester: hd.Actor.ID, RequesterName: hd.Actor.Name,
		Created: t, Updated: t, LedgerIndex: index, Status: StatusWaiting, Approvals: []Approval{}, Decisions: []uint64{}}
	if err := setJSON(tx, key(prefixPromotion, req.ID), req); err != nil {
		return err
	}
	return tx.Set(key(prefixOpen, e.Model, e.Alias, e.Request), nil)
}

func applyDecision(tx stateTx, index uint64, e *decisionEvent, hd header, t time.Time) error {
	req, err := getRequest(tx, e.Request)
	if errors.Is(err, ErrNotFound) {
		return reject("%v", err)
	} else if err != nil {
		return err
	}
	if req.Status != StatusWaiting {
		return reject("promotion request %s is %s; it is not decided again", req.ID, req.Status)
	}
	if e.Model != req.Model || e.Alias != req.Alias {
		return reject("decision names %s/%s, request %s is for %s/%s", e.Model, e.Alias, req.ID, req.Model, req.Alias)
	}
	if _, err := policy.ParseDigest(e.PolicySet); err != nil {
		return reject("policy set %q: %v", e.PolicySet, err)
	}
	// A decision counts only if made by the set in force at its place in the
	// ledger (and a dry run's by the draft then running): replaying it with
	// its own set would otherwise prove nothing about the rules that applied.
	// The server always records the default pack before the first decision.
	if active, found, err := getString(tx, keyPolicyActive); err != nil {
		return err
	} else if !found || active != e.PolicySet {
		return reject("decision names policy set %s, but the active set at this point of the ledger is %s", e.PolicySet, orNone(active))
	}
	if e.DryRun != nil {
		if draft, found, err := getString(tx, keyPolicyDryRun); err != nil {
			return err
		} else if !found || draft != e.DryRun.PolicySet {
			return reject("decision's dry run names policy set %s, but the dry-run set at this point of the ledger is %s", e.DryRun.PolicySet, orNone(draft))
		}
	}
	switch {
	case e.Status == StatusAllowed && !e.Result.Allow,
		e.Status != StatusAllowed && e.Status != StatusDenied && e.Status != StatusWaiting,
		e.Status == StatusWaiting && statusOf(&e.Result) != StatusWaiting:
		return reject("status %q does not follow from the result", e.Status)
	}
	if (len(e.Input) == 0) == (e.InputBlob == "") {
		return reject("exactly one of input and input_blob is required")
	}
	var bd blob.Digest
	if e.InputBlob != "" {
		if bd, err = blob.ParseDigest(e.InputBlob); err != nil {
			return reject("input blob %q: %v", e.InputBlob, err)
		}
		if hex.EncodeToString(bd[:]) != e.InputSHA256 {
			return reject("input blob %s does not match input_sha256 %s", e.InputBlob, e.InputSHA256)
		}
	} else if sum := sha256.Sum256(e.Input); hex.EncodeToString(sum[:]) != e.InputSHA256 {
		return reject("input does not match input_sha256 %s", e.InputSHA256)
	}
	d := DecisionRecord{Index: index, Request: e.Request, Model: e.Model, Alias: e.Alias, Trigger: e.Trigger, Actor: hd.Actor.ID,
		Time: t, PolicySet: e.PolicySet, Input: e.Input, InputBlob: e.InputBlob, InputSHA256: e.InputSHA256, Result: e.Result,
		Status: e.Status, OPAVersion: e.OPAVersion, EvalNanos: e.EvalNanos}
	if e.DryRun != nil {
		dr := DryRunResult(*e.DryRun)
		d.DryRun = &dr
	}
	if err := setJSON(tx, decisionKey(index), d); err != nil {
		return err
	}
	if e.InputBlob != "" {
		if err := tx.Set(blobRefKey(bd), nil); err != nil {
			return err
		}
	}
	req.Status, req.Updated = e.Status, t
	req.Decisions = append(req.Decisions, index)
	if err := setJSON(tx, key(prefixPromotion, req.ID), req); err != nil {
		return err
	}
	if e.Status == StatusWaiting {
		return nil
	}
	if err := tx.Delete(key(prefixOpen, req.Model, req.Alias, req.ID)); err != nil {
		return err
	}
	if e.Status != StatusAllowed {
		return nil
	}
	// The alias moves: every other request still waiting on it expected
	// the old target, so none of them can move it any more.
	var stale []string
	err = tx.Scan(key(prefixOpen, req.Model, req.Alias, ""), func(k, _ []byte) error {
		stale = append(stale, string(k[bytes.LastIndexByte(k, 0)+1:]))
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range stale {
		o, err := getRequest(tx, id)
		if err != nil {
			return err
		}
		o.Status, o.SupersededBy, o.Updated = StatusSuperseded, req.ID, t
		if err := setJSON(tx, key(prefixPromotion, id), o); err != nil {
			return err
		}
		if err := tx.Delete(key(prefixOpen, req.Model, req.Alias, id)); err != nil {
			return err
		}
	}
	return nil
}

// checkMoveDecision checks, for an alias move that names a decision, that
// the decision allowed exactly this move and was not carried out before,
// and marks it carried out. It runs last among the move's checks (state.go),
// so its write never precedes a rejection.
func checkMoveDecision(tx stateTx, e *aliasMovedEvent) error {
	if e.Decision == 0 {
		// Moves without a decision predate policy gating: once a policy set
		// is on record, every move must be carried by an allowing decision.
		if active, found, err := getString(tx, keyPolicyActive); err != nil {
			return err
		} else if found {
			return reject("alias move of %s/%s names no decision, but policy set %s is in force: moves are decided by policy", e.Model, e.Alias, active)
		}
		return nil
	}
	var d DecisionRecord
	found, err := getJSON(tx, decisionKey(e.Decision), &d)
	if err != nil {
		return err
	}
	if !found {
		return reject("alias move names decision %d, which is not a recorded decision", e.Decision)
	}
	if d.Status != StatusAllowed || d.Model != e.Model || d.Alias != e.Alias {
		return reject("decision %d (%s, %s/%s) does not allow moving %s/%s", e.Decision, d.Status, d.Model, d.Alias, e.Model, e.Alias)
	}
	req, err := getRequest(tx, d.Request)
	if err != nil {
		return reject("decision %d: %v", e.Decision, err)
	}
	if req.Version != e.Version || req.Previous != e.Previous {
		return reject("decision %d allowed %s -> %s, not %s -> %s", e.Decision, req.Previous, req.Version, e.Previous, e.Version)
	}
	k := append([]byte("decisionmoved/"), u64(e.Decision)...)
	if _, err := tx.Get(k); err == nil {
		return reject("decision %d was already carried out", e.Decision)
	} else if !errors.Is(err, ledger.ErrNotFound) {
		return err
	}
	return tx.Set(k, nil)
}

// orNone is s, or "none" when empty, for messages.
func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
