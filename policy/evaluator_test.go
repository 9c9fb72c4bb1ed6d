package policy

import (
	"context"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// evaluators prepares set once per evaluator, for tests that must hold for
// both.
func evaluators(tb testing.TB, set *Set, opts Options) map[Evaluator]*Policy {
	tb.Helper()
	out := map[Evaluator]*Policy{}
	for _, e := range []Evaluator{EvaluatorPlan, EvaluatorTopDown} {
		o := opts
		o.Evaluator = e
		if o.Timeout == 0 {
			o.Timeout = testTimeout
		}
		p, err := Prepare(context.Background(), set, o)
		if err != nil {
			tb.Fatalf("Prepare(%s): %v", e, err)
		}
		if p.Evaluator() != e {
			tb.Fatalf("Prepare(%s) evaluates with %s", e, p.Evaluator())
		}
		out[e] = p
	}
	return out
}

func TestDefaultPackIsPlanned(t *testing.T) {
	if got := defaultPolicy(t).Evaluator(); got != EvaluatorPlan {
		t.Fatalf("the default pack evaluates with %q, want the plan", got)
	}
}

// TestPlanFallsBack: a set the plan interpreter refuses (walk is a relation,
// one call with many results) still decides, top-down, unless the plan is
// required.
func TestPlanFallsBack(t *testing.T) {
	s := mustSet(t, map[string]string{"p.rego": `package hallmark.promotion

paths := [p | walk(input.request, [p, _])]

decision := {"allow": count(paths) > 3, "deny": set(), "warn": set(), "required_approvals": 0}
`})
	p, err := Prepare(context.Background(), s, Options{Timeout: testTimeout})
	if err != nil {
		t.Fatal(err)
	}
	if p.Evaluator() != EvaluatorTopDown {
		t.Fatalf("evaluator %q, want the top-down fallback", p.Evaluator())
	}
	d, err := p.Decide(context.Background(), marshal(t, readInput(t, "staging")))
	if err != nil || !d.Allow {
		t.Fatalf("Decide: %+v, %v", d, err)
	}
	if _, err := Prepare(context.Background(), s, Options{Evaluator: EvaluatorPlan}); err == nil || !strings.Contains(err.Error(), "walk") {
		t.Fatalf("Prepare with the plan required: got %v, want an error naming walk", err)
	}
}

// TestEvaluatorsAgree compares the plan with OPA's top-down evaluator on
// thousands of inputs made by editing the sample inputs at random: every
// decision, reason and message must be identical, and so must failures.
func TestEvaluatorsAgree(t *testing.T) {
	ps := evaluators(t, DefaultSet(), Options{})
	ctx := context.Background()
	r := rand.New(rand.NewPCG(11, 12))
	pick := func(vs ...any) any { return vs[r.IntN(len(vs))] }
	people := []any{"alice", "bob", "carol", "dave", "erin", "frank"}
	approvals := func() []any {
		out := []any{}
		for range r.IntN(5) {
			a := map[string]any{"approver": pick(people...), "meaning": pick("approved", "approved", "reviewed", "rejected"), "at": "2026-11-23T09:30:00Z"}
			if r.IntN(5) == 0 {
				a["approver_revoked"] = pick(true, false)
			}
			out = append(out, a)
		}
		return out
	}
	digests := []any{
		"sha256:1111111111111111111111111111111111111111111111111111111111111111",
		"sha256:2222222222222222222222222222222222222222222222222222222222222222",
		"sha256:3333333333333333333333333333333333333333333333333333333333333333",
	}
	edits := []func(m map[string]any){
		func(m map[string]any) { set(t, m, "approvals", approvals()) },
		func(m map[string]any) {
			sigs := []any{}
			for range r.IntN(3) {
				sigs = append(sigs, map[string]any{"key_id": pick("k1", "k2"), "kind": "key", "signer": pick("release-key", "other"), "trusted": pick(true, false), "valid": pick(true, false)})
			}
			set(t, m, "signatures", sigs)
		},
		func(m map[string]any) { set(t, m, "candidate/revoked", pick(true, false)) },
		func(m map[string]any) { set(t, m, "candidate/creator", pick(people...)) },
		func(m map[string]any) { set(t, m, "request/requester", pick(people...)) },
		func(m map[string]any) {
			as := []any{}
			for range r.IntN(3) {
				as = append(as, map[string]any{"alias": pick("staging", "production", "canary"), "since": "2026-11-19T09:00:00Z"})
			}
			set(t, m, "candidate/aliases", as)
		},
		func(m map[string]any) { set(t, m, "request/rollback", pick(true, false)) },
		func(m map[string]any) { set(t, m, "request/alias", pick("staging", "production", "canary")) },
		func(m map[string]any) { set(t, m, "request/reason", pick("CHG-1", "", "  ")) },
		func(m map[string]any) { set(t, m, "request/from_version", pick(append([]any{""}, digests...)...)) },
		func(m map[string]any) { set(t, m, "request/to_version", pick(digests...)) },
		func(m map[string]any) {
			h := []any{}
			for range r.IntN(4) {
				h = append(h, map[string]any{"at": "2026-10-01T00:00:00Z", "by": pick(people...), "version": pick(digests...)})
			}
			set(t, m, "alias_history", h)
		},
		func(m map[string]any) {
			if _, ok := m["evidence"]; ok {
				set(t, m, "evidence", nil)
			}
		},
		func(m map[string]any) {
			if _, ok := m["evidence"]; !ok {
				return
			}
			scope := pick("overall", "segments/default", "segments/eu").(string)
			switch r.IntN(7) {
			case 0:
				set(t, m, "evidence/"+scope+"/n", pick(0, 150, 199, 200, 5000))
			case 1:
				set(t, m, "evidence/"+scope+"/sufficient", pick(true, false))
			case 2:
				set(t, m, "evidence/"+scope+"/agreement/lower", pick(0.5, 0.949, 0.95, 1))
			case 3:
				set(t, m, "evidence/"+scope+"/latency_ms/p99_ratio", pick(0.2, 1.5, 1.51, 12))
			case 4:
				set(t, m, "evidence/"+scope+"/error_rate", pick(0, 0.01, 0.02, 1))
			case 5:
				set(t, m, "evidence/"+scope+"/psi", pick(0, 0.1, 0.3, 2.5))
			case 6:
				set(t, m, "evidence/"+scope+"/drop_rate", pick(0, 0.05, 0.2))
			}
		},
		func(m map[string]any) {
			if _, ok := m["evidence"]; ok {
				set(t, m, "evidence/updated_at", pick("2026-11-23T09:00:00Z", "2026-11-16T10:00:00Z", "2026-11-16T09:59:59Z", "2025-01-01T00:00:00Z"))
			}
		},
		func(m map[string]any) {
			if _, ok := m["evidence"]; ok {
				set(t, m, "evidence/"+pick("candidate", "baseline").(string), pick(digests...))
			}
		},
		func(m map[string]any) {
			if _, ok := m["evidence"]; ok {
				set(t, m, "evidence/alias", pick("staging", "production"))
			}
		},
		func(m map[string]any) {
			if ev, ok := m["evidence"].(map[string]any); ok && r.IntN(2) == 0 {
				delete(ev, "worst") // as in inputs recorded before it existed
			}
		},
	}
	outcomes := map[string]int{}
	for i := range 3000 {
		m := readInput(t, pick("production", "staging", "rollback", "denied").(string))
		for range 1 + r.IntN(5) {
			edits[r.IntN(len(edits))](m)
		}
		in := marshal(t, m)
		plan, perr := ps[EvaluatorPlan].Decide(ctx, in)
		top, terr := ps[EvaluatorTopDown].Decide(ctx, in)
		if (perr == nil) != (terr == nil) || (perr != nil && perr.Error() != terr.Error()) {
			t.Fatalf("case %d: plan error %v, top-down error %v\ninput %s", i, perr, terr, in)
		}
		if !reflect.DeepEqual(plan, top) {
			t.Fatalf("case %d: plan %+v\ntop-down %+v\ninput %s", i, plan, top, in)
		}
		switch {
		case perr != nil:
			outcomes["error"]++
		case plan.Allow:
			outcomes["allowed"]++
		default:
			outcomes["denied"]++
			for _, rule := range plan.DenyRules() {
				outcomes[rule]++
			}
		}
		if plan != nil && len(plan.Warn) > 0 {
			outcomes["warned"]++
		}
	}
	// The edits must reach most rules, or agreement proves little.
	for _, want := range []string{"allowed", "denied", "warned", "signature.trusted_required", "version.revoked",
		"approvals.insufficient", "approvals.rejected", "promotion.prerequisite_alias", "evidence.missing",
		"evidence.mismatch", "evidence.insufficient", "evidence.agreement", "rollback.not_in_history", "rollback.reason_required"} {
		if outcomes[want] < 10 {
			t.Errorf("only %d decisions with outcome %s; the comparison does not reach it", outcomes[want], want)
		}
	}
	t.Logf("outcomes: %v", outcomes)
}

// TestEvaluatorsAgreeOnErrors: conflicts, undefined decisions, built-in
// errors and deadlines read the same from both evaluators.
func TestEvaluatorsAgreeOnErrors(t *testing.T) {
	tests := []struct{ name, module string }{
		{"conflict", `package hallmark.promotion

x := 1
x := 2 if input.request.alias == "staging"

decision := {"allow": x > 0, "deny": set(), "warn": set(), "required_approvals": 0}
`},
		{"undefined", `package hallmark.promotion

decision := 1 if input.request.alias == "nope"
`},
		{"builtin error is undefined", `package hallmark.promotion

n := to_number(input.request.alias)

decision := {"allow": true, "deny": set(), "warn": set(), "required_approvals": 0} if not n
`},
		{"function conflict", `package hallmark.promotion

f(x) := 1 if x == "staging"
f(x) := 2 if startswith(x, "stag")

decision := {"allow": f(input.request.alias) > 0, "deny": set(), "warn": set(), "required_approvals": 0}
`},
	}
	ctx := context.Background()
	in := marshal(t, readInput(t, "staging"))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps := evaluators(t, mustSet(t, map[string]string{"p.rego": tt.module}), Options{})
			plan, perr := ps[EvaluatorPlan].Decide(ctx, in)
			top, terr := ps[EvaluatorTopDown].Decide(ctx, in)
			if !reflect.DeepEqual(plan, top) {
				t.Fatalf("plan %+v, top-down %+v", plan, top)
			}
			// Top-down's conflict messages go on to list every value and
			// where it came from; the plan knows the rule, not the values'
			// sources.
			if (perr == nil) != (terr == nil) || (perr != nil && !strings.HasPrefix(terr.Error(), perr.Error())) {
				t.Fatalf("plan error %v, top-down error %v", perr, terr)
			}
			t.Logf("plan: %+v %v; top-down: %+v %v", plan, perr, top, terr)
		})
	}
}

// TestPlanReadsDataLikeTheStore: top-down reads data.json's key "2" as
// data.t[2] and an array element as data.a["0"], through its store; the plan
// does the same, on the fast path.
func TestPlanReadsDataLikeTheStore(t *testing.T) {
	s := mustSet(t, map[string]string{
		"p.rego": `package hallmark.promotion

decision := {"allow": data.t[2] == "two", "deny": set(), "warn": set(), "required_approvals": 0} if data.a["0"] == "zero"
`,
		"data.json": `{"t": {"2": "two"}, "a": ["zero"]}`,
	})
	for e, p := range evaluators(t, s, Options{}) {
		d, err := p.Decide(context.Background(), marshal(t, readInput(t, "staging")))
		if err != nil || !d.Allow {
			t.Fatalf("%s: Decide: %+v, %v; want allowed", e, d, err)
		}
	}
}
