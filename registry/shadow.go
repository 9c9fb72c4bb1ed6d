package registry

import "encoding/json"

// shadowEvidenceFor returns the current shadow evidence summary (the JSON
// shape of shadow.Summary, as documented for `input.evidence` in
// docs/policy-authoring.md) for candidate (a version digest) proposed for
// alias of model, or nil when no shadow deployment ran that candidate against
// the version the alias points at now.
//
// Owned by the shadow work (issue 6); the promotions work (issue 5) calls it
// when it builds a decision's policy input.
func shadowEvidenceFor(st stateReader, model, alias, candidate string) (json.RawMessage, error) {
	_, _, _, _ = st, model, alias, candidate
	return nil, nil
}
