package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hallmark-dev/hallmark/policy"
	"github.com/hallmark-dev/hallmark/registry/audit"
	"github.com/hallmark-dev/hallmark/registry/blob"
	"github.com/hallmark-dev/hallmark/signing"
)

// AuditReader interprets a contiguous range of ledger entries for an audit
// export without any store: it is what the exporter builds the report with
// and what the offline verifier rebuilds it with, so both read the same
// entries the same way. It reads only the entries and the blobs they name,
// through the blob function it is given; the registry's state is never
// consulted, so the result is a function of those bytes alone.
//
// Entries are interpreted as recorded. Without the state before the range
// the reader cannot tell whether the projection rejected an event; it shows
// what the ledger says was asked for and decided.
type AuditReader struct {
	model string
	blob  func(digest string, max int64) ([]byte, error)
	rec   AuditRecords

	next     uint64
	started  bool
	labels   map[string]string // model NUL digest -> label
	versions map[string]int    // model NUL digest -> index in rec.Report.Versions
	requests map[string]*promotionRequestedEvent
	aliases  map[string]string // model NUL alias -> digest (filtered model)
	lastVer  *versionCreatedEvent
	sets     map[string]bool
	deps     map[string]bool
	blobs    map[string]bool
}

// AuditRecords is what an AuditReader found.
type AuditRecords struct {
	// Report holds the sections read from entries (versions, decisions,
	// signatures, approvals, alias moves, exceptions, policy sets, access
	// changes), filtered to the reader's model. Title, scope, integrity,
	// generation and evidence are the exporter's to fill.
	Report audit.Report
	// Decisions are every decision of the range (whatever the model
	// filter), to be replayed.
	Decisions []AuditDecision
	// Signatures are every version signature result of the range, to be
	// verified again.
	Signatures []AuditSignature
	// PolicySets are the digests of the sets that decided (or ran as a dry
	// run) in the range, sorted.
	PolicySets []string
	// Deployments are the shadow deployments with an entry in the range,
	// sorted.
	Deployments []string
	// Blobs are the blobs the range names and the reader read, sorted.
	Blobs []string
	// Types counts entries by type; non-registry entries count under "",
	// registry entries that do not decode under "(malformed)".
	Types map[string]uint64
	// Malformed lists registry entries that do not decode.
	Malformed []AuditProblem
	// BlobProblems lists blobs that could not be read or do not match
	// their digest.
	BlobProblems []AuditProblem
}

// AuditProblem is an entry the reader could not fully interpret.
type AuditProblem struct {
	Index  uint64
	Reason string
}

// AuditDecision is a recorded policy decision, with everything its replay
// needs.
type AuditDecision struct {
	Index     uint64
	Request   string
	PolicySet string
	// Input is the exact input document (nil if its blob was unreadable);
	// InputSHA256 is the recorded hex digest of it.
	Input       []byte
	InputSHA256 string
	Result      policy.Decision
	// DryRunSet and DryRunResult are the draft's, when one ran and
	// decided (DryRunResult nil otherwise).
	DryRunSet    string
	DryRunResult *policy.Decision
}

// AuditSignature is a recorded verification of a version's signature
// bundle, with what verifying it again needs.
type AuditSignature struct {
	Index   uint64
	Time    time.Time
	Model   string
	Version string
	// Manifest is the version's manifest; nil when the version's own entry
	// is not in the range (it is always in the same append, so only a
	// range that starts between them loses it).
	Manifest *signing.Manifest
	// Bundle is the signature bundle (nil if its blob was unreadable).
	Bundle []byte
	// Recorded result.
	Valid          bool
	KeyFingerprint string
	Error          string
}

// maxAuditBlob bounds any blob the reader reads.
const maxAuditBlob = 64 << 20

// NewAuditReader returns a reader whose report sections show model (""
// means every model). blob returns the bytes of a blob by digest text
// ("sha256:<hex>"), at most max bytes; the reader checks the digest itself.
func NewAuditReader(model string, blob func(digest string, max int64) ([]byte, error)) *AuditReader {
	return &AuditReader{
		model: model, blob: blob,
		rec:      AuditRecords{Types: map[string]uint64{}},
		labels:   map[string]string{},
		versions: map[string]int{},
		requests: map[string]*promotionRequestedEvent{},
		aliases:  map[string]string{},
		sets:     map[string]bool{},
		deps:     map[string]bool{},
		blobs:    map[string]bool{},
	}
}

