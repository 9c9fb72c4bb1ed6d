package policy

// Cases where a plan could read a set otherwise than OPA's top-down
// evaluator (found by a review of the plan interpreter, each a failure
// before its fix): every one must give the same decision, or the same
// error, through both.

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// decideBoth evaluates the set with the plan (when the set gets one) and
// top-down on input and returns both outcomes as text; a panic is an
// outcome too.
func decideBoth(t *testing.T, files map[string]string, input []byte) (plan, td string) {
	t.Helper()
	s := mustSet(t, files)
	out := map[Evaluator]string{}
	for _, e := range []Evaluator{EvaluatorAuto, EvaluatorTopDown} {
		p, err := Prepare(context.Background(), s, Options{Evaluator: e, Timeout: testTimeout, SkipInputValidation: true})
		if err != nil {
			t.Fatalf("Prepare(%s): %v", e, err)
		}
		if e == EvaluatorAuto {
			t.Logf("evaluator %s (%v)", p.Evaluator(), p.PlanRefused())
		}
		out[e] = outcome(context.Background(), p, input)
	}
	return out[EvaluatorAuto], out[EvaluatorTopDown]
}

func agree(t *testing.T, files map[string]string, input []byte) {
	t.Helper()
	plan, td := decideBoth(t, files, input)
	if plan != td {
		t.Errorf("plan and top-down disagree\n plan:     %s\n top-down: %s", plan, td)
	}
}

const showV = `package hallmark.promotion

decision := {"allow": true, "deny": set(), "warn": {{"rule": "v", "message": sprintf("%v", [v])}}, "required_approvals": 0}
`

// caseFiles is a set of showV plus rego, with data.json and a cfg.rego
// module when given.
func caseFiles(rego, data, extra string) map[string]string {
	files := map[string]string{"p.rego": showV + rego + "\n"}
	if data != "" {
		files["data.json"] = data
	}
	if extra != "" {
		files["cfg.rego"] = extra
	}
	return files
}

// staging is the staging sample input, with meta as the candidate's
// metadata when given.
func staging(t *testing.T, meta map[string]any) []byte {
	in := readInput(t, "staging")
	if meta != nil {
		in["candidate"].(map[string]any)["metadata"] = meta
	}
	return marshal(t, in)
}

func TestEvaluatorsAgreeOnTestModuleContributes(t *testing.T) {
	agree(t, map[string]string{
		"p.rego": `package hallmark.promotion

decision := {"allow": count(deny) == 0, "deny": deny, "warn": set(), "required_approvals": 0}

deny contains {"rule": "revoked", "message": "revoked"} if input.candidate.revoked
`,
		"p_test.rego": `package hallmark.promotion

deny contains {"rule": "from.test.file", "message": "a test module's rule"} if input.request.alias == "staging"

test_x if true
`,
	}, staging(t, nil))
}

func TestEvaluatorsAgreeOnDataArrayStringIndex(t *testing.T) {
	agree(t, map[string]string{
		"p.rego": showV + `
v := [x | some k in ["0", "1", 0, 1.0, "00", true]; x := data.arr[k]]
`,
		"data.json": `{"arr": ["a", "b"]}`,
	}, staging(t, nil))
}

func TestEvaluatorsAgreeOnDataBoolKey(t *testing.T) {
	agree(t, map[string]string{
		"p.rego": showV + `
v := [x | some k in [true, false, null]; x := data.obj[k]]
`,
		"data.json": `{"obj": {"true": "T", "false": "F", "null": "N"}}`,
	}, staging(t, nil))
}

func TestEvaluatorsAgreeOnIterationOrder(t *testing.T) {
	agree(t, map[string]string{
		"p.rego": showV + `
s := {x | some x in [3, "a", {"k": 1}, [1], 1.5, null, true, {2}]}
o := {"b": 1, "a": 2, "1": 3, "A": 4}
v := [[x | some x in s], [k | some k, _ in o], [k | some k, _ in input.candidate.metadata], [x | some x in input.candidate.metadata]]
`,
	}, staging(t, map[string]any{"z": 1, "a": 2, "m": 3, "é": 4, "B": 5}))
}

