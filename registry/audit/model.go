package audit

import (
	"errors"
	"fmt"
	"time"
)

// ErrInvalidReport is returned (wrapped) by the renderers when a Report lacks
// something every report must have; the message names the field.
var ErrInvalidReport = errors.New("invalid audit report")

// Report is everything the audit report shows. The exporter fills it from the
// ledger, the registry state and the blob store; the renderers only read it.
//
// Slices are rendered in the order given: the exporter supplies them in
// ledger order (ascending LedgerIndex), which is time order. Maps are always
// rendered in sorted key order. Every string is untrusted.
type Report struct {
	// Title defaults to "hallmark audit report".
	Title string `json:"title,omitempty"`
	// GeneratedAt is when the export was made (UTC). It is the PDF's creation
	// date; the renderers never read the clock. Required.
	GeneratedAt time.Time `json:"generated_at"`
	// GeneratedBy is who asked for the export.
	GeneratedBy Actor `json:"generated_by"`
	// Generator names the software, e.g. "hallmark v0.3.0".
	Generator string    `json:"generator,omitempty"`
	Scope     Scope     `json:"scope"`
	Integrity Integrity `json:"integrity"`

	Versions      []Version      `json:"versions,omitempty"`
	Decisions     []Decision     `json:"decisions,omitempty"`
	Signatures    []Signature    `json:"signatures,omitempty"`
	Approvals     []Approval     `json:"approvals,omitempty"`
	AliasMoves    []AliasMove    `json:"alias_moves,omitempty"`
	Exceptions    []Exception    `json:"exceptions,omitempty"`
	PolicySets    []PolicySet    `json:"policy_sets,omitempty"`
	Evidence      []Evidence     `json:"evidence,omitempty"`
	AccessChanges []AccessChange `json:"access_changes,omitempty"`
}

// Actor is an authenticated identity as the ledger records it.
type Actor struct {
	// ID is the principal id (e.g. "carol").
	ID string `json:"id"`
	// Name is the printed name ("Carol Müller"), shown with every signature.
	Name string `json:"name"`
	// Auth is how the actor was authenticated: "token", "mtls" or "local".
	Auth string `json:"auth,omitempty"`
}

// Scope says what the export covers.
type Scope struct {
	// Models lists the models included; empty means all models.
	Models []string `json:"models,omitempty"`
	// From and To bound the event times covered (zero: unbounded).
	From time.Time `json:"from,omitzero"`
	To   time.Time `json:"to,omitzero"`
	// Entries is the number of ledger entries read.
	Entries uint64 `json:"entries"`
	// Notes are free-text remarks from the exporter (e.g. an entry that was
	// skipped and why).
	Notes []string `json:"notes,omitempty"`
}

// Integrity is what ties the report to the ledger: the signed checkpoint the
// export was verified against and the range of entries it covers.
type Integrity struct {
	// Origin is the checkpoint origin line (the log's name).
	Origin string `json:"origin"`
	// CheckpointSize is the tree size of the checkpoint.
	CheckpointSize uint64 `json:"checkpoint_size"`
	// RootHash is the checkpoint's root hash as it appears in the
	// checkpoint (base64), or hex; shown verbatim.
	RootHash string `json:"root_hash"`
	// Checkpoint is the full signed note text, shown verbatim.
	Checkpoint string `json:"checkpoint,omitempty"`
	// LogKey is the note verifier key (name+hash+key) of the log.
	LogKey string `json:"log_key"`
	// LogKeyName is the key name part, when the exporter separates it.
	LogKeyName string `json:"log_key_name,omitempty"`
	// FirstIndex and LastIndex are the ledger entry indexes covered,
	// inclusive. Covered reports whether any entry is covered at all.
	FirstIndex uint64 `json:"first_index"`
	LastIndex  uint64 `json:"last_index"`
	// BundleFiles names the files of the export bundle that prove the
	// report (checkpoint, proofs, entries); shown in "how to verify".
	BundleFiles []string `json:"bundle_files,omitempty"`
}

// Metric is one named evaluation figure.
type Metric struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
}

// Dataset identifies a data set a version was trained or evaluated on.
type Dataset struct {
	Name   string `json:"name,omitempty"`
	Digest string `json:"digest,omitempty"`
	URI    string `json:"uri,omitempty"`
}