func mkey(a, b string) string { return a + "\x00" + b }

func (a *AuditReader) wants(model string) bool { return a.model == "" || a.model == model }

func auditActor(r actorRef) audit.Actor { return audit.Actor{ID: r.ID, Name: r.Name, Auth: r.Auth} }

// readBlob reads and checks a blob; a failure is recorded and nil returned.
func (a *AuditReader) readBlob(index uint64, what, ref string, max int64) []byte {
	d, err := blob.ParseDigest(ref)
	if err != nil {
		a.rec.BlobProblems = append(a.rec.BlobProblems, AuditProblem{index, fmt.Sprintf("%s blob %q: %v", what, ref, err)})
		return nil
	}
	a.blobs[ref] = true
	b, err := a.blob(ref, max)
	if err != nil {
		a.rec.BlobProblems = append(a.rec.BlobProblems, AuditProblem{index, fmt.Sprintf("%s blob %s: %v", what, ref, err)})
		return nil
	}
	if blob.Sum(b) != d {
		a.rec.BlobProblems = append(a.rec.BlobProblems, AuditProblem{index, fmt.Sprintf("%s blob %s: bytes have digest %s", what, ref, blob.Sum(b))})
		return nil
	}
	return b
}

// AddEntries is Add for many entries (indexes increasing): the entries are
// decoded on every CPU, then applied in order, which is where an export of a
// large range spends its time.
func (a *AuditReader) AddEntries(indexes []uint64, entries [][]byte) error {
	if len(indexes) != len(entries) {
		return fmt.Errorf("audit reader: %d indexes for %d entries", len(indexes), len(entries))
	}
	type decoded struct {
		ev  any
		hd  header
		t   time.Time
		err error
	}
	out := make([]decoded, len(entries))
	workers := max(1, min(runtime.GOMAXPROCS(0), len(entries)/512))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(entries); i += workers {
				d := &out[i]
				d.ev, d.hd, d.t, d.err = decodeEvent(entries[i])
			}
		})
	}
	wg.Wait()
	for i, d := range out {
		if err := a.addDecoded(indexes[i], d.ev, d.hd, d.t, d.err); err != nil {
			return err
		}
	}
	return nil
}

// Add interprets the entry at index. Entries must be added in increasing
// index order; an error says only that they were not. A gap (an entry the
// caller could not read, already reported by it) is allowed: the entries
// after it are read as they come.
func (a *AuditReader) Add(index uint64, entry []byte) error {
	ev, hd, t, err := decodeEvent(entry)
	return a.addDecoded(index, ev, hd, t, err)
}

func (a *AuditReader) addDecoded(index uint64, ev any, hd header, t time.Time, err error) error {
	if a.started && index < a.next {
		return fmt.Errorf("audit reader: got entry %d after entry %d", index, a.next-1)
	}
	if a.started && index != a.next {
		a.lastVer = nil
	}
	a.started, a.next = true, index+1
	switch {
	case errors.Is(err, errNotRegistry):
		a.rec.Types[""]++
		return nil
	case err != nil:
		a.rec.Types["(malformed)"]++
		a.rec.Malformed = append(a.rec.Malformed, AuditProblem{index, err.Error()})
		if a.model == "" {
			a.rec.Report.Exceptions = append(a.rec.Report.Exceptions, audit.Exception{LedgerIndex: index, Kind: "entry.malformed", Detail: err.Error()})
		}
		return nil
	}
	a.rec.Types[hd.Type]++
	switch ev.(type) {
	case *versionCreatedEvent, *signatureVerifiedEvent:
	default:
		// A signature result follows its version in the same append.
		a.lastVer = nil
	}
	a.apply(index, ev, hd, t)
	return nil
}