func TestEvaluatorsAgreeOnMetadata(t *testing.T) {
	agree(t, map[string]string{
		"p.rego": showV + `
# METADATA
# title: V rule
# custom:
#   severity: high
v := [rego.metadata.rule(), rego.metadata.chain()]
`,
	}, staging(t, nil))
}

func TestEvaluatorsAgreeOnBatch2(t *testing.T) {
	cases := map[string]struct {
		rego, data string
		extra      string
	}{
		"print": {rego: `
v := x if { x := 1; print("hi", x) }
`},
		"template": {rego: `
v := [$"a {data.nope.x} b {1.0} {[1, {2}]} {{"k": null}}", $"{input.request.alias}"]
`},
		"merge": {rego: `
v := [data.cfg.limits, data.cfg, [k | some k, _ in data.cfg.limits], object.keys(data.cfg)]
`, data: `{"cfg": {"limits": {"x": 1}, "z": [1]}}`, extra: "package cfg\nlimits.y := 2\n"},
		"merge-with": {rego: `
v := [a, b, c] if {
	a := data.cfg.limits with data.cfg.limits.x as 5
	b := data.cfg with data.cfg.limits.y as 7
	c := data.cfg with data.cfg.limits as 7
}
`, data: `{"cfg": {"limits": {"x": 1}}}`, extra: "package cfg\nlimits.y := 2\n"},
		"memo-with": {rego: `
r := input.request.alias
s := r
v := [a, b, c, d, e] if {
	a := s
	b := s with input.request.alias as "x"
	c := s
	d := r with input.request as {"alias": "y"}
	e := s
}
`},
		"memo-first-in-with": {rego: `
r := input.request.alias
s := [r, t]
t := r
v := [b, c, d] if {
	b := s with input.request.alias as "x"
	c := s
	d := t with input.request.alias as "z"
}
`},
		"mock-fn": {rego: `
f(x) := x + 1
g(x) := x * 10
h(x) := f(x) + 100
v := [a, b, c, d, e, ff] if {
	a := f(1)
	b := f(1) with f as g
	c := h(1) with f as g
	d := h(1) with f as 5
	e := 0
	ff := h(2)
}
`},
		"mock-builtin-in-rule": {rego: `
r := count(input.approvals)
v := [a, b, c] if {
	a := r
	b := r with count as 42
	c := r
}
`},
		"with-data-rule": {rego: `
q := 1
p := q + 1
v := [a, b, c, d] if {
	a := p
	b := p with data.hallmark.promotion.q as 10
	c := p with q as 20
	d := data.hallmark.promotion.p with data.hallmark.promotion.q as 3
}
`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			files := caseFiles(c.rego, c.data, c.extra)
			agree(t, files, staging(t, nil))
		})
	}
}

func TestEvaluatorsAgreeOnVirtualIterationOrder(t *testing.T) {
	cases := map[string]struct{ rego, data, extra string }{
		"rules-only": {rego: `
v := [[k | some k, _ in data.cfg], [x | some x in data.cfg], [k | data.cfg[k]]]
`, extra: "package cfg\nz := 1\na := 2\nm := 3\n"},
		"rules-and-base": {rego: `
v := [[k | some k, _ in data.cfg], [x | some x in data.cfg]]
`, data: `{"cfg": {"b": 20, "y": 30}}`, extra: "package cfg\nz := 1\na := 2\n"},
		"refhead-and-base": {rego: `
v := [[k | some k, _ in data.cfg.limits], [x | some x in data.cfg.limits]]
`, data: `{"cfg": {"limits": {"x": 1}}}`, extra: "package cfg\nlimits.a := 2\n"},
		"partial-set-and-obj": {rego: `
v := [[k | some k, _ in data.cfg.o], [x | some x in data.cfg.s], [k | some k, _ in data.cfg]]
`, extra: "package cfg\no[k] := 1 if some k in [\"z\", \"a\", \"m\"]\ns contains x if some x in [3, 1, 2]\nb.c := 1\nb.a := 2\n"},
		"nested-pkgs": {rego: `
v := [[k | some k, _ in data.cfg], [k | some k, _ in data.cfg.sub]]
`, data: `{"cfg": {"a": {"x": 1}, "q": 2}}`, extra: "package cfg.sub\nz := 1\nb := 2\n"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			files := caseFiles(c.rego, c.data, c.extra)
			agree(t, files, staging(t, nil))
		})
	}
}