// Lineage is where a version came from.
type Lineage struct {
	Datasets       []Dataset `json:"datasets,omitempty"`
	CodeRepository string    `json:"code_repository,omitempty"`
	CodeCommit     string    `json:"code_commit,omitempty"`
	// CIRunURL is shown as text, never as a link.
	CIRunURL string `json:"ci_run_url,omitempty"`
	// BaseModel is the digest of the version this one was tuned from.
	BaseModel string `json:"base_model,omitempty"`
}

// Revocation records that a version was revoked.
type Revocation struct {
	By          Actor     `json:"by"`
	At          time.Time `json:"at"`
	Reason      string    `json:"reason"`
	LedgerIndex uint64    `json:"ledger_index"`
}

// Version is one model version: the inventory's unit.
type Version struct {
	Model string `json:"model"`
	Label string `json:"label"`
	// Digest is the manifest digest, "sha256:<hex>".
	Digest      string    `json:"digest"`
	Created     time.Time `json:"created"`
	Creator     Actor     `json:"creator"`
	LedgerIndex uint64    `json:"ledger_index"`
	Framework   string    `json:"framework,omitempty"`
	Description string    `json:"description,omitempty"`
	FileCount   int       `json:"file_count"`
	TotalSize   int64     `json:"total_size"`
	// Metrics are rendered sorted by name.
	Metrics map[string]float64 `json:"metrics,omitempty"`
	// Labels are rendered sorted by key.
	Labels  map[string]string `json:"labels,omitempty"`
	Lineage Lineage           `json:"lineage,omitzero"`
	// Aliases are the aliases pointing at this version at the end of the
	// range, as the alias moves within the range left them: an alias last
	// moved before the range is not among them. The reports say so.
	Aliases    []string    `json:"aliases,omitempty"`
	Revocation *Revocation `json:"revocation,omitempty"`
}

// RuleResult is one rule's outcome in a decision.
type RuleResult struct {
	// Rule is the stable rule id ("evidence.latency").
	Rule string `json:"rule"`
	// Outcome is "deny", "warn" or "pass".
	Outcome string `json:"outcome"`
	Message string `json:"message,omitempty"`
}

// Decision is one recorded policy evaluation of a promotion request.
type Decision struct {
	// ID is the decision's id; RequestID the promotion request's.
	ID          string    `json:"id"`
	RequestID   string    `json:"request_id"`
	LedgerIndex uint64    `json:"ledger_index"`
	At          time.Time `json:"at"`
	Model       string    `json:"model"`
	Alias       string    `json:"alias"`
	FromVersion string    `json:"from_version,omitempty"`
	FromLabel   string    `json:"from_label,omitempty"`
	ToVersion   string    `json:"to_version"`
	ToLabel     string    `json:"to_label,omitempty"`
	Requester   Actor     `json:"requester"`
	Reason      string    `json:"reason,omitempty"`
	Rollback    bool      `json:"rollback,omitempty"`
	// PolicySet is the digest of the policy set that decided.
	PolicySet  string `json:"policy_set"`
	OPAVersion string `json:"opa_version,omitempty"`
	// EvalMicros is the evaluation time in microseconds.
	EvalMicros        int64 `json:"eval_micros,omitempty"`
	Allow             bool  `json:"allow"`
	RequiredApprovals int   `json:"required_approvals"`
	// Rules are the deny, warn (and, when known, pass) results, in the
	// recorded order (rule, then message).
	Rules []RuleResult `json:"rules,omitempty"`
	// InputDigest is the SHA-256 of the exact input document.
	InputDigest string `json:"input_digest,omitempty"`
	// Outcome is what happened to the request: "applied", "denied",
	// "pending", "superseded"…; free text from the exporter.
	Outcome string `json:"outcome,omitempty"`
}

// Signature is the verification result of a signature over a version's
// manifest (an artifact signature), recorded when the version was pushed.
type Signature struct {
	Model       string    `json:"model"`
	Version     string    `json:"version"`
	Label       string    `json:"label,omitempty"`
	At          time.Time `json:"at"`
	LedgerIndex uint64    `json:"ledger_index"`
	// Signer is the identity the signature names (key fingerprint,
	// certificate subject or keyless identity).
	Signer string `json:"signer"`
	// SignerName is a printed name for the signer when the exporter knows
	// one (a key registered to a person); else Signer is shown.
	SignerName string `json:"signer_name,omitempty"`
	// Meaning defaults to "authorship: signed the version manifest".
	Meaning        string `json:"meaning,omitempty"`
	Valid          bool   `json:"valid"`
	Trusted        bool   `json:"trusted"`
	Method         string `json:"method,omitempty"`
	Issuer         string `json:"issuer,omitempty"`
	KeyFingerprint string `json:"key_fingerprint,omitempty"`
	KeyAlgorithm   string `json:"key_algorithm,omitempty"`
	Error          string `json:"error,omitempty"`
	// Bundle is the digest of the stored Sigstore bundle.
	Bundle string `json:"bundle,omitempty"`
	// RecordedBy is who pushed the signature.
	RecordedBy Actor `json:"recorded_by"`
}