func (a *AuditReader) apply(index uint64, ev any, hd header, t time.Time) {
	r := &a.rec.Report
	who := auditActor(hd.Actor)
	switch e := ev.(type) {
	case *initializedEvent:
		r.AccessChanges = append(r.AccessChanges, audit.AccessChange{LedgerIndex: index, At: t, Kind: "registry.initialized",
			Principal: who, By: who, Detail: "ledger origin " + e.Origin})
	case *modelCreatedEvent:
	case *versionCreatedEvent:
		a.labels[mkey(e.Model, e.Digest)] = e.Label
		a.lastVer = e
		if !a.wants(e.Model) {
			return
		}
		md := e.Metadata
		v := audit.Version{Model: e.Model, Label: e.Label, Digest: e.Digest, Created: t, Creator: who, LedgerIndex: index,
			Framework: md.Framework, Description: md.Description, FileCount: e.FileCount, TotalSize: e.TotalSize,
			Metrics: md.Metrics, Labels: md.Labels,
			Lineage: audit.Lineage{CodeRepository: md.Lineage.CodeRepository, CodeCommit: md.Lineage.CodeCommit,
				CIRunURL: md.Lineage.CIRunURL, BaseModel: md.Lineage.BaseModel}}
		for _, d := range md.Lineage.Datasets {
			v.Lineage.Datasets = append(v.Lineage.Datasets, audit.Dataset{Name: d.Name, Digest: d.Digest, URI: d.URI})
		}
		a.versions[mkey(e.Model, e.Digest)] = len(r.Versions)
		r.Versions = append(r.Versions, v)
	case *signatureVerifiedEvent:
		s := AuditSignature{Index: index, Time: t, Model: e.Model, Version: e.Version, Valid: e.Valid,
			KeyFingerprint: e.KeyFingerprint, Error: e.Error}
		if lv := a.lastVer; lv != nil && lv.Model == e.Model && lv.Digest == e.Version {
			s.Manifest = a.manifestOf(index, lv)
		}
		s.Bundle = a.readBlob(index, "signature bundle", e.Bundle, maxAuditBlob)
		a.rec.Signatures = append(a.rec.Signatures, s)
		if !a.wants(e.Model) {
			return
		}
		r.Signatures = append(r.Signatures, audit.Signature{Model: e.Model, Version: e.Version, Label: a.labels[mkey(e.Model, e.Version)],
			At: t, LedgerIndex: index, Signer: e.Signer, Valid: e.Valid, Trusted: e.Valid, Method: e.Method, Issuer: e.Issuer,
			KeyFingerprint: e.KeyFingerprint, KeyAlgorithm: e.KeyAlgorithm, Error: e.Error, Bundle: e.Bundle, RecordedBy: who})
		if !e.Valid {
			r.Exceptions = append(r.Exceptions, audit.Exception{LedgerIndex: index, At: t, Kind: "signature.invalid", Model: e.Model,
				Subject: e.Version, Actor: who, Detail: e.Error})
		}
	case *aliasMovedEvent:
		if !a.wants(e.Model) {
			return
		}
		m := audit.AliasMove{LedgerIndex: index, At: t, Model: e.Model, Alias: e.Alias, Version: e.Version, Label: e.Label,
			Previous: e.Previous, PreviousLabel: a.labels[mkey(e.Model, e.Previous)], By: who, Reason: e.Reason}
		if e.Decision != 0 {
			m.DecisionID = strconv.FormatUint(e.Decision, 10)
		}
		r.AliasMoves = append(r.AliasMoves, m)
		a.aliases[mkey(e.Model, e.Alias)] = e.Version
	case *versionRevokedEvent:
		if !a.wants(e.Model) {
			return
		}
		if i, ok := a.versions[mkey(e.Model, e.Version)]; ok {
			r.Versions[i].Revocation = &audit.Revocation{By: who, At: t, Reason: e.Reason, LedgerIndex: index}
		}
		r.Exceptions = append(r.Exceptions, audit.Exception{LedgerIndex: index, At: t, Kind: "version.revoked", Model: e.Model,
			Subject: e.Version, Actor: who, Detail: e.Reason})
	case *principalAddedEvent:
		p := e.Principal
		roles := make([]string, len(p.Roles))
		for i, x := range p.Roles {
			roles[i] = string(x)
		}
		r.AccessChanges = append(r.AccessChanges, audit.AccessChange{LedgerIndex: index, At: t, Kind: "principal.added",
			Principal: audit.Actor{ID: p.ID, Name: p.Name}, Roles: roles, By: who})
	case *principalRevokedEvent:
		r.AccessChanges = append(r.AccessChanges, audit.AccessChange{LedgerIndex: index, At: t, Kind: "principal.revoked",
			Principal: audit.Actor{ID: e.Principal}, By: who, Reason: e.Reason})
	case *accessDeniedEvent:
		if a.model == "" {
			r.Exceptions = append(r.Exceptions, audit.Exception{LedgerIndex: index, At: t, Kind: "access.denied", Subject: e.Procedure,
				Actor: who, Detail: e.Reason})
		}
	case *principalKeySetEvent:
		r.AccessChanges = append(r.AccessChanges, audit.AccessChange{LedgerIndex: index, At: t, Kind: "principal.key_set",
			Principal: audit.Actor{ID: e.Principal}, By: who, Detail: "key " + e.Fingerprint})
	case *policySetEvent:
		a.applyPolicySet(index, e, who, t)
	case *dryRunStoppedEvent:
		r.AccessChanges = append(r.AccessChanges, audit.AccessChange{LedgerIndex: index, At: t, Kind: "policy.dry_run_stopped",
			Principal: who, By: who, Reason: e.Reason, Detail: "policy set " + e.Digest})
	case *promotionRequestedEvent:
		a.requests[e.Request] = e
	case *approvalRecordedEvent:
		a.applyApproval(index, e, who, t)
	case *decisionEvent:
		a.applyDecision(index, e, t)
	case *shadowStartedEvent:
		a.deps[e.Deployment] = true
	case *shadowEvidenceEvent:
		a.deps[e.Deployment] = true
	case *shadowStoppedEvent:
		a.deps[e.Deployment] = true
	case *auditExportedEvent:
		r.AccessChanges = append(r.AccessChanges, audit.AccessChange{LedgerIndex: index, At: t, Kind: "audit.exported",
			Principal: who, By: who, Detail: fmt.Sprintf("entries %d to %d at checkpoint %d, models %s, manifest sha256 %s",
				e.First, e.End-1, e.CheckpointSize, orAll(e.Models), e.ManifestSHA256)})
	}
}