func TestEvaluatorsAgreeOnDynamic(t *testing.T) {
	cases := map[string]struct{ rego, data, extra string }{
		"fn-by-input": {rego: `
v := [x | x := data.cfg[input.request.alias]]
`, extra: "package cfg\nstaging(x) := x\na := 1\n"},
		"fn-by-input-nested": {rego: `
v := [x | x := data.cfg[input.request.alias].y]
`, extra: "package cfg\nstaging.y(x) := x\na.y := 1\n"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			files := caseFiles(c.rego, c.data, c.extra)
			agree(t, files, staging(t, nil))
		})
	}
}

func TestEvaluatorsAgreeOnEarlyExit(t *testing.T) {
	cases := map[string]string{
		"complete-true": `
f(x) := 1 if x > 0
f(x) := 2 if x > 1
ok if { some x in [1, 2]; f(x) == 1 }
v := ok
`,
		"complete-const": `
f(x) := 1 if x > 0
f(x) := 2 if x > 1
ok := "yes" if { some x in [1, 2]; f(x) == 1 }
v := ok
`,
		"rule-conflict-later": `
r[k] := 1 if some k in ["a"]
r[k] := 2 if some k in ["a"]
ok if { some x in [1, 2]; x == 1 }
ok if { r.a }
v := ok
`,
		"function-true": `
f(x) := 1 if x > 0
f(x) := 2 if x > 1
g(y) if { some x in y; f(x) == 1 }
v := g([1, 2])
`,
		"not-early": `
f(x) := 1 if x > 0
f(x) := 2 if x > 1
v := true if { not any }
any if { some x in [1, 2]; f(x) > 5 }
`,
		"every": `
f(x) := 1 if x > 0
f(x) := 2 if x > 1
v := true if { every x in [1, 2] { f(x) > 5 } }
`,
		"in-set": `
f(x) := 1 if x > 0
f(x) := 2 if x > 1
v := true if { some x in [1, 2]; f(x) == 1 }
`,
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			agree(t, map[string]string{"p.rego": showV + c}, staging(t, nil))
		})
	}
}

// TestEvaluatorsAgreeOnRaceSharedInput shares one plan, one input and the
// set's data between goroutines (run with -race): `with` must copy, never
// change, what it replaces.
func TestEvaluatorsAgreeOnRaceSharedInput(t *testing.T) {
	s := mustSet(t, map[string]string{"p.rego": showV + `
r := count(input.candidate.metadata)
v := [a, b, c] if {
	a := r with input.candidate.metadata.zz as 1
	b := [k | some k, _ in input.candidate.metadata]
	c := [k | some k, _ in data.cfg]
}
`, "data.json": `{"cfg": {"z": 1, "a": 2, "m": {"y": 1, "b": 2}}}`})
	p, err := Prepare(context.Background(), s, Options{Evaluator: EvaluatorPlan, Timeout: testTimeout})
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		in, err := parseUnvalidated(staging(t, map[string]any{"z": 1, "a": 2, "m": 3, "q": map[string]any{"y": 1, "b": 2}}))
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		for range 2 {
			go func() {
				defer func() { done <- struct{}{} }()
				if _, err := p.DecideInput(context.Background(), in); err != nil {
					t.Error(err)
				}
			}()
		}
		<-done
		<-done
	}
}

func TestEvaluatorsAgreeOnDataCompositeKey(t *testing.T) {
	cases := map[string]string{
		"object-key":  `v := [x | some a in input.approvals; x := data.cfg[a]]`,
		"array-key":   `v := [x | some a in [[1], {"a": 1}, {1}]; x := data.cfg[a]]`,
		"array-key2":  `v := [x | some a in [[1], {"a": 1}, {1}]; x := data.arr[a]]`,
		"neg-and-big": `v := [x | some a in ["-0", "+0", " 0", "0x0", "1e0", 1e0, -0, "01"]; x := data.arr[a]]`,
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			agree(t, map[string]string{"p.rego": showV + c + "\n", "data.json": `{"cfg": {"m": ["p", "q"], "z": 1}, "arr": ["a", "b"]}`}, staging(t, nil))
		})
	}
}

