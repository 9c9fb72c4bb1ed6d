package registry

// activePolicySetDigest returns the digest ("sha256:<hex>") of the policy set
// active in st, or "" when none has been published yet.
//
// Owned by the promotions work (issue 5); this is the placeholder the shadow
// work (issue 6) calls to record the acceptance criteria in force when a
// shadow deployment starts.
func activePolicySetDigest(st stateReader) (string, error) {
	_ = st
	return "", nil
}