// Approval is a person's electronic signature on a promotion request.
type Approval struct {
	RequestID   string    `json:"request_id"`
	LedgerIndex uint64    `json:"ledger_index"`
	At          time.Time `json:"at"`
	Model       string    `json:"model"`
	Alias       string    `json:"alias"`
	Version     string    `json:"version"`
	Label       string    `json:"label,omitempty"`
	Approver    Actor     `json:"approver"`
	// Meaning is "reviewed", "approved" or "rejected".
	Meaning string `json:"meaning"`
	Comment string `json:"comment,omitempty"`
	// Signed reports whether the approver also signed the request with a
	// key; SignatureValid is the verification result then.
	Signed         bool   `json:"signed,omitempty"`
	SignatureValid bool   `json:"signature_valid,omitempty"`
	KeyFingerprint string `json:"key_fingerprint,omitempty"`
}

// AliasMove is one move of an alias (promotion or rollback).
type AliasMove struct {
	LedgerIndex   uint64    `json:"ledger_index"`
	At            time.Time `json:"at"`
	Model         string    `json:"model"`
	Alias         string    `json:"alias"`
	Version       string    `json:"version"`
	Label         string    `json:"label,omitempty"`
	Previous      string    `json:"previous,omitempty"`
	PreviousLabel string    `json:"previous_label,omitempty"`
	By            Actor     `json:"by"`
	Reason        string    `json:"reason,omitempty"`
	Rollback      bool      `json:"rollback,omitempty"`
	// DecisionID links the move to the decision that allowed it.
	DecisionID string `json:"decision_id,omitempty"`
}

// Exception is an event an inspector should look at: a revocation, a refused
// access, an invalid signature, an override, a rejected entry. Denied
// decisions are listed from Decisions automatically and need not be repeated.
type Exception struct {
	LedgerIndex uint64    `json:"ledger_index"`
	At          time.Time `json:"at"`
	// Kind is a stable id: "version.revoked", "access.denied",
	// "signature.invalid", "entry.rejected", ….
	Kind    string `json:"kind"`
	Model   string `json:"model,omitempty"`
	Subject string `json:"subject,omitempty"`
	Actor   Actor  `json:"actor"`
	Detail  string `json:"detail,omitempty"`
}

// PolicyFile is one file of a policy set, with its full text.
type PolicyFile struct {
	Name string `json:"name"`
	Text string `json:"text"`
}

// PolicySet is one published policy set. PolicySets are given in publication
// order; the report diffs each against the one before.
type PolicySet struct {
	Digest      string    `json:"digest"`
	LedgerIndex uint64    `json:"ledger_index"`
	PublishedAt time.Time `json:"published_at"`
	PublishedBy Actor     `json:"published_by"`
	Reason      string    `json:"reason,omitempty"`
	TestsPassed int       `json:"tests_passed"`
	TestsTotal  int       `json:"tests_total"`
	// Coverage is the test coverage of the non-test modules, in percent.
	Coverage float64      `json:"coverage"`
	Files    []PolicyFile `json:"files,omitempty"`
}

// Interval is a rate with its confidence interval.
type Interval struct {
	Rate  float64 `json:"rate"`
	Lower float64 `json:"lower"`
	Upper float64 `json:"upper"`
}

// Quantiles are latency quantiles in milliseconds.
type Quantiles struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
}

// Latency compares both sides' latency.
type Latency struct {
	Primary  Quantiles `json:"primary"`
	Shadow   Quantiles `json:"shadow"`
	P99Ratio float64   `json:"p99_ratio"`
}

// NumericDelta summarises |a−b| for numeric comparisons.
type NumericDelta struct {
	MeanAbs float64 `json:"mean_abs"`
	MaxAbs  float64 `json:"max_abs"`
}