func TestEvaluatorsAgreeOnWithNonObject(t *testing.T) {
	cases := map[string]string{
		"input-string": `v := [a, b] if { a := input.request.alias with input.request.alias.y as 1; b := input.request with input.request.alias.y as 1 }`,
		"data-array":   `v := [a, b] if { a := data.arr with data.arr.x as 1; b := data.arr with data.arr["0"] as "z" }`,
		"data-scalar":  `v := [a, b] if { a := data.cfg with data.cfg.z.w as 1; b := data.cfg.z.w with data.cfg.z.w as 1 }`,
		"data-missing": `v := [a, b] if { a := data.nope with data.nope.w as 1; b := data.cfg with data.cfg.n.w as 1 }`,
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			agree(t, map[string]string{"p.rego": showV + c + "\n", "data.json": `{"cfg": {"m": ["p", "q"], "z": 1}, "arr": ["a", "b"]}`}, staging(t, nil))
		})
	}
}

func TestEvaluatorsAgreeOnNumberSpelling(t *testing.T) {
	cases := map[string]string{
		"set-literal":      `v := [{x, y}, {y, x}] if { x := 1; y := 1.0 }`,
		"obj-literal":      `v := [{x: "a", y: "b"}, {y: "b", x: "a"}] if { x := 1; y := 1.0 }`,
		"obj-literal-same": `v := [{x: "a", y: "a"}, {y: "a", x: "a"}] if { x := 1; y := 1.0 }`,
		"set-compr":        `v := [{x | some x in [1, 1.0]}, {x | some x in [1.0, 1]}]`,
		"obj-compr":        `v := [{x: 1 | some x in [1, 1.0]}, {x: 1 | some x in [1.0, 1]}]`,
		"partial-set":      "v := s\ns contains x if some x in [1, 1.0, 2.0, 2]",
		"partial-obj":      "v := o\no[x] := 1 if some x in [1, 1.0, 2.0, 2]",
		"partial-obj2":     "v := o\no[x] := y if { some i, x in [1, 1.0]; y := [\"a\", \"a\"][i] }",
		"data-num":         `v := [data.n, data.n == 1, {data.n, 1}, {1, data.n}]`,
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			agree(t, map[string]string{"p.rego": showV + c + "\n", "data.json": `{"n": 1.0}`}, staging(t, map[string]any{"n": []any{1, 1.0, 1e0}}))
		})
	}
}

func TestEvaluatorsAgreeOnWithDataNumberKey(t *testing.T) {
	cases := map[string]string{
		"obj":           `v := [a] if { a := data.cfg[1] with data.cfg as {"1": "x"} }`,
		"arr":           `v := [b] if { b := data.arr2["0"] with data.arr2 as ["q"] }`,
		"arr-base":      `v := [b] if { b := data.arr["0"] with data.cfg as 1 }`,
		"arr-with-elem": `v := [b] if { b := data.arr["0"] with data.arr as ["z"] }`,
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			agree(t, map[string]string{"p.rego": showV + c + "\n", "data.json": `{"cfg": {"m": ["p", "q"], "z": 1}, "arr": ["a", "b"]}`}, staging(t, nil))
		})
	}
}

func TestEvaluatorsAgreeOnNumberKeySpellings(t *testing.T) {
	agree(t, map[string]string{"p.rego": showV + `
v := [[s, x] | some s in ["01", "+1", ".5", "1.", "0x1p0", "1E2", "00"]; x := data.m[to_number(s)]]
`, "data.json": `{"m": {"01": "jan", "+1": "plus", ".5": "half", "1.": "dot", "0x1p0": "hex", "00": "zz"}}`}, staging(t, nil))
}

func TestEvaluatorsAgreeOnRefHeadLookup(t *testing.T) {
	cases := map[string]string{
		"ref-vs-generic":          "r.a := 1\nr[k] := 2 if k := \"a\"\nv := r.a",
		"ref-vs-generic-b":        "r.a := 1\nr[k] := 2 if k := \"a\"\nv := r.b",
		"nested":                  "r.a.b := 1\nr.a[k] := 2 if k := \"b\"\nv := r.a.b",
		"partial-conflict":        "o[x] := y if { some i, x in [1, 1.0]; y := [\"a\", \"b\"][i] }\nv := o",
		"partial-conflict-lookup": "o[x] := y if { some i, x in [1, 2.0]; y := [\"a\", \"b\"][i] }\no[2] := \"c\"\nv := o[1]",
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			agree(t, map[string]string{"p.rego": showV + c + "\n"}, staging(t, nil))
		})
	}
}

