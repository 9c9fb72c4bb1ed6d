package registry

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/registry/blob"
	"github.com/hallmark-dev/hallmark/shadow"
)

// Shadow deployments (docs/design/events.md, "Shadow deployments";
// docs/design/shadow.md for the evidence itself).
//
// A deployment runs candidate C beside the version B its alias points at
// when it starts. Its evidence arrives as batches signed by the deployment's
// own agent: a principal with the single role shadow-agent, whose id is the
// deployment id, created in the same append as the deployment and revoked
// when it stops. The agent's Ed25519 key pair is made by the client; only
// the public key reaches the registry and the ledger.
//
// Each accepted batch is one ledger entry carrying the signed envelope
// (inline, or as a blob the entry names when it would not fit the ledger's
// 64 KiB entry limit). Replay verifies every batch again and merges it
// exactly as the live path did, so the merged evidence is rebuilt from the
// ledger and the blob store alone.

// DefaultShadowMinSample is the default ShadowStartInput.MinSample.
const DefaultShadowMinSample = 200

// maxShadowMinSample bounds MinSample (a larger one could never be met).
const maxShadowMinSample = 1 << 40

// ShadowComparator is how a deployment's proxies compare answers
// (shadow.ComparatorConfig) and its digest.
type ShadowComparator struct {
	Kind    string    `json:"kind"`
	Pointer string    `json:"pointer,omitempty"`
	AbsTol  float64   `json:"abs_tol,omitempty"`
	RelTol  float64   `json:"rel_tol,omitempty"`
	Labels  []string  `json:"labels,omitempty"`
	Edges   []float64 `json:"edges,omitempty"`
	Digest  string    `json:"digest"`
}

// Config returns the comparator's shadow configuration.
func (c ShadowComparator) Config() shadow.ComparatorConfig {
	return shadowComparatorRecord(c).config()
}

// ShadowDeployment is a shadow deployment as the projection holds it.
type ShadowDeployment struct {
	ID             string           `json:"id"`
	Model          string           `json:"model"`
	Alias          string           `json:"alias"`
	Candidate      string           `json:"candidate"`
	CandidateLabel string           `json:"candidate_label"`
	Baseline       string           `json:"baseline"`
	BaselineLabel  string           `json:"baseline_label"`
	PolicySet      string           `json:"policy_set,omitempty"`
	Comparator     ShadowComparator `json:"comparator"`
	SegmentHeader  string           `json:"segment_header,omitempty"`
	SegmentPointer string           `json:"segment_pointer,omitempty"`
	MinSample      uint64           `json:"min_sample"`
	// Agent is the agent principal's id (equal to ID).
	Agent      string    `json:"agent"`
	AgentKey   []byte    `json:"agent_key"`
	StartedBy  string    `json:"started_by"`
	Started    time.Time `json:"started"`
	Updated    time.Time `json:"updated"`
	Stopped    bool      `json:"stopped,omitempty"`
	StoppedBy  string    `json:"stopped_by,omitempty"`
	StoppedAt  time.Time `json:"stopped_at,omitzero"`
	StopReason string    `json:"stop_reason,omitempty"`
	// LastSequence is the sequence of the last accepted batch; Batches
	// counts accepted batches.
	LastSequence uint64 `json:"last_sequence"`
	Batches      uint64 `json:"batches"`
	LedgerIndex  uint64 `json:"ledger_index"`
}

// ShadowStartInput starts a deployment.
type ShadowStartInput struct {
	Model string
	// Candidate is a label or digest; Alias names the baseline.
	Candidate, Alias string
	Comparator       shadow.ComparatorConfig
	// At most one of SegmentHeader and SegmentPointer.
	SegmentHeader, SegmentPointer string
	// MinSample defaults to DefaultShadowMinSample.
	MinSample uint64
	// AgentKey is the agent's Ed25519 public key.
	AgentKey ed25519.PublicKey
	// ID names the deployment; the default is a random "shd_..." id.
	ID string
}

// ShadowReport is the outcome of ReportShadowEvidence.
type ShadowReport struct {
	Batch    string
	Sequence uint64
	// Duplicate is true when the batch had been accepted before: nothing
	// was recorded again.
	Duplicate   bool
	LedgerIndex uint64
}