func orAll(models []string) string {
	if len(models) == 0 {
		return "all"
	}
	return strings.Join(models, ", ")
}

func (a *AuditReader) manifestOf(index uint64, e *versionCreatedEvent) *signing.Manifest {
	files := e.Files
	if e.ManifestBlob != "" {
		b := a.readBlob(index, "manifest", e.ManifestBlob, maxManifestBlob)
		if b == nil {
			return nil
		}
		var m signing.Manifest
		if err := json.Unmarshal(b, &m); err != nil {
			a.rec.BlobProblems = append(a.rec.BlobProblems, AuditProblem{index, fmt.Sprintf("manifest blob %s: %v", e.ManifestBlob, err)})
			return nil
		}
		return &m
	}
	m, err := signing.NewManifest(files)
	if err != nil {
		a.rec.Malformed = append(a.rec.Malformed, AuditProblem{index, fmt.Sprintf("version %s manifest: %v", e.Digest, err)})
		return nil
	}
	return &m
}

func (a *AuditReader) applyPolicySet(index uint64, e *policySetEvent, who audit.Actor, t time.Time) {
	var body *policyBody
	if e.Body != nil {
		body = e.Body
	} else if b := a.readBlob(index, "policy body", e.BodyBlob, maxPolicyBody); b != nil {
		var pb policyBody
		if err := json.Unmarshal(b, &pb); err != nil {
			a.rec.BlobProblems = append(a.rec.BlobProblems, AuditProblem{index, fmt.Sprintf("policy body blob %s: %v", e.BodyBlob, err)})
		} else {
			body = &pb
		}
	}
	ps := audit.PolicySet{Digest: e.Digest, LedgerIndex: index, PublishedAt: t, PublishedBy: who,
		TestsPassed: e.Passed, Coverage: e.Coverage}
	switch {
	case e.Type == TypePolicyDryRunStarted:
		ps.Reason = "started as a dry run (recorded, not enforced)"
	case e.Default:
		ps.Reason = "hallmark's default policy pack"
	}
	if body != nil {
		ps.TestsTotal = len(body.Tests)
		for _, f := range body.Files {
			ps.Files = append(ps.Files, audit.PolicyFile{Name: f.Name, Text: f.Text})
		}
	}
	a.rec.Report.PolicySets = append(a.rec.Report.PolicySets, ps)
}