// planInfo says whether the set runs the plan and what the plan alone gives.
func planInfo(t *testing.T, files map[string]string, input []byte) string {
	t.Helper()
	p, err := Prepare(context.Background(), mustSet(t, files), Options{Timeout: testTimeout, SkipInputValidation: true})
	if err != nil {
		return "prepare: " + err.Error()
	}
	if p.plan == nil {
		return "refused: " + p.PlanRefused().Error()
	}
	in, err := parseUnvalidated(input)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := p.plan.Eval(context.Background(), in.v, p.data, nil)
	if err != nil {
		return "plan error (falls back): " + err.Error()
	}
	return fmt.Sprintf("plan ok, %d results", len(rs))
}

func TestEvaluatorsAgreeOnProbes(t *testing.T) {
	cases := map[string]struct{ rego, data, extra string }{
		"enum-then-float-index": {rego: `v := [x | x := data.cfg[_][1.0]]`, data: `{"cfg": {"a": ["p", "q"]}}`},
		"input-key-then-key":    {rego: `v := [x | x := data.cfg[input.request.alias][2]]`, data: `{"cfg": {"staging": {"2": "two"}}}`},
		"assign-then-key":       {rego: `v := [x | y := data.cfg; x := y.a[2]]`, data: `{"cfg": {"a": {"2": "two"}}}`},
		"fn-arg":                {rego: "f(y) := y[2]\nv := [x | x := f(data.cfg.a)]", data: `{"cfg": {"a": {"2": "two"}}}`},
		"fn-body":               {rego: "f(k) := data.cfg.a[k]\nv := [x | x := f(2)]", data: `{"cfg": {"a": {"2": "two"}}}`},
		"every":                 {rego: "v := true if { every x in data.cfg { x[2] == \"two\" } }", data: `{"cfg": {"a": {"2": "two"}}}`},
		"not":                   {rego: "v := true if { not data.cfg.a[2] }", data: `{"cfg": {"a": {"2": "two"}}}`},
		"in-member":             {rego: `v := [2 in data.cfg.a, "two" in data.cfg.a]`, data: `{"cfg": {"a": {"2": "two"}}}`},
		"obj-keys":              {rego: `v := [object.keys(data.cfg), count(data.cfg)]`, data: `{"cfg": {"b": 20, "y": 30}}`, extra: "package cfg\nz := 1\na := 2\n"},
		"assign-iter":           {rego: `v := [k | x := data.cfg; some k, _ in x]`, data: `{"cfg": {"b": 20, "y": 30}}`, extra: "package cfg\nz := 1\na := 2\n"},
		"whole-eq":              {rego: `v := data.cfg == {"b": 20, "y": 30, "z": 1, "a": 2}`, data: `{"cfg": {"b": 20, "y": 30}}`, extra: "package cfg\nz := 1\na := 2\n"},
		"unbound-k":             {rego: `v := [k | data.cfg[k]]`, data: `{"cfg": {"b": 20, "y": 30}}`, extra: "package cfg\nz := 1\na := 2\n"},
		"dyn-mixed":             {rego: `v := [x | x := data.cfg[input.request.alias]]`, data: `{"cfg": {"staging": 20}}`, extra: "package cfg\nz := 1\n"},
		"dyn-mixed2":            {rego: `v := [x | some k in ["staging", "z", "2"]; x := data.cfg[k]]`, data: `{"cfg": {"staging": 20, "2": "t"}}`, extra: "package cfg\nz := 1\n"},
		"dyn-mixed-num":         {rego: `v := [x | some k in [2, "z"]; x := data.cfg[k]]`, data: `{"cfg": {"2": "t"}}`, extra: "package cfg\nz := 1\n"},
		"refhead-base":          {rego: `v := [data.cfg.limits.x, data.cfg.limits.y]`, data: `{"cfg": {"limits": {"x": 1}}}`, extra: "package cfg\nlimits.y := 2\n"},
		"refhead-base-num":      {rego: `v := [x | some k in [2, "2", "y"]; x := data.cfg.limits[k]]`, data: `{"cfg": {"limits": {"2": 1}}}`, extra: "package cfg\nlimits.y := 2\n"},
		"refhead-base-enum":     {rego: `v := [x | x := data.cfg.limits[_][2]]`, data: `{"cfg": {"limits": {"a": {"2": 1}}}}`, extra: "package cfg\nlimits.y := {\"2\": 3}\n"},
		"some-kv-then-key":      {rego: `v := [x | some k, y in data.cfg; x := y[2]]`, data: `{"cfg": {"a": {"2": "two"}}}`},
		"some-y-then-key":       {rego: `v := [x | some y in data.cfg; x := y[2]]`, data: `{"cfg": {"a": {"2": "two"}}}`},
		"eq-k-then-key":         {rego: `v := [x | y = data.cfg[_]; x := y[2]]`, data: `{"cfg": {"a": {"2": "two"}}}`},
		"dyn-pkg-rules-only":    {rego: `v := [x | some k in ["sub", "z"]; x := data.cfg[k]]`, extra: "package cfg.sub\ny := 2\n"},
		"dyn-refhead-only":      {rego: `v := [x | some k in ["limits"]; x := data.cfg[k]]`, extra: "package cfg\nlimits.y := 2\nlimits.z := 3\n"},
		"dyn-input-pkg":         {rego: `v := [x | x := data.cfg[input.request.alias]]`, extra: "package cfg.staging\ny := 2\n"},
		"dyn-refhead-mixed":     {rego: `v := [x | some k in ["limits"]; x := data.cfg[k]]`, data: `{"cfg": {"limits": {"x": 1}}}`, extra: "package cfg\nlimits.y := 2\n"},
		"dyn-refhead-mixed2":    {rego: `v := [x | some k in ["limits"]; x := data.cfg[k].x]`, data: `{"cfg": {"limits": {"x": 1}}}`, extra: "package cfg\nlimits.y := 2\n"},
		"dyn-pkg-mixed":         {rego: `v := [x | some k in ["sub"]; x := data.cfg[k]]`, data: `{"cfg": {"sub": {"x": 1}}}`, extra: "package cfg.sub\ny := 2\n"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			files := caseFiles(c.rego, c.data, c.extra)
			plan, td := decideBoth(t, files, staging(t, nil))
			t.Logf("\n plan: %s\n td:   %s\n info: %s", plan, td, planInfo(t, files, staging(t, nil)))
			if plan != td {
				t.Errorf("DISAGREE")
			}
		})
	}
}

