package policy

// Tests of what a policy author meets at the edges: data.json mistakes,
// reasons assembled every way Rego allows, replays that time out and
// coverage listings.

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestDataJSONProblems(t *testing.T) {
	tests := []struct {
		name, data string
		want       string // the problem's String()
	}{
		{"null", "null", "data.json:1:1: data_error: data.json must be one JSON object, found null"},
		{"array", "\n  [1, 2]\n", "data.json:2:3: data_error: data.json must be one JSON object, found an array"},
		{"string", `"x"`, "data.json:1:1: data_error: data.json must be one JSON object, found a string"},
		{"number", "42", "data.json:1:1: data_error: data.json must be one JSON object, found a number"},
		{"empty", " \n", "data.json: data_error: data.json is empty; it must be one JSON object (write {} for no data)"},
		{"syntax error", "{\n  \"a\": 1,\n  \"é\": x\n}", "data.json:3:8: data_error: data.json is not valid JSON: invalid character 'x' looking for beginning of value"},
		{"truncated", "{\n  \"a\": [1, 2", "data.json:2:13: data_error: data.json is not valid JSON: unexpected end of the file"},
		{"two values", "{}\n{}", "data.json:2:1: data_error: data.json must be one JSON object, found more after it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(context.Background(), mustSet(t, map[string]string{"p.rego": minimalDecision, "data.json": tt.data}))
			var ce *CompileError
			if !errors.As(err, &ce) || len(ce.Problems) != 1 {
				t.Fatalf("Check: got %v, want one problem", err)
			}
			if got := ce.Problems[0].String(); got != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
	if err := Check(context.Background(), mustSet(t, map[string]string{"p.rego": minimalDecision, "data.json": " {\"a\": {\"b\": 1}}\n"})); err != nil {
		t.Fatalf("an object: %v", err)
	}
}

// explainSet builds its reasons every way Rego allows: in a rule's head, in
// a rule's body (variable head), through helper sets of another package
// with either kind of head, and inside the decision itself.
var explainSet = map[string]string{
	"p.rego": `package hallmark.promotion

import data.hallmark.lib

decision := {"allow": false, "deny": deny | inline, "warn": warn, "required_approvals": 0}

inline := {{"rule": "style.inline", "message": "built in the decision"}}

deny contains reason if {
	input.request.alias == "production"
	reason := {"rule": "style.var", "message": "built in the body"}
}

deny contains r if {
	some r in lib.head_reasons
}

deny contains r if {
	some r in lib.var_reasons
}

deny contains {"rule": "style.head", "message": "built in the head"} if {
	input.request.alias == "production"
}

warn contains w if {
	w := {"rule": "style.warn_var", "message": sprintf("alias %s", [input.request.alias])}
}
`,
	"lib.rego": `package hallmark.lib

head_reasons contains {"rule": "style.lib_head", "message": "from another package"} if {
	input.request.alias == "production"
}

var_reasons contains x if {
	input.request.alias == "production"
	x := {"rule": "style.lib_var", "message": "from another package, in the body"}
}
`,
}

func TestExplainFindsEverySource(t *testing.T) {
	p, err := Prepare(context.Background(), mustSet(t, explainSet), Options{Timeout: testTimeout})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := p.Explain(context.Background(), marshal(t, readInput(t, "production")))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, a := range ex.Attributions {
		got[a.Kind+" "+a.Reason.Rule] = a.Sources
	}
	want := map[string][]string{
		"deny style.head":     {"p.rego:22"},
		"deny style.var":      {"p.rego:9"},
		"deny style.lib_head": {"lib.rego:3"},
		// No rule's head builds it: the variable-headed rules it came
		// through, both true.
		"deny style.lib_var":  {"lib.rego:7", "p.rego:18"},
		"deny style.inline":   nil,
		"warn style.warn_var": {"p.rego:26"},
	}
	if len(got) != len(want) {
		t.Fatalf("attributions: got %v, want %v", got, want)
	}
	for k, w := range want {
		if !slices.Equal(got[k], w) {
			t.Errorf("%s: got sources %v, want %v", k, got[k], w)
		}
	}
}

func TestReplayReportsTimeouts(t *testing.T) {
	ctx := context.Background()
	s := mustSet(t, map[string]string{"slow.rego": `package hallmark.promotion

# Minutes of work for the production alias, none for the others.
n := count([x |
	input.request.alias == "production"
	some i in numbers.range(1, 100000)
	some j in numbers.range(1, 100000)
	x := i * j
])

decision := {"allow": n >= 0, "deny": set(), "warn": set(), "required_approvals": 0}
`})
	p, err := Prepare(ctx, s, Options{Timeout: 50 * time.Millisecond, SkipInputValidation: true})
	if err != nil {
		t.Fatal(err)
	}
	records := []Recorded{
		{ID: "slow", Input: marshal(t, readInput(t, "production")), Result: Decision{Allow: true}},
		{ID: "fast", Input: marshal(t, readInput(t, "staging")), Result: Decision{Allow: true}},
		{ID: "broken", Input: []byte(`[]`)},
	}
	rep, err := Replay(ctx, p, records)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Unchanged != 1 || len(rep.Timeouts) != 1 || rep.Timeouts[0].ID != "slow" || len(rep.Errors) != 1 || rep.Errors[0].ID != "broken" {
		t.Fatalf("report: unchanged %d, timeouts %v, errors %v; want 1, [slow], [broken]", rep.Unchanged, rep.Timeouts, rep.Errors)
	}
	if !strings.Contains(rep.Timeouts[0].Error, "deadline") {
		t.Errorf("timeout message: got %q", rep.Timeouts[0].Error)
	}
}

func TestCoverageNotCoveredIsDistinctAndMerged(t *testing.T) {
	s := mustSet(t, map[string]string{
		"p.rego": `package hallmark.promotion

decision := {"allow": true, "deny": set(), "warn": set(), "required_approvals": 0}

a if {
	input.request.alias == "x"
	input.request.model == "y"
	input.request.requester == "z"
}

b if { input.request.alias == "x"; input.request.model == "y" }

c := 1
`,
		"p_test.rego": `package hallmark.promotion_test

import data.hallmark.promotion

test_c if promotion.c == 1
`,
	})
	rep, err := Test(context.Background(), s, TestOptions{Coverage: true, Timeout: testTimeout})
	if err != nil {
		t.Fatal(err)
	}
	got := rep.Coverage.Files["p.rego"].NotCovered
	if want := []string{"3", "5-8", "11"}; !slices.Equal(got, want) {
		t.Fatalf("not covered: got %q, want %q", got, want)
	}
}
