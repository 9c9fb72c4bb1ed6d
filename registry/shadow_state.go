package registry

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
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

// Shadow state keys (docs/design/events.md, "Projection").
const (
	prefixShadow      = "shadow/"      // + id -> ShadowDeployment JSON
	prefixShadowEv    = "shadowev/"    // + id -> merged evidence (shadow.MarshalEvidence)
	prefixShadowBatch = "shadowbatch/" // + id NUL u64 sequence -> shadowBatchRecord JSON
	prefixShadowIdx   = "shadowidx/"   // + model NUL alias NUL candidate-hex NUL u64 index -> id
)

func shadowBatchKey(id string, seq uint64) []byte {
	return append(key(prefixShadowBatch, id, ""), u64(seq)...)
}

func shadowIdxPrefix(model, alias, candidate string) []byte {
	return key(prefixShadowIdx, model, alias, strings.TrimPrefix(candidate, blob.DigestPrefix), "")
}

// shadowBatchRecord is what the projection keeps of an accepted batch: enough
// to answer a resend of it without counting it again.
type shadowBatchRecord struct {
	Batch         string `json:"batch"`
	PayloadSHA256 string `json:"payload_sha256"`
	LedgerIndex   uint64 `json:"ledger_index"`
}

// maxSignedBatch bounds one signed evidence batch (a batch of
// shadow.DefaultMaxSegments segments with full sketches is well below it).
const maxSignedBatch = 4 << 20

// MaxShadowSegments is the most named segments a deployment's evidence
// keeps; further names are folded into shadow.OverflowSegment.
const MaxShadowSegments = shadow.DefaultMaxSegments

func (c shadowComparatorRecord) config() shadow.ComparatorConfig {
	return shadow.ComparatorConfig{Kind: shadow.Kind(c.Kind), Pointer: c.Pointer, AbsTol: c.AbsTol, RelTol: c.RelTol, Labels: c.Labels, Edges: c.Edges}
}

func (p *projector) applyShadow(ctx context.Context, tx stateTx, index uint64, ev shadowEvent, hd header, t time.Time) error {
	switch e := ev.(type) {
	case *shadowStartedEvent:
		return p.applyShadowStarted(tx, index, e, hd, t)
	case *shadowEvidenceEvent:
		return p.applyShadowEvidence(ctx, tx, index, e, t)
	case *shadowStoppedEvent:
		var d ShadowDeployment
		found, err := getJSON(tx, key(prefixShadow, e.Deployment), &d)
		if err != nil {
			return err
		}
		if !found {
			return reject("shadow deployment %q does not exist", e.Deployment)
		}
		if d.Stopped {
			return reject("shadow deployment %q is already stopped", e.Deployment)
		}
		d.Stopped, d.StoppedBy, d.StoppedAt, d.StopReason = true, hd.Actor.ID, t, e.Reason
		return setJSON(tx, key(prefixShadow, d.ID), d)
	}
	return fmt.Errorf("no projection for %T", ev)
}