// shadowInlineLimit is the largest base64 batch kept inline in its entry:
// the rest of an evidence entry is small and fixed in shape, and 2 KiB
// covers its header, ids and digests. Tests lower it to exercise blobs.
var shadowInlineLimit = ledger.MaxEntrySize - 2048

// shadowIDRand is the source of deployment ids; tests may replace it.
var shadowIDRand = rand.Reader

func newShadowID() (string, error) {
	var b [15]byte
	if _, err := io.ReadFull(shadowIDRand, b[:]); err != nil {
		return "", fmt.Errorf("generating deployment id: %w", err)
	}
	return shadowIDPrefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])), nil
}

// StartShadow records a shadow deployment of in.Candidate against the
// version in.Alias points at now, with the digest of the policy set active
// at this moment, and creates its agent principal (role shadow-agent, id =
// deployment id). It returns the deployment and the agent's bearer token,
// which is stored nowhere (only its hash).
func (r *Registry) StartShadow(ctx context.Context, actor Actor, in ShadowStartInput) (ShadowDeployment, string, error) {
	if err := validActor(actor); err != nil {
		return ShadowDeployment{}, "", err
	}
	if err := validName("model name", in.Model, maxNameLen); err != nil {
		return ShadowDeployment{}, "", err
	}
	if err := validName("alias", in.Alias, maxNameLen); err != nil {
		return ShadowDeployment{}, "", err
	}
	if in.Candidate == "" {
		return ShadowDeployment{}, "", errorf(ErrInvalidArgument, "no candidate version: give a label or sha256:<hex>")
	}
	if len(in.AgentKey) != ed25519.PublicKeySize {
		return ShadowDeployment{}, "", errorf(ErrInvalidArgument, "agent public key is %d bytes, want a %d-byte Ed25519 public key", len(in.AgentKey), ed25519.PublicKeySize)
	}
	cmp, err := shadow.NewComparator(in.Comparator)
	if err != nil {
		return ShadowDeployment{}, "", errorf(ErrInvalidArgument, "comparator: %v", err)
	}
	if err := validSegmentSource(in.SegmentHeader, in.SegmentPointer); err != nil {
		return ShadowDeployment{}, "", err
	}
	if in.MinSample == 0 {
		in.MinSample = DefaultShadowMinSample
	}
	if in.MinSample > maxShadowMinSample {
		return ShadowDeployment{}, "", errorf(ErrInvalidArgument, "min sample %d is more than %d", in.MinSample, uint64(maxShadowMinSample))
	}
	if in.ID == "" {
		if in.ID, err = newShadowID(); err != nil {
			return ShadowDeployment{}, "", err
		}
	} else if err := validShadowID(in.ID); err != nil {
		return ShadowDeployment{}, "", err
	}
	c := in.Comparator
	if c.Kind == "" {
		c.Kind = shadow.KindLabel
	}
	rec := shadowComparatorRecord{Kind: string(c.Kind), Pointer: c.Pointer, AbsTol: c.AbsTol, RelTol: c.RelTol, Labels: c.Labels, Edges: c.Edges, Digest: cmp.Digest()}
	tok, err := newToken()
	if err != nil {
		return ShadowDeployment{}, "", err
	}
	var out ShadowDeployment
	_, err = r.log.Append(ctx, func(tx *ledger.Tx) error {
		if err := r.catchUp(ctx, tx); err != nil {
			return err
		}
		cand, _, err := r.resolve(tx, in.Model, in.Candidate)
		if err != nil {
			return err
		}
		if cand.Revoked {
			return errorf(ErrFailedPrecondition, "model %q: candidate version %q (%s) is revoked", in.Model, cand.Label, cand.Digest)
		}
		var a Alias
		if found, err := getJSON(tx, key(prefixAlias, in.Model, in.Alias), &a); err != nil {
			return err
		} else if !found {
			return errorf(ErrFailedPrecondition, "model %q: alias %q is not set, so there is no baseline to shadow", in.Model, in.Alias)
		}
		if a.VersionDigest == cand.Digest {
			return errorf(ErrFailedPrecondition, "model %q: alias %q already points at %q (%s); the candidate must differ from the baseline", in.Model, in.Alias, cand.Label, cand.Digest)
		}
		if _, err := tx.Get(key(prefixShadow, in.ID)); err == nil {
			return errorf(ErrAlreadyExists, "shadow deployment %q already exists", in.ID)
		} else if !errors.Is(err, ledger.ErrNotFound) {
			return err
		}
		if _, err := tx.Get(key(prefixPrincipal, in.ID)); err == nil {
			return errorf(ErrAlreadyExists, "principal %q already exists; choose another deployment id", in.ID)
		} else if !errors.Is(err, ledger.ErrNotFound) {
			return err
		}
		policySet, err := activePolicySetDigest(tx)
		if err != nil {
			return fmt.Errorf("reading the active policy set: %w", err)
		}
		h, err := r.header(tx, TypePrincipalAdded, actor)
		if err != nil {
			return err
		}
		add, err := encodeEvent(&principalAddedEvent{header: h,
			Principal:   principalRecord{ID: in.ID, Name: "shadow agent of " + in.ID, Roles: []Role{RoleShadowAgent}},
			TokenSHA256: tokenHash(tok)})
		if err != nil {
			return err
		}
		h.Type = TypeShadowStarted
		start, err := encodeEvent(&shadowStartedEvent{header: h, Deployment: in.ID, Model: in.Model, Alias: in.Alias,
			Candidate: cand.Digest, CandidateLabel: cand.Label, Baseline: a.VersionDigest, BaselineLabel: a.VersionLabel,
			PolicySet: policySet, Comparator: rec, SegmentHeader: in.SegmentHeader, SegmentPointer: in.SegmentPointer,
			MinSample: in.MinSample, Agent: in.ID, AgentKey: base64.StdEncoding.EncodeToString(in.AgentKey)})
		if err != nil {
			return err
		}
		if _, err := r.commit(ctx, tx, add, start); err != nil {
			return err
		}
		out, err = getShadow(tx, in.ID)
		return err
	})
	if err != nil {
		return ShadowDeployment{}, "", err
	}
	return out, tok, nil
}

