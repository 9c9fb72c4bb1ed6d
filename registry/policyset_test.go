package registry

import (
	"context"
	"testing"

	"github.com/hallmark-dev/hallmark/policy"
)

// TestPolicyEvaluatorOption: Options.PolicyEvaluator decides how every set
// the registry compiles evaluates, and registries with different choices in
// one process do not share a compiled set.
func TestPolicyEvaluatorOption(t *testing.T) {
	ctx := context.Background()
	for _, want := range []policy.Evaluator{policy.EvaluatorTopDown, policy.EvaluatorAuto} {
		e := newEnv(t, Options{PolicyEvaluator: want})
		p, err := e.reg.preparePolicy(ctx, e.reg.log, defaultPolicyDigest())
		if err != nil {
			t.Fatal(err)
		}
		got := p.Evaluator()
		if want == policy.EvaluatorAuto {
			want = policy.EvaluatorPlan // the default pack gets the plan
		}
		if got != want {
			t.Errorf("Options.PolicyEvaluator %q: the default pack evaluates with %q", want, got)
		}
	}
}