// Segment is one segment's evidence summary; its JSON shape is the policy
// input's evidence segment, so the exporter can decode a stored summary into
// it directly.
type Segment struct {
	// Name is set from the segments map key. The renderers label the
	// overall summary OverallSegment whatever its Name.
	Name          string        `json:"-"`
	N             uint64        `json:"n"`
	Sufficient    bool          `json:"sufficient"`
	Agreement     Interval      `json:"agreement"`
	Disagreements uint64        `json:"disagreements"`
	Requests      uint64        `json:"requests"`
	Mirrored      uint64        `json:"mirrored"`
	ShadowErrors  uint64        `json:"shadow_errors"`
	PrimaryErrors uint64        `json:"primary_errors"`
	Timeouts      uint64        `json:"timeouts"`
	Drops         uint64        `json:"drops"`
	Oversize      uint64        `json:"oversize"`
	ErrorRate     float64       `json:"error_rate"`
	DropRate      float64       `json:"drop_rate"`
	Latency       Latency       `json:"latency_ms"`
	PSI           float64       `json:"psi"`
	NumericDelta  *NumericDelta `json:"numeric_delta,omitempty"`
}

// Evidence is a shadow deployment's evidence summary at export time: the
// registry's aggregate of the signed batches, not itself a ledger entry.
type Evidence struct {
	DeploymentID   string    `json:"deployment_id"`
	Model          string    `json:"model"`
	Alias          string    `json:"alias"`
	Candidate      string    `json:"candidate"`
	CandidateLabel string    `json:"candidate_label,omitempty"`
	Baseline       string    `json:"baseline"`
	BaselineLabel  string    `json:"baseline_label,omitempty"`
	PolicySet      string    `json:"policy_set,omitempty"`
	Status         string    `json:"status"`
	StartedAt      time.Time `json:"started_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	MinSample      uint64    `json:"min_sample"`
	// Batches is how many signed evidence batches were merged.
	Batches     uint64  `json:"batches,omitempty"`
	LedgerIndex uint64  `json:"ledger_index,omitempty"`
	Overall     Segment `json:"overall"`
	// Segments are rendered sorted by name.
	Segments []Segment `json:"-"`
}

// AccessChange is an administration event: a principal added or revoked, a
// role changed, a key rotated, a trust root changed.
type AccessChange struct {
	LedgerIndex uint64    `json:"ledger_index"`
	At          time.Time `json:"at"`
	// Kind is a stable id: "principal.added", "principal.revoked", ….
	Kind      string   `json:"kind"`
	Principal Actor    `json:"principal"`
	Roles     []string `json:"roles,omitempty"`
	By        Actor    `json:"by"`
	Reason    string   `json:"reason,omitempty"`
	Detail    string   `json:"detail,omitempty"`
}

// Options tune the renderers. The zero value means the defaults.
type Options struct {
	// PDFRowLimit caps each PDF table. The default is 500.
	PDFRowLimit int
	// HTMLRowLimit caps each HTML table. The default is 5,000.
	HTMLRowLimit int
	// DossierLimit caps the number of version dossiers in the HTML and
	// PDF. The default is 200 (the newest are shown).
	DossierLimit int
	// DiffLineLimit caps each policy diff's lines. The default is 400.
	DiffLineLimit int
}

func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.PDFRowLimit <= 0 {
		r.PDFRowLimit = 500
	}
	if r.HTMLRowLimit <= 0 {
		r.HTMLRowLimit = 5000
	}
	if r.DossierLimit <= 0 {
		r.DossierLimit = 200
	}
	if r.DiffLineLimit <= 0 {
		r.DiffLineLimit = 400
	}
	return r
}

// Validate checks what every report must have.
func (r *Report) Validate() error {
	if r == nil {
		return fmt.Errorf("%w: nil report", ErrInvalidReport)
	}
	if r.GeneratedAt.IsZero() {
		return fmt.Errorf("%w: generated_at is zero", ErrInvalidReport)
	}
	for i, e := range r.Evidence {
		seen := make(map[string]bool, len(e.Segments))
		for _, s := range e.Segments {
			if s.Name == OverallSegment {
				// It would print as a second overall row.
				return fmt.Errorf("%w: evidence %d (%q): a segment is named %q, the label of the overall summary", ErrInvalidReport, i, e.DeploymentID, s.Name)
			}
			if seen[s.Name] {
				return fmt.Errorf("%w: evidence %d (%q): duplicate segment %q", ErrInvalidReport, i, e.DeploymentID, s.Name)
			}
			seen[s.Name] = true
		}
	}
	return nil
}

func (r *Report) title() string {
	if r.Title != "" {
		return r.Title
	}
	return "hallmark audit report"
}