// ReportShadowEvidence accepts one signed evidence batch (the bytes of
// shadow.SignedBatch.Marshal) for deployment id. The caller must be the
// deployment's agent or an admin relaying the agent's batches (the
// signature, not the caller, proves where the evidence came from).
//
// The batch is refused, and nothing is recorded, when the signature does not
// verify with the agent's key (ErrInvalidArgument), when it belongs to
// another deployment or agent, was gathered under another comparator
// (digest, bins or kind), or cannot be merged into the deployment's
// evidence (all ErrInvalidArgument), when its sequence is not
// above the last accepted one (ErrAlreadyExists), or when the deployment is
// stopped (ErrFailedPrecondition). A resend of a batch already accepted,
// byte for byte, returns Duplicate == true and records nothing: delivery
// retries are safe.
func (r *Registry) ReportShadowEvidence(ctx context.Context, actor Actor, id string, signed []byte) (ShadowReport, error) {
	if err := validActor(actor); err != nil {
		return ShadowReport{}, err
	}
	if err := validShadowID(id); err != nil {
		return ShadowReport{}, err
	}
	if len(signed) > maxSignedBatch {
		return ShadowReport{}, errorf(ErrInvalidArgument, "signed batch is %d bytes, more than %d", len(signed), maxSignedBatch)
	}
	sb, err := shadow.ParseSignedBatch(signed)
	if err != nil {
		return ShadowReport{}, errorf(ErrInvalidArgument, "signed batch: %v", err)
	}
	// Check against committed state first, so that a refusal costs no
	// sequencer time and a large batch's blob is stored only when the batch
	// passes.
	if rep, _, err := r.checkReport(r.log, actor, id, sb); err != nil || rep.Duplicate {
		return rep, err
	}
	payload := payloadDigest(sb)
	encoded := base64.StdEncoding.EncodeToString(signed)
	var blobRef string
	if len(encoded) > shadowInlineLimit {
		d, err := r.putBytes(ctx, "evidence batch", signed)
		if err != nil {
			return ShadowReport{}, err
		}
		blobRef, encoded = d.String(), ""
	}
	var out ShadowReport
	_, err = r.log.Append(ctx, func(tx *ledger.Tx) error {
		if err := r.catchUp(ctx, tx); err != nil {
			return err
		}
		rep, b, err := r.checkReport(tx, actor, id, sb)
		if err != nil {
			return err
		}
		if rep.Duplicate {
			out = rep
			return errNoChange
		}
		h, err := r.header(tx, TypeShadowEvidence, actor)
		if err != nil {
			return err
		}
		e, err := encodeEvent(&shadowEvidenceEvent{header: h, Deployment: id, Agent: b.AgentID, Sequence: b.Sequence,
			Batch: b.ID(), PayloadSHA256: payload, Signed: encoded, SignedBlob: blobRef})
		if err != nil {
			return err
		}
		if len(e) > ledger.MaxEntrySize {
			return fmt.Errorf("evidence entry is %d bytes, more than the ledger's %d", len(e), ledger.MaxEntrySize)
		}
		i, err := r.commit(ctx, tx, e)
		if err != nil {
			return err
		}
		out = ShadowReport{Batch: b.ID(), Sequence: b.Sequence, LedgerIndex: i}
		return nil
	})
	if err != nil && !errors.Is(err, errNoChange) {
		return ShadowReport{}, err
	}
	return out, nil
}