func (p *projector) applyShadowStarted(tx stateTx, index uint64, e *shadowStartedEvent, hd header, t time.Time) error {
	if err := validShadowID(e.Deployment); err != nil {
		return reject("%v", err)
	}
	if err := validName("model name", e.Model, maxNameLen); err != nil {
		return reject("%v", err)
	}
	if err := validName("alias", e.Alias, maxNameLen); err != nil {
		return reject("%v", err)
	}
	key32, err := base64.StdEncoding.DecodeString(e.AgentKey)
	if err != nil || len(key32) != ed25519.PublicKeySize {
		return reject("agent key is not a base64 Ed25519 public key")
	}
	cmp, err := shadow.NewComparator(e.Comparator.config())
	if err != nil {
		return reject("comparator: %v", err)
	}
	if cmp.Digest() != e.Comparator.Digest {
		return reject("comparator digest is %s, entry says %s", cmp.Digest(), e.Comparator.Digest)
	}
	if err := validSegmentSource(e.SegmentHeader, e.SegmentPointer); err != nil {
		return reject("%v", err)
	}
	if _, err := tx.Get(key(prefixShadow, e.Deployment)); err == nil {
		return reject("shadow deployment %q already exists", e.Deployment)
	} else if !errors.Is(err, ledger.ErrNotFound) {
		return err
	}
	var cand Version
	if found, err := getJSON(tx, versionKey(e.Model, e.Candidate), &cand); err != nil {
		return err
	} else if !found {
		return reject("candidate version %s of model %q does not exist", e.Candidate, e.Model)
	}
	if cand.Revoked {
		return reject("candidate version %s of model %q is revoked", e.Candidate, e.Model)
	}
	if cand.Label != e.CandidateLabel {
		return reject("candidate %s has label %q, not %q", e.Candidate, cand.Label, e.CandidateLabel)
	}
	var a Alias
	if found, err := getJSON(tx, key(prefixAlias, e.Model, e.Alias), &a); err != nil {
		return err
	} else if !found {
		return reject("alias %q of model %q is not set", e.Alias, e.Model)
	}
	if a.VersionDigest != e.Baseline || a.VersionLabel != e.BaselineLabel {
		return reject("alias %q points at %s, not the baseline %s", e.Alias, a.VersionDigest, e.Baseline)
	}
	if e.Baseline == e.Candidate {
		return reject("the candidate is the baseline")
	}
	var agent Principal
	if found, err := getJSON(tx, key(prefixPrincipal, e.Agent), &agent); err != nil {
		return err
	} else if !found {
		return reject("agent principal %q does not exist", e.Agent)
	}
	if agent.Revoked || len(agent.Roles) != 1 || agent.Roles[0] != RoleShadowAgent || agent.LedgerIndex+1 != index {
		return reject("agent principal %q is not a fresh shadow-agent added just before the deployment", e.Agent)
	}
	d := ShadowDeployment{
		ID: e.Deployment, Model: e.Model, Alias: e.Alias, Candidate: e.Candidate, CandidateLabel: e.CandidateLabel,
		Baseline: e.Baseline, BaselineLabel: e.BaselineLabel, PolicySet: e.PolicySet,
		Comparator:    ShadowComparator(e.Comparator),
		SegmentHeader: e.SegmentHeader, SegmentPointer: e.SegmentPointer, MinSample: e.MinSample,
		Agent: e.Agent, AgentKey: key32, StartedBy: hd.Actor.ID, Started: t, Updated: t, LedgerIndex: index,
	}
	evb, err := shadow.MarshalEvidence(shadow.NewEvidence(cmp))
	if err != nil {
		return fmt.Errorf("encoding empty evidence: %w", err)
	}
	if err := setJSON(tx, key(prefixShadow, d.ID), d); err != nil {
		return err
	}
	if err := tx.Set(key(prefixShadowEv, d.ID), evb); err != nil {
		return err
	}
	return tx.Set(append(shadowIdxPrefix(d.Model, d.Alias, d.Candidate), u64(index)...), []byte(d.ID))
}

func (p *projector) applyShadowEvidence(ctx context.Context, tx stateTx, index uint64, e *shadowEvidenceEvent, t time.Time) error {
	var signed []byte
	var signedBlob blob.Digest
	switch {
	case e.Signed != "" && e.SignedBlob != "":
		return reject("both an inline batch and a batch blob")
	case e.Signed != "":
		b, err := base64.StdEncoding.DecodeString(e.Signed)
		if err != nil {
			return reject("signed batch is not base64: %v", err)
		}
		signed = b
	case e.SignedBlob != "":
		d, err := blob.ParseDigest(e.SignedBlob)
		if err != nil {
			return reject("batch blob %q: %v", e.SignedBlob, err)
		}
		if signed, err = p.readShadowBatch(ctx, d); err != nil {
			return err
		}
		signedBlob = d
	default:
		return reject("no signed batch")
	}
	sb, err := shadow.ParseSignedBatch(signed)
	if err != nil {
		return reject("%v", err)
	}
	d, b, merged, err := checkShadowBatch(tx, e.Deployment, sb)
	if err != nil {
		var de *Error
		if errors.As(err, &de) {
			return reject("%s", de.Msg)
		}
		return err
	}
	if d.Agent != e.Agent || b.Sequence != e.Sequence || b.ID() != e.Batch || payloadDigest(sb) != e.PayloadSHA256 {
		return reject("entry's agent, sequence, batch id or payload digest does not match the batch")
	}
	return p.mergeShadowBatch(tx, index, d, b, merged, e.PayloadSHA256, signedBlob, t)
}