// TestPlanTimeoutAsksTopDown: the plan evaluates every iteration of a
// complete rule's body where top-down stops at the first value, and calls a
// function again where top-down caches its result per argument (so a
// doubling chain of calls is linear top-down and exponential in the plan).
// Policies top-down answers at once can exhaust the plan's deadline, which
// is then answered top-down under a deadline of its own, at the default
// deadline.
func TestPlanTimeoutAsksTopDown(t *testing.T) {
	chain := "f0(x) := x + 1\n"
	for i := 1; i <= 22; i++ {
		chain += fmt.Sprintf("f%d(x) := f%d(x) + f%d(x)\n", i, i-1, i-1)
	}
	for name, rego := range map[string]string{
		"early exit":     "dup if { some i, a in numbers.range(1, 4000); some j, b in numbers.range(1, 4000); i != j; a == b - 1 }\nv := dup\n",
		"function cache": chain + "v := f22(1)\n",
	} {
		t.Run(name, func(t *testing.T) {
			s := mustSet(t, map[string]string{"p.rego": showV + rego})
			out := map[Evaluator]string{}
			for _, e := range []Evaluator{EvaluatorAuto, EvaluatorTopDown} {
				p, err := Prepare(context.Background(), s, Options{Evaluator: e, SkipInputValidation: true})
				if err != nil {
					t.Fatal(err)
				}
				d, err := p.Decide(context.Background(), staging(t, nil))
				if err != nil {
					out[e] = "error: " + err.Error()
				} else {
					out[e] = d.Warn[0].Message
				}
			}
			if out[EvaluatorAuto] != out[EvaluatorTopDown] {
				t.Errorf("plan and top-down disagree (default deadline %v)\n plan:     %s\n top-down: %s", DefaultTimeout, out[EvaluatorAuto], out[EvaluatorTopDown])
			}
		})
	}
}