// checkReport checks a batch report against st: who may report, whether the
// batch was accepted already (Duplicate), and checkShadowBatch.
//
// Nothing but the envelope and the payload's fixed-size header is decoded
// before the signature has verified with the deployment's agent key: a
// batch from anyone else costs a hash of its bytes, not a decoding of its
// segments. The order of the checks keeps the answers of the live path:
// an exact resend of an accepted batch is Duplicate even once the
// deployment has stopped; a batch with a bad signature is refused as such.
func (r *Registry) checkReport(st stateReader, actor Actor, id string, sb *shadow.SignedBatch) (ShadowReport, *shadow.Batch, error) {
	d, err := getShadow(st, id)
	if err != nil {
		return ShadowReport{}, nil, err
	}
	if actor.ID != d.Agent && !actor.Has(RoleAdmin) {
		return ShadowReport{}, nil, errorf(ErrPermissionDenied, "principal %q may not report evidence for shadow deployment %q: only its agent %q (or an admin relaying its signed batches) may", actor.ID, id, d.Agent)
	}
	// A resend of an accepted batch: same sequence, a signature that
	// verifies, and the payload accepted then.
	if h, err := shadow.PeekBatch(sb.Payload); err == nil && h.DeploymentID == d.ID && h.AgentID == d.Agent {
		var rec shadowBatchRecord
		found, err := getJSON(st, shadowBatchKey(d.ID, h.Sequence), &rec)
		if err != nil {
			return ShadowReport{}, nil, err
		}
		if found {
			if err := shadow.VerifySignature(sb, d.AgentKey); err != nil {
				return ShadowReport{}, nil, batchError(d, err)
			}
			if rec.PayloadSHA256 != payloadDigest(sb) {
				// Signed by the agent, so decoding it costs only what
				// the agent chose to spend; a malformed one is refused
				// as malformed.
				if _, err := shadow.DecodeBatch(sb.Payload); err != nil {
					return ShadowReport{}, nil, batchError(d, err)
				}
				return ShadowReport{}, nil, errorf(ErrAlreadyExists, "evidence batch %s of deployment %q: sequence %d was already accepted with other content (ledger entry %d); a sequence number is used once",
					h.ID(), d.ID, h.Sequence, rec.LedgerIndex)
			}
			return ShadowReport{Batch: rec.Batch, Sequence: h.Sequence, Duplicate: true, LedgerIndex: rec.LedgerIndex}, nil, nil
		}
	}
	_, b, _, err := checkShadowBatch(st, id, sb)
	if err != nil {
		return ShadowReport{}, nil, err
	}
	return ShadowReport{}, b, nil
}