// mergeShadowBatch writes an accepted batch into the deployment's state;
// merged is the deployment's evidence with the batch's merged in, as
// checkShadowBatch computed it.
func (p *projector) mergeShadowBatch(tx stateTx, index uint64, d ShadowDeployment, b *shadow.Batch, merged *shadow.Evidence, payload string, signedBlob blob.Digest, t time.Time) error {
	evb, err := shadow.MarshalEvidence(merged)
	if err != nil {
		return fmt.Errorf("encoding evidence of %s: %w", d.ID, err)
	}
	d.LastSequence, d.Batches, d.Updated = b.Sequence, d.Batches+1, t
	if err := tx.Set(key(prefixShadowEv, d.ID), evb); err != nil {
		return err
	}
	if err := setJSON(tx, key(prefixShadow, d.ID), d); err != nil {
		return err
	}
	if err := setJSON(tx, shadowBatchKey(d.ID, b.Sequence), shadowBatchRecord{Batch: b.ID(), PayloadSHA256: payload, LedgerIndex: index}); err != nil {
		return err
	}
	if signedBlob != (blob.Digest{}) {
		return tx.Set(blobRefKey(signedBlob), nil)
	}
	return nil
}

func (p *projector) readShadowBatch(ctx context.Context, d blob.Digest) ([]byte, error) {
	if p.blobs == nil {
		return nil, fmt.Errorf("batch blob %s: no blob store", d)
	}
	r, err := p.blobs.Open(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("opening batch blob %s: %w", d, err)
	}
	defer r.Close()
	if r.Size() > maxSignedBatch {
		return nil, reject("batch blob %s is %d bytes, more than %d", d, r.Size(), maxSignedBatch)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("reading batch blob %s: %w", d, err)
	}
	return b, nil
}

func payloadDigest(sb *shadow.SignedBatch) string {
	h := sha256.Sum256(sb.Payload)
	return blob.DigestPrefix + hex.EncodeToString(h[:])
}

// checkShadowBatch is the one check of a batch against the state, for live
// reports and for replay: the deployment exists and runs, shadow.VerifyBatch
// accepts the batch for its agent's key above the last accepted sequence,
// gathered under the deployment's comparator (digest, bins and kind, checked
// before the segments are decoded), and the batch merges into the
// deployment's evidence. It returns that merged evidence, which the
// projection stores: whatever passes here cannot fail inside the sequencer.
// Failures are domain errors naming the batch.
func checkShadowBatch(st stateReader, id string, sb *shadow.SignedBatch) (ShadowDeployment, *shadow.Batch, *shadow.Evidence, error) {
	d, err := getShadow(st, id)
	if err != nil {
		return ShadowDeployment{}, nil, nil, err
	}
	if d.Stopped {
		return d, nil, nil, errorf(ErrFailedPrecondition, "shadow deployment %q was stopped at %s: it takes no more evidence", id, formatTime(d.StoppedAt))
	}
	cmp, err := shadow.NewComparator(d.Comparator.Config())
	if err != nil || cmp.Digest() != d.Comparator.Digest {
		return d, nil, nil, fmt.Errorf("%w: shadow deployment %q: recorded comparator does not rebuild (%v)", ErrProjectionMismatch, id, err)
	}
	b, err := shadow.VerifyBatch(sb, shadow.Expectation{DeploymentID: d.ID, AgentID: d.Agent, PublicKey: d.AgentKey,
		LastSequence: d.LastSequence, MaxSegments: MaxShadowSegments, Comparator: cmp})
	if err != nil {
		return d, nil, nil, batchError(d, err)
	}
	raw, err := st.Get(key(prefixShadowEv, d.ID))
	if err != nil {
		return d, nil, nil, fmt.Errorf("reading evidence of %s: %w", d.ID, err)
	}
	merged, err := shadow.UnmarshalEvidence(raw)
	if err != nil {
		return d, nil, nil, fmt.Errorf("decoding stored evidence of %s: %w", d.ID, err)
	}
	if err := merged.MergeLimit(b.Evidence, MaxShadowSegments); err != nil {
		return d, nil, nil, errorf(ErrInvalidArgument, "evidence batch %s cannot be added to the evidence of deployment %q: %v", b.ID(), id, err)
	}
	return d, b, merged, nil
}