func (a *AuditReader) applyApproval(index uint64, e *approvalRecordedEvent, who audit.Actor, t time.Time) {
	ap := audit.Approval{RequestID: e.Request, LedgerIndex: index, At: t, Approver: who, Meaning: e.Meaning, Comment: e.Comment,
		Signed: e.Signature != "", KeyFingerprint: e.KeyFingerprint}
	// The registry records a signed approval only after its signature
	// verified with the approver's registered key.
	ap.SignatureValid = ap.Signed
	if rq, ok := a.requests[e.Request]; ok {
		if !a.wants(rq.Model) {
			return
		}
		ap.Model, ap.Alias, ap.Version, ap.Label = rq.Model, rq.Alias, rq.Version, rq.Label
	} else if a.model != "" {
		// The request predates the range: its model is unknown here, so a
		// model-filtered report cannot claim the approval.
		return
	}
	a.rec.Report.Approvals = append(a.rec.Report.Approvals, ap)
}

// decisionInput is the part of the policy input the report shows when the
// request itself predates the range.
type decisionInput struct {
	Request struct {
		FromVersion string `json:"from_version"`
		ToVersion   string `json:"to_version"`
		Requester   string `json:"requester"`
		Reason      string `json:"reason"`
		Rollback    bool   `json:"rollback"`
	} `json:"request"`
	Candidate struct {
		Label string `json:"label"`
	} `json:"candidate"`
}

func (a *AuditReader) applyDecision(index uint64, e *decisionEvent, t time.Time) {
	d := AuditDecision{Index: index, Request: e.Request, PolicySet: e.PolicySet, InputSHA256: e.InputSHA256, Result: e.Result}
	if e.InputBlob != "" {
		d.Input = a.readBlob(index, "decision input", e.InputBlob, maxPolicyBody)
	} else {
		d.Input = []byte(e.Input)
	}
	a.sets[e.PolicySet] = true
	if e.DryRun != nil && e.DryRun.Result != nil {
		d.DryRunSet, d.DryRunResult = e.DryRun.PolicySet, e.DryRun.Result
		a.sets[e.DryRun.PolicySet] = true
	}
	a.rec.Decisions = append(a.rec.Decisions, d)
	if !a.wants(e.Model) {
		return
	}
	out := audit.Decision{ID: strconv.FormatUint(index, 10), RequestID: e.Request, LedgerIndex: index, At: t, Model: e.Model,
		Alias: e.Alias, PolicySet: e.PolicySet, OPAVersion: e.OPAVersion, EvalMicros: e.EvalNanos / 1000,
		Allow: e.Result.Allow, RequiredApprovals: e.Result.RequiredApprovals, InputDigest: "sha256:" + e.InputSHA256, Outcome: e.Status}
	if rq, ok := a.requests[e.Request]; ok {
		out.FromVersion, out.ToVersion, out.ToLabel = rq.Previous, rq.Version, rq.Label
		out.Requester, out.Reason, out.Rollback = auditActor(rq.Actor), rq.Reason, rq.Rollback
	} else if d.Input != nil {
		var in decisionInput
		if json.Unmarshal(d.Input, &in) == nil {
			out.FromVersion, out.ToVersion, out.ToLabel = in.Request.FromVersion, in.Request.ToVersion, in.Candidate.Label
			out.Requester, out.Reason, out.Rollback = audit.Actor{ID: in.Request.Requester}, in.Request.Reason, in.Request.Rollback
		}
	}
	out.FromLabel = a.labels[mkey(e.Model, out.FromVersion)]
	for _, x := range e.Result.Deny {
		out.Rules = append(out.Rules, audit.RuleResult{Rule: x.Rule, Outcome: "deny", Message: x.Message})
	}
	for _, x := range e.Result.Warn {
		out.Rules = append(out.Rules, audit.RuleResult{Rule: x.Rule, Outcome: "warn", Message: x.Message})
	}
	a.rec.Report.Decisions = append(a.rec.Report.Decisions, out)
}

// Finish returns what the reader found. The reader must not be used after.
func (a *AuditReader) Finish() *AuditRecords {
	r := &a.rec.Report
	// Aliases as the range leaves them, on the versions the range shows.
	for k, d := range a.aliases {
		model, alias, _ := strings.Cut(k, "\x00")
		if i, ok := a.versions[mkey(model, d)]; ok {
			r.Versions[i].Aliases = append(r.Versions[i].Aliases, alias)
		}
	}
	for i := range r.Versions {
		slices.Sort(r.Versions[i].Aliases)
	}
	a.rec.PolicySets = sortedSet(a.sets)
	a.rec.Deployments = sortedSet(a.deps)
	a.rec.Blobs = sortedSet(a.blobs)
	return &a.rec
}

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		if k != "" {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}