// StopShadow stops a deployment: later evidence is refused, and its agent
// principal is revoked in the same append. Its evidence stays, and keeps
// counting as the evidence for its candidate.
func (r *Registry) StopShadow(ctx context.Context, actor Actor, id, reason string) (ShadowDeployment, error) {
	if err := validActor(actor); err != nil {
		return ShadowDeployment{}, err
	}
	if err := validShadowID(id); err != nil {
		return ShadowDeployment{}, err
	}
	if err := validText("reason", reason, maxTextLen); err != nil {
		return ShadowDeployment{}, err
	}
	var out ShadowDeployment
	_, err := r.log.Append(ctx, func(tx *ledger.Tx) error {
		if err := r.catchUp(ctx, tx); err != nil {
			return err
		}
		d, err := getShadow(tx, id)
		if err != nil {
			return err
		}
		if d.Stopped {
			return errorf(ErrFailedPrecondition, "shadow deployment %q is already stopped (at %s by %s)", id, formatTime(d.StoppedAt), d.StoppedBy)
		}
		h, err := r.header(tx, TypeShadowStopped, actor)
		if err != nil {
			return err
		}
		stop, err := encodeEvent(&shadowStoppedEvent{header: h, Deployment: id, Reason: reason})
		if err != nil {
			return err
		}
		entries := [][]byte{stop}
		var agent Principal
		if found, err := getJSON(tx, key(prefixPrincipal, d.Agent), &agent); err != nil {
			return err
		} else if found && !agent.Revoked {
			h.Type = TypePrincipalRevoked
			rev, err := encodeEvent(&principalRevokedEvent{header: h, Principal: d.Agent, Reason: "shadow deployment " + id + " stopped"})
			if err != nil {
				return err
			}
			entries = append(entries, rev)
		}
		if _, err := r.commit(ctx, tx, entries...); err != nil {
			return err
		}
		out, err = getShadow(tx, id)
		return err
	})
	if err != nil {
		return ShadowDeployment{}, err
	}
	return out, nil
}

// GetShadow returns a deployment and its evidence summary.
func (r *Registry) GetShadow(ctx context.Context, id string) (ShadowDeployment, shadow.Summary, error) {
	d, err := getShadow(r.log, id)
	if err != nil {
		return ShadowDeployment{}, shadow.Summary{}, err
	}
	s, err := summaryOf(r.log, d)
	if err != nil {
		return ShadowDeployment{}, shadow.Summary{}, err
	}
	return d, s, nil
}

// ListShadows lists deployments by id, of one model when model is not "".
func (r *Registry) ListShadows(ctx context.Context, model string) ([]ShadowDeployment, error) {
	if model != "" {
		if err := validName("model name", model, maxNameLen); err != nil {
			return nil, err
		}
	}
	var out []ShadowDeployment
	err := shadowListScan(r.log, func(d ShadowDeployment) error {
		if model == "" || d.Model == model {
			out = append(out, d)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing shadow deployments: %w", err)
	}
	return out, nil
}

// ShadowEvidence returns the policy input's evidence object for candidate
// (a version digest) proposed for alias of model, or nil when there is
// none (see shadowEvidenceFor).
func (r *Registry) ShadowEvidence(ctx context.Context, model, alias, candidate string) (json.RawMessage, error) {
	return shadowEvidenceFor(r.log, model, alias, candidate)
}

// shadowEvidenceFor returns the current shadow evidence summary (the JSON
// shape of shadow.Summary, as documented for `input.evidence` in
// docs/policy-authoring.md) for candidate (a version digest) proposed for
// alias of model, or nil when no shadow deployment ran that candidate against
// the version the alias points at now.
//
// Of the deployments of candidate against alias, it takes the most recently
// started one whose baseline is the alias's current target, running or
// stopped. If the alias moved while a deployment ran, that deployment
// compared the candidate with a version that is no longer the one it would
// replace: its evidence does not count (nil, unless an earlier or later
// deployment did run against the current target), and a new shadow
// deployment is needed.
//
// Owned by the shadow work (issue 6); the promotions work (issue 5) calls it
// when it builds a decision's policy input.
func shadowEvidenceFor(st stateReader, model, alias, candidate string) (json.RawMessage, error) {
	var a Alias
	found, err := getJSON(st, key(prefixAlias, model, alias), &a)
	if err != nil {
		return nil, err
	}
	if !found || !strings.HasPrefix(candidate, blob.DigestPrefix) {
		return nil, nil
	}
	var best string
	err = st.Scan(shadowIdxPrefix(model, alias, candidate), func(_, v []byte) error {
		var d ShadowDeployment
		if found, err := getJSON(st, key(prefixShadow, string(v)), &d); err != nil {
			return err
		} else if !found {
			return fmt.Errorf("%w: shadow index names missing deployment %q", ErrProjectionMismatch, v)
		}
		if d.Baseline == a.VersionDigest {
			best = d.ID // keys are in start order: the last match wins
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("finding shadow evidence: %w", err)
	}
	if best == "" {
		return nil, nil
	}
	d, err := getShadow(st, best)
	if err != nil {
		return nil, err
	}
	s, err := summaryOf(st, d)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encoding shadow evidence: %w", err)
	}
	return b, nil
}