func batchError(d ShadowDeployment, err error) error {
	switch {
	case errors.Is(err, shadow.ErrBadSignature):
		return errorf(ErrInvalidArgument, "evidence batch for deployment %q: %v (agent %q's registered key)", d.ID, err, d.Agent)
	case errors.Is(err, shadow.ErrReplay):
		return errorf(ErrAlreadyExists, "evidence batch for deployment %q: %v (last accepted sequence %d)", d.ID, err, d.LastSequence)
	default:
		return errorf(ErrInvalidArgument, "evidence batch for deployment %q: %v", d.ID, err)
	}
}

func getShadow(st stateReader, id string) (ShadowDeployment, error) {
	if err := validShadowID(id); err != nil {
		return ShadowDeployment{}, err
	}
	var d ShadowDeployment
	found, err := getJSON(st, key(prefixShadow, id), &d)
	if err != nil {
		return ShadowDeployment{}, err
	}
	if !found {
		return ShadowDeployment{}, errorf(ErrNotFound, "shadow deployment %q does not exist", id)
	}
	return d, nil
}

// summaryOf computes a deployment's evidence summary from the projection.
func summaryOf(st stateReader, d ShadowDeployment) (shadow.Summary, error) {
	raw, err := st.Get(key(prefixShadowEv, d.ID))
	if err != nil {
		return shadow.Summary{}, fmt.Errorf("reading evidence of %s: %w", d.ID, err)
	}
	ev, err := shadow.UnmarshalEvidence(raw)
	if err != nil {
		return shadow.Summary{}, fmt.Errorf("decoding evidence of %s: %w", d.ID, err)
	}
	return shadow.Summarize(shadow.Deployment{
		ID: d.ID, Candidate: d.Candidate, Baseline: d.Baseline, Alias: d.Alias, PolicySet: d.PolicySet,
		StartedAt: d.Started, UpdatedAt: d.Updated, Stopped: d.Stopped,
	}, ev, d.MinSample), nil
}

// shadowIDPrefix starts every deployment id.
const shadowIDPrefix = "shd_"

// validShadowID: "shd_" and 1..60 ASCII letters, digits, '_' or '-'. The id
// is also the agent principal's id, so it must be a valid principal id.
func validShadowID(id string) error {
	rest, ok := strings.CutPrefix(id, shadowIDPrefix)
	if !ok || rest == "" || len(id) > maxIDLen {
		return errorf(ErrInvalidArgument, "shadow deployment id %q: want %s followed by 1..%d letters, digits, '_' or '-'", id, shadowIDPrefix, maxIDLen-len(shadowIDPrefix))
	}
	for _, c := range rest {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return errorf(ErrInvalidArgument, "shadow deployment id %q: character %q is not allowed", id, c)
		}
	}
	if c := id[len(id)-1]; c == '_' || c == '-' {
		return errorf(ErrInvalidArgument, "shadow deployment id %q must end with a letter or digit", id)
	}
	return nil
}

func validSegmentSource(header, pointer string) error {
	if header != "" && pointer != "" {
		return errorf(ErrInvalidArgument, "give a segment header or a segment JSON pointer, not both")
	}
	if header != "" {
		if len(header) > maxNameLen {
			return errorf(ErrInvalidArgument, "segment header %q is longer than %d bytes", header, maxNameLen)
		}
		for _, c := range header {
			// RFC 9110 token characters.
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", c)) {
				return errorf(ErrInvalidArgument, "segment header %q is not an HTTP header name", header)
			}
		}
	}
	if pointer != "" {
		if len(pointer) > maxTextLen {
			return errorf(ErrInvalidArgument, "segment pointer is longer than %d bytes", maxTextLen)
		}
		if _, err := shadow.ParsePointer(pointer); err != nil {
			return errorf(ErrInvalidArgument, "segment pointer %q: %v", pointer, err)
		}
	}
	return nil
}

// shadowListScan calls fn for every deployment in id order.
func shadowListScan(st stateReader, fn func(d ShadowDeployment) error) error {
	return st.Scan([]byte(prefixShadow), func(_, v []byte) error {
		var d ShadowDeployment
		if err := json.Unmarshal(v, &d); err != nil {
			return fmt.Errorf("decoding shadow deployment: %w", err)
		}
		return fn(d)
	})
}