// A scan over data.json gives its values as plain locals; top-down reads the
// whole reference (the enumerated key included) from its store.
func TestEvaluatorsAgreeOnKeyAfterDataIteration(t *testing.T) {
	cases := map[string]struct{ rego, data, extra string }{
		"enum-then-number-key":   {rego: `v := [x | x := data.cfg[_][2]]`, data: `{"cfg": {"a": {"2": "two"}}}`},
		"enum-then-string-index": {rego: `v := [x | x := data.cfg[_]["1"]]`, data: `{"cfg": {"a": ["p", "q"]}}`},
		"some-k-then-key":        {rego: `v := [x | some k; x := data.cfg[k][2]]`, data: `{"cfg": {"a": {"2": "two"}}}`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			files := caseFiles(c.rego, c.data, c.extra)
			if info := planInfo(t, files, staging(t, nil)); !strings.HasPrefix(info, "plan ok") {
				t.Errorf("the set should run the plan: %s", info)
			}
			agree(t, files, staging(t, nil))
		})
	}
}

// With a rule under data.cfg, data.cfg[k] is a CallDynamic whose fallback
// copies the base document into the call's result local (AssignVar), which
// loses the store reading for the keys after it: such sets run top-down.
func TestEvaluatorsAgreeOnKeyAfterDynamicFallback(t *testing.T) {
	cases := map[string]struct{ rego, data, extra string }{
		"dyn-then-num":       {rego: `v := [x | some k in ["staging"]; x := data.cfg[k][2]]`, data: `{"cfg": {"staging": {"2": "t"}}}`, extra: "package cfg\nz := 1\n"},
		"dyn-then-idx":       {rego: `v := [x | some k in ["staging"]; x := data.cfg[k]["1"]]`, data: `{"cfg": {"staging": ["p", "q"]}}`, extra: "package cfg\nz := 1\n"},
		"dyn-input-then-num": {rego: `v := [x | x := data.cfg[input.request.alias][2]]`, data: `{"cfg": {"staging": {"2": "t"}}}`, extra: "package cfg\nz := 1\n"},
		"two-dyn":            {rego: `v := [x | some a in ["staging"]; some b in [2]; x := data.cfg[a][b]]`, data: `{"cfg": {"staging": {"2": "t"}}}`, extra: "package cfg\nz := 1\n"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			files := caseFiles(c.rego, c.data, c.extra)
			t.Log(planInfo(t, files, staging(t, nil)))
			agree(t, files, staging(t, nil))
		})
	}
}

// TestEvaluatorsAgreeOnRandomFindings holds what the random-policy test
// found, reduced (production sample input: two approvals).
func TestEvaluatorsAgreeOnRandomFindings(t *testing.T) {
	prod := marshal(t, readInput(t, "production"))
	for name, rego := range map[string]string{
		// OPA's planner drops a comprehension standing alone as a body
		// literal; top-down evaluates it and meets the conflict.
		"bare object comprehension":       `v := 1 if { {"A": x | some x in input.approvals} }`,
		"bare object comprehension (not)": `v := 1 if { not {"A": x | some x in input.approvals} }`,
		// Equal values spelt differently: top-down keeps the last in an
		// object comprehension and the first in a partial object rule.
		"comprehension 1 and 1.0":  `v := {"k": x | some x in [1, 1.0]}`,
		"partial object 1 and 1.0": "o[k] := x if { some x in [1, 1.0]; k := \"k\" }\nv := o",
		"complete rule 1 and 1.0":  "c := 1 if input.request.alias\nc := 1.0 if input.request.alias\nv := c",
		// Keys that collide only at evaluation.
		"computed keys colliding": `v := [[k, x] | some k, x in {lower("a"): null, "a": object.subset({}, {})}]`,
	} {
		t.Run(name, func(t *testing.T) {
			agree(t, map[string]string{"p.rego": showV + rego + "\n"}, prod)
		})
	}
}
