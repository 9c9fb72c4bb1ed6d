package registry

// Shadow deployment events (docs/design/events.md, "Shadow deployments").
const (
	TypeShadowStarted  = "hallmark.shadow.started"
	TypeShadowEvidence = "hallmark.shadow.evidence"
	TypeShadowStopped  = "hallmark.shadow.stopped"
)

// shadowEvent is implemented by the shadow events, so that the shared
// decoding and apply switches dispatch them with one case each.
type shadowEvent interface{ shadowHeader() header }

// shadowComparatorRecord is the comparator as recorded.
type shadowComparatorRecord struct {
	Kind    string    `json:"kind"`
	Pointer string    `json:"pointer,omitempty"`
	AbsTol  float64   `json:"abs_tol,omitempty"`
	RelTol  float64   `json:"rel_tol,omitempty"`
	Labels  []string  `json:"labels,omitempty"`
	Edges   []float64 `json:"edges,omitempty"`
	Digest  string    `json:"digest"`
}

// shadowStartedEvent follows, in the same append, the principal-added entry
// of its agent.
type shadowStartedEvent struct {
	header
	Deployment     string                 `json:"deployment"`
	Model          string                 `json:"model"`
	Alias          string                 `json:"alias"`
	Candidate      string                 `json:"candidate"`
	CandidateLabel string                 `json:"candidate_label"`
	Baseline       string                 `json:"baseline"`
	BaselineLabel  string                 `json:"baseline_label"`
	PolicySet      string                 `json:"policy_set,omitempty"`
	Comparator     shadowComparatorRecord `json:"comparator"`
	SegmentHeader  string                 `json:"segment_header,omitempty"`
	SegmentPointer string                 `json:"segment_pointer,omitempty"`
	MinSample      uint64                 `json:"min_sample"`
	Agent          string                 `json:"agent"`
	// AgentKey is the agent's raw Ed25519 public key, standard base64.
	AgentKey string `json:"agent_key"`
}

// shadowEvidenceEvent records one accepted batch. The signed envelope is
// inline (standard base64) when the entry fits the ledger's limit, else in
// the blob SignedBlob names; replay verifies it again either way.
type shadowEvidenceEvent struct {
	header
	Deployment    string `json:"deployment"`
	Agent         string `json:"agent"`
	Sequence      uint64 `json:"sequence"`
	Batch         string `json:"batch"`
	PayloadSHA256 string `json:"payload_sha256"`
	Signed        string `json:"signed,omitempty"`
	SignedBlob    string `json:"signed_blob,omitempty"`
}

type shadowStoppedEvent struct {
	header
	Deployment string `json:"deployment"`
	Reason     string `json:"reason,omitempty"`
}

func (e *shadowStartedEvent) shadowHeader() header  { return e.header }
func (e *shadowEvidenceEvent) shadowHeader() header { return e.header }
func (e *shadowStoppedEvent) shadowHeader() header  { return e.header }

// newShadowEvent returns the pointer to decode a shadow entry into, or nil.
func newShadowEvent(t string) any {
	switch t {
	case TypeShadowStarted:
		return new(shadowStartedEvent)
	case TypeShadowEvidence:
		return new(shadowEvidenceEvent)
	case TypeShadowStopped:
		return new(shadowStoppedEvent)
	}
	return nil
}
