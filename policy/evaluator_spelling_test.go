package policy

// Divergences found by a third review of the plan interpreter, each a
// failure before its fix: the plan returned a value where OPA's top-down
// evaluator returns another, all from equal numbers spelt differently.
// These sets now go to top-down (at Prepare, or when the plan meets the
// second spelling).

import (
	"os"
	"strings"
	"testing"
)

// stagingWith is the staging sample with its "auc": 0.91 replaced by text,
// so that the number keeps its spelling (1.0 stays 1.0).
func stagingWith(t *testing.T, auc string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/staging.json")
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), `"auc": 0.91`, `"auc": `+auc, 1)
	if s == string(b) {
		t.Fatal("staging sample changed")
	}
	return []byte(s)
}

// Top-down caches a function's result per argument value, and 1 == 1.0: the
// second call with an equal argument spelt otherwise gets the first call's
// result. The plan used to call the function again.
func TestEvaluatorsAgreeOnFunctionArgumentSpelling(t *testing.T) {
	realistic := `package hallmark.promotion

label(x) := sprintf("%d", [x])

deny contains {"rule": "auc", "message": label(input.candidate.metrics.auc)} if input.candidate.metrics.auc < 2

warn contains {"rule": "policy", "message": label(1)}

decision := {"allow": count(deny) == 0, "deny": deny, "warn": warn, "required_approvals": 0}
`
	approvals := `package hallmark.promotion

n(x) := x

deny contains {"rule": "auc", "message": "low"} if n(input.candidate.metrics.auc) < 1

decision := {"allow": count(deny) == 0, "deny": deny, "warn": set(), "required_approvals": n(1)}
`
	for name, c := range map[string]struct{ rego, auc string }{
		"message from input": {realistic, "1.0"},
		// top-down: required_approvals 1e0, not an integer (ErrBadDecision);
		// the plan decides with 1.
		"required_approvals": {approvals, "1e0"},
		"literal args":       {showV + "f(x) := [x]\nv := [f(1), f(1.0)]\n", "0.92"},
	} {
		t.Run(name, func(t *testing.T) {
			files := map[string]string{"p.rego": c.rego}
			in := stagingWith(t, c.auc)
			agree(t, files, in)
		})
	}
}

// Top-down indexes a comprehension that compares an outer variable with an
// inner one: it evaluates the body once with the outer variable unbound,
// which binds it to the inner value, spelling included.
func TestEvaluatorsAgreeOnIndexedComprehension(t *testing.T) {
	files := map[string]string{"p.rego": showV + `
v := [c | some y in [1.0, 2]; c := [y | some z in [1, 2]; z == y]]
`}
	in := staging(t, nil)
	agree(t, files, in)
}

// A lookup of a partial object rule by key: top-down evaluates the rule with
// the key bound to the one looked up (1.0) and caches the result for 1 too;
// the plan built the whole object and read it.
func TestEvaluatorsAgreeOnPartialRuleKeySpelling(t *testing.T) {
	files := map[string]string{"p.rego": showV + `
o[x] := x if some x in [1, 2]
v := [o[1.0], o[1]]
`}
	in := staging(t, nil)
	agree(t, files, in)
}

// TestEvaluatorsAgreeOnKeySpelling: a fourth review found lookups and
// ref-head rules where an element equal to the key but spelt otherwise
// decided the value (each failed before keySpelling covered sets,
// composite keys and ref-head keys): a partial set looked up by 1e0 from
// the input and then by 1 gave required_approvals 1e0 top-down; composite
// keys holding a number spelt otherwise; ref-head keys 1 and 1.0, which
// leave the whole object undefined top-down.
func TestEvaluatorsAgreeOnKeySpelling(t *testing.T) {
	for name, c := range map[string]struct{ rego, auc string }{
		"set looked up twice": {`package hallmark.promotion

levels contains 1
levels contains 2

deny contains {"rule": "level", "message": "unknown level"} if not levels[input.candidate.metrics.auc]

decision := {"allow": count(deny) == 0, "deny": deny, "warn": set(), "required_approvals": levels[1]}
`, "1e0"},
		"composite key": {`package hallmark.promotion

approvals[k] := k[1] if some k in [["staging", 1], ["production", 2]]

decision := {"allow": true, "deny": set(), "warn": set(), "required_approvals": approvals[[input.request.alias, input.candidate.metrics.auc]]}
`, "1e0"},
		"ref-head keys": {`package hallmark.promotion

approvers[1] := "one"
approvers[1.0] := "one" if input.request.alias == "staging"

decision := {"allow": true, "deny": set(), "warn": set(), "required_approvals": count(approvers)}
`, "0.92"},
	} {
		t.Run(name, func(t *testing.T) {
			agree(t, map[string]string{"p.rego": c.rego}, stagingWith(t, c.auc))
		})
	}
	for name, rego := range map[string]string{
		"set-num-two":      "s contains x if some x in [1, 2]\nv := [s[1.0], s[1]]",
		"set-num-iter":     "s contains x if some x in [1, 2]\nv := [s[y] | some y in [1.0, 1]]",
		"set-ckey-two":     "s contains x if some x in [[1], [2]]\nv := [s[[1.0]], s[[1]]]",
		"set-objkey-two":   "s contains {\"n\": x} if some x in [1, 2]\nv := [s[{\"n\": 1.0}], s[{\"n\": 1}]]",
		"obj-arrkey":       "o[x] := x if some x in [[1], [2]]\nv := o[[1.0]]",
		"obj-arrkey-two":   "o[x] := x if some x in [[1], [2]]\nv := [o[[1.0]], o[[1]]]",
		"obj-arrkey-iter":  "o[x] := x if some x in [[1], [2]]\nv := [o[[y]] | some y in [1.0, 1]]",
		"obj-objkey":       "o[x] := x if some x in [{\"a\": 1}]\nv := o[{\"a\": 1.0}]",
		"obj-setkey":       "o[x] := x if some x in [{1}, {2}]\nv := o[{1.0}]",
		"obj-objnumkey":    "o[x] := x if some x in [{1: \"a\"}]\nv := o[{1.0: \"a\"}]",
		"obj-val-arrkey":   "o[x] := [x] if some x in [[1]]\nv := o[[1.0]]",
		"refhead-both":     "o[1] := \"a\"\no[1.0] := \"a\"\nv := o",
		"refhead-both-idx": "o[1.0] := \"a\" if input.request.alias == \"staging\"\no[1] := \"a\"\nv := o",
	} {
		t.Run(name, func(t *testing.T) {
			agree(t, caseFiles(rego, "", ""), staging(t, nil))
		})
	}
}
