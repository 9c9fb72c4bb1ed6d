package ireval_test

// Differential tests: every query here runs through OPA's top-down evaluator
// (the reference) and through ireval, and the two must agree exactly, value
// for value and error code for error code. The harness (spec, evalTopdown,
// evalIR, compareOutcomes) is shared with compliance_test.go.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/hallmark-dev/hallmark/policy/internal/ireval"
)

// selfCheck replaces ireval by a second, independently wired top-down
// evaluation (ast compiler + topdown.Query instead of package rego). With
// IREVAL_SELFCHECK=1 every comparison must pass and nothing may be skipped
// for want of support: that validates the harness itself, and shows which
// compliance cases are nondeterministic (they differ between two top-down
// runs too).
var selfCheck = os.Getenv("IREVAL_SELFCHECK") == "1"

// spec is one evaluation: modules, an entrypoint and the documents.
type spec struct {
	modules    map[string]string // file name → Rego v1 text
	entrypoint string            // slash-separated rule path: "a/b/p" is data.a.b.p
	input      ast.Value         // nil: no input document
	data       map[string]any    // base documents (JSON values, json.Number numbers); nil: none
	caps       *ast.Capabilities
}

// outcome is what one evaluator made of a spec: the set of result objects
// ({"result": value}, empty when the entrypoint is undefined) or an error.
type outcome struct {
	results ast.Set
	n       int // result rows as returned, before duplicates collapse into the set
	err     error
}

func (o outcome) String() string {
	if o.err != nil {
		var te *topdown.Error
		if errors.As(o.err, &te) {
			return fmt.Sprintf("error %s: %v", te.Code, o.err)
		}
		return fmt.Sprintf("error (%T): %v", o.err, o.err)
	}
	return o.results.String()
}

// skipError says why the second evaluator could not take part: planning
// failed or ireval refused the plan. Its reason groups skips in summaries.
type skipError struct {
	reason string
	err    error
}

func (e *skipError) Error() string { return e.reason + ": " + e.err.Error() }

// entrypointRef turns "a/b/p" into data.a.b.p.
func entrypointRef(ep string) ast.Ref {
	ref := ast.Ref{ast.DefaultRootDocument}
	for _, s := range strings.Split(ep, "/") {
		ref = append(ref, ast.StringTerm(s))
	}
	return ref
}

// keepTerm stops package rego from converting results to JSON, which would
// turn sets into arrays and hide differences between them.
func keepTerm(t *ast.Term, _ *rego.EvalContext) (any, error) { return t.Value, nil }

func newStore(data map[string]any) storage.Store {
	if data == nil {
		return inmem.New()
	}
	return inmem.NewFromObject(data)
}

// prepareTopdown compiles s with package rego; an error here is a compile
// error (the case is not a valid policy), not an evaluation outcome.
func prepareTopdown(ctx context.Context, s spec) (rego.PreparedEvalQuery, error) {
	opts := []func(*rego.Rego){
		rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.RefTerm(entrypointRef(s.entrypoint)...)))),
		rego.Store(newStore(s.data)),
		rego.Capabilities(s.caps),
		rego.SetRegoVersion(ast.RegoV1),
		rego.StrictBuiltinErrors(false),
		rego.GenerateJSON(keepTerm),
	}
	for _, name := range sortedKeys(s.modules) {
		opts = append(opts, rego.Module(name, s.modules[name]))
	}
	return rego.New(opts...).PrepareForEval(ctx)
}

func evalPrepared(ctx context.Context, pq rego.PreparedEvalQuery, input ast.Value) outcome {
	var opts []rego.EvalOption
	if input != nil {
		opts = append(opts, rego.EvalParsedInput(input))
	}
	rs, err := pq.Eval(ctx, opts...)
	if err != nil {
		return outcome{err: err}
	}
	out := outcome{results: ast.NewSet()}
	for _, r := range rs {
		v, ok := r.Expressions[0].Value.(ast.Value)
		if !ok {
			return outcome{err: fmt.Errorf("harness: top-down result is %T, not an ast.Value", r.Expressions[0].Value)}
		}
		out.results.Add(resultObject(v))
		out.n++
	}
	return out
}

func resultObject(v ast.Value) *ast.Term {
	return ast.ObjectTerm(ast.Item(ast.StringTerm("result"), ast.NewTerm(v)))
}

// irProgram is ireval's prepared program, or in self-check mode the second
// top-down wiring.
type irProgram interface {
	eval(ctx context.Context, input ast.Value, data ast.Value) outcome
}

// prepareIR plans and prepares s. A *skipError means the harness has nothing
// to compare; any other error is a failure of ireval's contract.
func prepareIR(ctx context.Context, s spec) (irProgram, error) {
	if selfCheck {
		return prepareSelfCheck(s)
	}
	pol, err := ireval.Plan(ctx, s.modules, s.caps, s.entrypoint)
	if err != nil {
		return nil, &skipError{reason: "plan", err: err}
	}
	prog, err := ireval.New(pol, s.entrypoint)
	if errors.Is(err, ireval.ErrUnsupported) {
		return nil, &skipError{reason: "unsupported", err: err}
	}
	if err != nil {
		return nil, fmt.Errorf("ireval.New: error not wrapping ErrUnsupported: %w", err)
	}
	return irProg{prog}, nil
}

type irProg struct{ p *ireval.Program }

func (p irProg) eval(ctx context.Context, input, data ast.Value) outcome {
	vals, err := p.p.Eval(ctx, input, data, nil)
	if err != nil {
		return outcome{err: err}
	}
	out := outcome{results: ast.NewSet(), n: len(vals)}
	for _, v := range vals {
		out.results.Add(ast.NewTerm(v))
	}
	return out
}

type selfCheckProg struct {
	c     *ast.Compiler
	query ast.Body
}

func prepareSelfCheck(s spec) (irProgram, error) {
	parsed := make(map[string]*ast.Module, len(s.modules))
	popts := ast.ParserOptions{RegoVersion: ast.RegoV1, Capabilities: s.caps}
	for name, text := range s.modules {
		m, err := ast.ParseModuleWithOpts(name, text, popts)
		if err != nil {
			return nil, &skipError{reason: "plan", err: err}
		}
		parsed[name] = m
	}
	c := ast.NewCompiler().WithCapabilities(s.caps).WithDefaultRegoVersion(ast.RegoV1)
	if c.Compile(parsed); c.Failed() {
		return nil, &skipError{reason: "plan", err: c.Errors}
	}
	q := ast.NewBody(ast.Equality.Expr(ast.VarTerm("x"), ast.RefTerm(entrypointRef(s.entrypoint)...)))
	cq, err := c.QueryCompiler().Compile(q)
	if err != nil {
		return nil, &skipError{reason: "plan", err: err}
	}
	return selfCheckProg{c: c, query: cq}, nil
}

func (p selfCheckProg) eval(ctx context.Context, input, data ast.Value) outcome {
	var docs map[string]any
	if data != nil {
		j, err := ast.JSON(data)
		if err != nil {
			return outcome{err: err}
		}
		docs = j.(map[string]any)
	}
	store := newStore(docs)
	txn := storage.NewTransactionOrDie(ctx, store)
	defer store.Abort(ctx, txn)
	q := topdown.NewQuery(p.query).WithCompiler(p.c).WithStore(store).WithTransaction(txn)
	if input != nil {
		q = q.WithInput(ast.NewTerm(input))
	}
	qrs, err := q.Run(ctx)
	if err != nil {
		return outcome{err: err}
	}
	out := outcome{results: ast.NewSet(), n: len(qrs)}
	for _, qr := range qrs {
		out.results.Add(resultObject(qr[ast.Var("x")].Value))
	}
	return out
}

// compareOutcomes returns "" when ireval's outcome matches the reference,
// or says how they differ.
func compareOutcomes(want, got outcome) string {
	// An evaluation that gives up with ErrUnsupported hands the decision
	// to top-down (policy.evalPlan): there is nothing to disagree with.
	if errors.Is(got.err, ireval.ErrUnsupported) {
		return ""
	}
	switch {
	case want.err != nil && got.err != nil:
		var we, ge *topdown.Error
		wOK, gOK := errors.As(want.err, &we), errors.As(got.err, &ge)
		switch {
		case wOK && gOK && we.Code != ge.Code:
			return fmt.Sprintf("error codes differ\nwant: %s\n got: %s", want, got)
		case wOK != gOK:
			return fmt.Sprintf("one error is not a *topdown.Error\nwant: %s\n got: %s", want, got)
		}
		return ""
	case want.err != nil || got.err != nil:
		return fmt.Sprintf("\nwant: %s\n got: %s", want, got)
	case want.results.Compare(got.results) != 0:
		return fmt.Sprintf("results differ\nwant: %s\n got: %s", want, got)
	case want.results.String() != got.results.String():
		// ast.Compare calls 1 and 1.0 equal, but hallmark records
		// decisions as JSON, where they are different bytes.
		return fmt.Sprintf("results equal but written differently\nwant: %s\n got: %s", want, got)
	case want.n != got.n:
		return fmt.Sprintf("result rows differ: want %d, got %d (%s)", want.n, got.n, got)
	}
	return ""
}

// TestCompareOutcomes checks the harness's notion of agreement.
func TestCompareOutcomes(t *testing.T) {
	set := func(terms ...string) outcome {
		s := ast.NewSet()
		for _, x := range terms {
			s.Add(resultObject(ast.MustParseTerm(x).Value))
		}
		return outcome{results: s, n: len(terms)}
	}
	conflict := outcome{err: &topdown.Error{Code: topdown.ConflictErr, Message: "complete rules must not produce multiple outputs"}}
	typeErr := outcome{err: &topdown.Error{Code: topdown.TypeErr, Message: "x"}}
	plain := outcome{err: errors.New("boom")}
	for _, c := range []struct {
		name      string
		want, got outcome
		same      bool
	}{
		{"equal", set(`{"a": {1, 2}}`), set(`{"a": {2, 1}}`), true},
		{"both undefined", set(), set(), true},
		{"undefined vs defined", set(), set(`false`), false},
		{"value differs", set(`{"a": 1}`), set(`{"a": 2}`), false},
		{"set vs array", set(`{1, 2}`), set(`[1, 2]`), false},
		{"1 vs 1.0", set(`1`), set(`1.0`), false},
		{"extra row", set(`1`), outcome{results: set(`1`).results, n: 2}, false},
		{"same error code", conflict, outcome{err: fmt.Errorf("wrapped: %w", &topdown.Error{Code: topdown.ConflictErr})}, true},
		{"different error codes", conflict, typeErr, false},
		{"topdown error vs plain error", conflict, plain, false},
		{"error vs result", conflict, set(`1`), false},
		{"result vs error", set(`1`), conflict, false},
	} {
		if d := compareOutcomes(c.want, c.got); (d == "") != c.same {
			t.Errorf("%s: compareOutcomes = %q, want same=%v", c.name, d, c.same)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// pair is one spec prepared both ways, ready to evaluate on many inputs.
type pair struct {
	td rego.PreparedEvalQuery
	ir irProgram
	// data as ireval receives it; nil when the spec has none.
	data ast.Value
}

// preparePair prepares s both ways; it fails the test when either side
// cannot compile it, and skips it when ireval refuses it.
func preparePair(t testing.TB, s spec) *pair {
	t.Helper()
	ctx := context.Background()
	td, err := prepareTopdown(ctx, s)
	if err != nil {
		t.Fatalf("top-down: compile %s: %v", s.entrypoint, err)
	}
	ir, err := prepareIR(ctx, s)
	var skip *skipError
	if errors.As(err, &skip) {
		t.Skipf("ireval: %v", skip)
	}
	if err != nil {
		t.Fatal(err)
	}
	p := &pair{td: td, ir: ir}
	if s.data != nil {
		if p.data, err = ast.InterfaceToValue(s.data); err != nil {
			t.Fatalf("data: %v", err)
		}
	}
	return p
}

// check evaluates both ways on input and reports a difference as an error.
func (p *pair) check(t testing.TB, label string, input ast.Value) {
	t.Helper()
	ctx := context.Background()
	want := evalPrepared(ctx, p.td, input)
	got := p.ir.eval(ctx, input, p.data)
	if d := compareOutcomes(want, got); d != "" {
		t.Errorf("%s: input %v: %s", label, input, d)
	}
}

// mustTerm parses Rego term text (JSON is a subset) into a value.
func mustTerm(t testing.TB, s string) ast.Value {
	t.Helper()
	if s == "" {
		return nil
	}
	v, err := ast.ParseTerm(s)
	if err != nil {
		t.Fatalf("parse term %q: %v", s, err)
	}
	return v.Value
}

func mustJSONObject(t testing.TB, s string) map[string]any {
	t.Helper()
	if s == "" {
		return nil
	}
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("data %q: %v", s, err)
	}
	return m
}

// diffCase is a hand-written policy, the rules to compare and the inputs to
// compare them on ("" is no input document; inputs are Rego terms, so sets
// are allowed).
type diffCase struct {
	name    string
	modules []string
	data    string // JSON object, "" for none
	rules   []string
	inputs  []string
}

var diffCases = []diffCase{
	{
		name: "partial sets and objects",
		modules: []string{`package t
s contains x if { some x in input.xs; x > 1 }
s contains "const"
o[k] := v if { some k, v in input.m; v != null }
o["fixed"] := 1
objs contains {"k": x, "n": [x, x]} if { some x in input.xs }
empty contains x if { some x in input.xs; false }
nested.a.b contains x if { some x in input.xs }
nested.a.c[k] := 1 if { some k in input.keys }
`},
		rules: []string{"t/s", "t/o", "t/objs", "t/empty", "t/nested", "t/nested/a/b", "t/nested/a/c"},
		inputs: []string{``, `{}`, `{"xs": [1, 2, 3, 2], "m": {"a": 1, "b": null}, "keys": ["p", "q"]}`,
			`{"xs": ["a", 1.5, 2, {"z": 1}], "m": {"a": 1, "fixed": 1}}`,
			`{"xs": {1, 2, 3}, "m": {"fixed": 2}}`, // o: conflicting values for key "fixed"
			`{"xs": 7, "m": [1, 2], "keys": "notalist"}`},
	},
	{
		name: "complete rules, default and else",
		modules: []string{`package t
default allow := false
allow if input.user == "admin"
allow if { input.user == "bob"; input.action == "read" }

default level := "none"
level := "high" if input.score > 90
else := "medium" if input.score > 50
else := "low" if input.score >= 0

grade := "a" if { input.score >= 90 } else := "b"

nodefault := input.x if input.x > 0

one := 1 if input.n == 1
one := 1 if input.n >= 1
`},
		rules: []string{"t/allow", "t/level", "t/grade", "t/nodefault", "t/one"},
		inputs: []string{``, `{}`, `{"user": "admin"}`, `{"user": "bob", "action": "read", "score": 95}`,
			`{"score": 51, "x": 2, "n": 1}`, `{"score": 50, "n": 3}`, `{"score": -1}`, `{"score": "high", "x": "s"}`,
			`{"score": 90.0}`, `{"score": 1e400}`},
	},
	{
		name: "functions",
		modules: []string{`package t
f(x) := x + 1 if is_number(x)
f(x) := concat("", [x, "!"]) if is_string(x)
g(x) := y if { y := x * 2 }
g(x) := y if { x == 0; y := 0 }
h(x, y) := z if { z := x[y] }
default d(_) := "default"
d(x) := "small" if x < 10
k(x) if x > 3
k(x) if x < -3
conflict(x) := 1 if x > 0
conflict(x) := 2 if x > 1

out := {
	"f": [f(n) | some n in input.ns],
	"g": [g(n) | some n in input.ns; is_number(n)],
	"h": h(input.obj, input.key),
	"d": [d(n) | some n in input.ns],
	"k": [n | some n in input.ns; k(n)],
}
c := conflict(input.c)
`},
		rules:  []string{"t/out", "t/c"},
		inputs: []string{``, `{"ns": [0, 1, 5, "x", -7, 12], "obj": {"a": 1}, "key": "a", "c": 1}`, `{"ns": [], "obj": [10, 20], "key": 1, "c": 2}`, `{"ns": [2], "obj": {"a": 1}, "key": "b", "c": 0}`},
	},
	{
		name: "comprehensions",
		modules: []string{`package t
arr := [y | some x in input.xs; y := x * 2]
st := {y | some x in input.xs; y := x % 3}
obj := {k: v | some i, v in input.xs; k := sprintf("k%d", [i])}
objconflict := {k: v | some v in input.xs; k := "same"}
nested := [[y | some y in input.xs; y > x] | some x in input.xs]
count_big := count({x | some x in input.xs; x > 2})
`},
		rules:  []string{"t/arr", "t/st", "t/obj", "t/objconflict", "t/nested", "t/count_big"},
		inputs: []string{``, `{"xs": []}`, `{"xs": [1, 2, 3, 4]}`, `{"xs": [5]}`, `{"xs": [1, 1]}`, `{"xs": ["a"]}`},
	},
	{
		name: "every, not, some in",
		modules: []string{`package t
all_pos if { every x in input.xs { x > 0 } }
all_kv if { every k, v in input.m { startswith(k, "a"); v != null } }
none_neg if { not any_neg }
any_neg if { some x in input.xs; x < 0 }
not_member if { not 3 in input.xs }
pairs contains [i, x] if { some i, x in input.xs }
in_obj contains k if { some k, _ in input.m }
member_of_set if { "b" in {"a", "b"} }
keyed if { some "a", v in input.m; v == 1 }
`},
		rules: []string{"t/all_pos", "t/all_kv", "t/none_neg", "t/not_member", "t/pairs", "t/in_obj", "t/member_of_set", "t/keyed"},
		inputs: []string{``, `{"xs": [], "m": {}}`, `{"xs": [1, 2], "m": {"a": 1, "ab": 2}}`, `{"xs": [1, -2, 3], "m": {"a": null, "b": 1}}`,
			`{"xs": {1, 2}, "m": {"a": 1}}`, `{"xs": "str", "m": [1, 2]}`},
	},
	{
		name: "with input and data",
		modules: []string{`package t
base := data.cfg.limit
p := input.x + data.cfg.limit
q := v if { v := p with input.x as 10 }
r := v if { v := p with data.cfg.limit as 100 }
s := v if { v := p with input as {"x": 1} with data.cfg as {"limit": 2} }
t := v if { v := [p | true] with input.x as 3 }
u := v if { v := data.cfg with data.cfg.extra as "e" }
nested_with := v if { v := r with input.x as 7 }
`},
		data:   `{"cfg": {"limit": 5}}`,
		rules:  []string{"t/base", "t/p", "t/q", "t/r", "t/s", "t/t", "t/u", "t/nested_with"},
		inputs: []string{``, `{"x": 1}`, `{"x": "one"}`, `{"x": 2.5}`},
	},
	{
		name: "refs over base documents and rules",
		modules: []string{`package t.rules
gen := {"k": 1}
gen2 contains v if { some v in data.base.list }
`, `package t
everything := data.t.rules
mixed := [data.base.obj.a, data.t.rules.gen.k, data.base.list[1]]
keys contains k if { some k, _ in data.base.obj }
dyn := data.base.obj[input.k]
whole := data.base
via_var := x if { x := data.t.rules[input.rule] }
`},
		data:   `{"base": {"obj": {"a": 1, "b": [1, 2]}, "list": ["x", "y", "x"]}}`,
		rules:  []string{"t/everything", "t/mixed", "t/keys", "t/dyn", "t/whole", "t/via_var"},
		inputs: []string{``, `{"k": "a", "rule": "gen"}`, `{"k": "b", "rule": "gen2"}`, `{"k": "z", "rule": "nope"}`, `{"k": 1}`},
	},
	{
		name: "multi-value conflicts",
		modules: []string{`package t
c := 1 if input.a
c := 2 if input.b
o[k] := v if { some k, v in input.m }
o[k] := 0 if { some k in input.zero }
f(x) := true if x
f(x) := false if x
call := f(input.a)
`},
		rules: []string{"t/c", "t/o", "t/call"},
		inputs: []string{``, `{"a": true}`, `{"a": true, "b": true}`, `{"m": {"x": 1}, "zero": ["x"]}`, `{"m": {"x": 0}, "zero": ["x"]}`,
			`{"a": false}`},
	},
	{
		name: "builtin errors are undefined",
		modules: []string{`package t
bad_sprintf := sprintf("%d", input.args)
bad_number := to_number("x")
div0 := 1 / 0
partial contains x if { some x in input.xs; to_number(x) > 0 }
first_ok := y if { y := to_number(input.s) } else := "fallback"
neg if { not to_number(input.s) }
bad_time := time.parse_rfc3339_ns(input.t)
uppers := [upper(x) | some x in input.xs]
`},
		rules:  []string{"t/bad_sprintf", "t/bad_number", "t/div0", "t/partial", "t/first_ok", "t/neg", "t/bad_time", "t/uppers"},
		inputs: []string{``, `{"xs": ["1", "x", "2.5", "-1"], "s": "12", "t": "2026-11-23T10:00:00Z", "args": [1]}`, `{"xs": [1, "a"], "s": "x", "t": "yesterday", "args": "notarray"}`, `{"args": ["x"]}`},
	},
	{
		name: "objects, sets of objects, unions",
		modules: []string{`package t
u := object.union(input.a, input.b)
un := object.union_n([input.a, input.b, {"z": {"deep": true}}])
so := {{"id": x.id} | some x in input.items}
so_has if { {"id": 1} in so }
get := object.get(input.a, ["p", "q"], "dflt")
rm := object.remove(input.a, ["x"])
keys := {k | some k, _ in input.a}
`},
		rules: []string{"t/u", "t/un", "t/so", "t/so_has", "t/get", "t/rm", "t/keys"},
		inputs: []string{``, `{"a": {"x": 1, "p": {"q": 2}}, "b": {"x": {"y": 1}, "w": [1]}, "items": [{"id": 1}, {"id": 1}, {"id": 2}]}`,
			`{"a": {"x": {"k": 1}}, "b": {"x": {"j": 2}}, "items": []}`, `{"a": [1], "b": {}, "items": [{"noid": 1}]}`,
			`{"a": {1: "int key", "x": 1}, "b": {1.0: "float key"}}`},
	},
	{
		name: "numbers",
		modules: []string{`package t
big := input.n * 10
plus1 := input.n + 1
is_one if input.n == 1
eq_float if input.n == 1.0
cmp if input.n < 100000000000000000000000000000
set_dedup := {1, 1.0, input.n}
obj_key := {input.n: "v"}[1]
int := to_number("12345678901234567890123")
third := input.n / 3
modulo := input.n % 7
rounded := round(input.n)
arr := [1, 1.0, 1e0, 10e-1]
precise if 0.1 + 0.2 == 0.3
`},
		rules: []string{"t/big", "t/plus1", "t/is_one", "t/eq_float", "t/cmp", "t/set_dedup", "t/obj_key", "t/int", "t/third", "t/modulo", "t/rounded", "t/arr", "t/precise"},
		inputs: []string{``, `{"n": 1}`, `{"n": 1.0}`, `{"n": 12345678901234567890123}`, `{"n": -0.5}`, `{"n": 1e308}`,
			`{"n": 2.5}`, `{"n": 9007199254740993}`},
	},
	{
		name: "unicode strings",
		modules: []string{`package t
n := count(input.s)
up := upper(input.s)
sub := substring(input.s, 1, 2)
idx := indexof(input.s, "é")
parts := split(input.s, "·")
formatted := sprintf("%s|%v|%q", [input.s, input.s, input.s])
cmp if input.s < "z"
rev := concat("", [c | some i in numbers.range(count(input.s) - 1, 0); c := substring(input.s, i, 1)])
`},
		rules: []string{"t/n", "t/up", "t/sub", "t/idx", "t/parts", "t/formatted", "t/cmp", "t/rev"},
		inputs: []string{`{"s": "héllo·wörld"}`, `{"s": "日本語·テキスト"}`, `{"s": "emoji 🎉·x"}`, `{"s": ""}`,
			`{"s": "\u0000nul"}`, `{"s": "e\u0301"}`},
	},
	{
		name: "indexing x[_] over collections",
		modules: []string{`package t
vals contains v if { v := input.c[_] }
keys contains k if { input.c[k] }
keys_all contains k if { _ = input.c[k] }
pairs contains [k, v] if { v := input.c[k] }
nested contains v if { v := input.c[_][_] }
at := input.c[input.i]
lit := [10, 20, 30][input.i]
data_idx contains v if { v := data.d[_].name }
`},
		data:   `{"d": [{"name": "a"}, {"name": "b"}, {"other": 1}]}`,
		rules:  []string{"t/vals", "t/keys", "t/keys_all", "t/pairs", "t/nested", "t/at", "t/lit", "t/data_idx"},
		inputs: []string{``, `{"c": [1, false, [2, 3]], "i": 0}`, `{"c": {"a": true, "b": false, "c": {"x": 1}}, "i": "c"}`, `{"c": {1, 2, [3]}, "i": 2}`, `{"c": "str", "i": 1.0}`, `{"c": null, "i": -1}`},
	},
}

func TestDifferential(t *testing.T) {
	for _, dc := range diffCases {
		t.Run(dc.name, func(t *testing.T) {
			modules := make(map[string]string, len(dc.modules))
			for i, m := range dc.modules {
				modules[fmt.Sprintf("m%d.rego", i)] = m
			}
			data := mustJSONObject(t, dc.data)
			for _, rule := range dc.rules {
				t.Run(rule, func(t *testing.T) {
					p := preparePair(t, spec{modules: modules, entrypoint: rule, data: data, caps: ast.CapabilitiesForThisVersion()})
					for _, in := range dc.inputs {
						p.check(t, rule, mustTerm(t, in))
					}
				})
			}
		})
	}
}

// The default pack: the files ship in ../../default and the sample
// decision inputs in ../../testdata. Reading them (rather than importing
// package policy, which would be a cycle) keeps this test on exactly what
// hallmark evaluates.
const (
	defaultPackDir   = "../../default"
	defaultInputsDir = "../../testdata"
	decisionRule     = "hallmark/promotion/decision"
)

func defaultPackSpec(t testing.TB) spec {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(defaultPackDir, "*.rego"))
	if err != nil || len(files) == 0 {
		t.Fatalf("default pack: no .rego files in %s (%v)", defaultPackDir, err)
	}
	modules := map[string]string{}
	for _, f := range files {
		// Tests are not part of a decision; package policy compiles them
		// only when running `policy test`.
		if strings.HasSuffix(f, "_test.rego") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		modules[filepath.Base(f)] = string(b)
	}
	b, err := os.ReadFile(filepath.Join(defaultPackDir, "data.json"))
	if err != nil {
		t.Fatal(err)
	}
	return spec{modules: modules, entrypoint: decisionRule, data: mustJSONObject(t, string(b)), caps: ast.CapabilitiesForThisVersion()}
}

// defaultInputs returns the sample inputs by file name, as JSON bytes.
func defaultInputs(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(defaultInputsDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no inputs in %s (%v)", defaultInputsDir, err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}

// jsonDoc decodes JSON keeping numbers exact, as OPA does.
func jsonDoc(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, errors.New("more than one JSON value")
	}
	return v, nil
}

// mutation edits a decoded copy of an input in place. Paths that do not
// exist are created, so every mutation applies to every input.
type mutation struct {
	name  string
	apply func(in map[string]any)
}

func obj(m map[string]any, key string) map[string]any {
	if o, ok := m[key].(map[string]any); ok {
		return o
	}
	o := map[string]any{}
	m[key] = o
	return o
}

// segments returns every evidence segment, overall included.
func segments(in map[string]any) []map[string]any {
	ev := obj(in, "evidence")
	segs := []map[string]any{obj(ev, "overall")}
	for _, name := range sortedKeys(obj(ev, "segments")) {
		if s, ok := obj(ev, "segments")[name].(map[string]any); ok {
			segs = append(segs, s)
		}
	}
	return segs
}

func setInSegments(path []string, v any) func(map[string]any) {
	return func(in map[string]any) {
		for _, s := range segments(in) {
			m := s
			for _, p := range path[:len(path)-1] {
				m = obj(m, p)
			}
			m[path[len(path)-1]] = v
		}
	}
}

var mutations = []mutation{
	{"drop approvals", func(in map[string]any) { delete(in, "approvals") }},
	{"no approvals", func(in map[string]any) { in["approvals"] = []any{} }},
	{"approvals not a list", func(in map[string]any) { in["approvals"] = map[string]any{"a": 1} }},
	{"creator approves", func(in map[string]any) {
		in["approvals"] = []any{map[string]any{"approver": obj(in, "candidate")["creator"], "meaning": "approved"}}
	}},
	{"rejection", func(in map[string]any) {
		in["approvals"] = append(asList(in["approvals"]), map[string]any{"approver": "zed", "meaning": "rejected"},
			map[string]any{"approver": "zed", "meaning": "approved"})
	}},
	{"revoked approver", func(in map[string]any) {
		in["approvals"] = []any{map[string]any{"approver": "dave", "meaning": "approved", "approver_revoked": true},
			map[string]any{"approver": "erin", "meaning": "approved"}}
	}},
	{"revoke", func(in map[string]any) { obj(in, "candidate")["revoked"] = true }},
	{"rollback true", func(in map[string]any) { obj(in, "request")["rollback"] = true }},
	{"rollback false", func(in map[string]any) { obj(in, "request")["rollback"] = false }},
	{"rollback missing", func(in map[string]any) { delete(obj(in, "request"), "rollback") }},
	{"rollback string", func(in map[string]any) { obj(in, "request")["rollback"] = "true" }},
	{"unknown alias", func(in map[string]any) { obj(in, "request")["alias"] = "canary" }},
	{"alias number", func(in map[string]any) { obj(in, "request")["alias"] = json.Number("7") }},
	{"first release", func(in map[string]any) { obj(in, "request")["from_version"] = "" }},
	{"evidence removed", func(in map[string]any) { delete(in, "evidence") }},
	{"evidence null", func(in map[string]any) { in["evidence"] = nil }},
	{"evidence for another alias", func(in map[string]any) { obj(in, "evidence")["alias"] = "staging" }},
	{"evidence for another candidate", func(in map[string]any) { obj(in, "evidence")["candidate"] = "sha256:99" }},
	{"segments insufficient", setInSegments([]string{"sufficient"}, false)},
	{"segments small", setInSegments([]string{"n"}, json.Number("10"))},
	{"segments low agreement", setInSegments([]string{"agreement", "lower"}, json.Number("0.5"))},
	{"segments slow", setInSegments([]string{"latency_ms", "p99_ratio"}, json.Number("3.25"))},
	{"segments erroring", setInSegments([]string{"error_rate"}, json.Number("0.5"))},
	{"segments drifting", setInSegments([]string{"psi"}, json.Number("0.9"))},
	{"segments dropping", setInSegments([]string{"drop_rate"}, json.Number("0.75"))},
	{"segments big numbers", setInSegments([]string{"n"}, json.Number("123456789012345678901234567890"))},
	{"segments string numbers", setInSegments([]string{"n"}, "900")},
	{"few requests", func(in map[string]any) { obj(obj(in, "evidence"), "overall")["requests"] = json.Number("999") }},
	{"no segments", func(in map[string]any) { delete(obj(in, "evidence"), "segments") }},
	{"segments not an object", func(in map[string]any) { obj(in, "evidence")["segments"] = []any{json.Number("1")} }},
	{"stale evidence", func(in map[string]any) { obj(in, "evidence")["updated_at"] = "2025-01-01T00:00:00Z" }},
	{"evidence from the future", func(in map[string]any) { obj(in, "evidence")["updated_at"] = "2099-01-01T00:00:00Z" }},
	{"bad now", func(in map[string]any) { in["now"] = "not a time" }},
	{"bad updated_at", func(in map[string]any) { obj(in, "evidence")["updated_at"] = "2026-13-45T99:00:00Z" }},
	{"now a number", func(in map[string]any) { in["now"] = json.Number("1700000000") }},
	{"no signatures", func(in map[string]any) { in["signatures"] = []any{} }},
	{"invalid signature", func(in map[string]any) {
		in["signatures"] = []any{map[string]any{"signer": "x", "key_id": "k9", "valid": false, "trusted": true}}
	}},
	{"unicode label", func(in map[string]any) { obj(in, "candidate")["label"] = "версия-1.0 🚀" }},
	{"empty object", func(in map[string]any) { clear(in) }},
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

func inputValue(t testing.TB, doc any) ast.Value {
	t.Helper()
	v, err := ast.InterfaceToValue(doc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestDefaultPack(t *testing.T) {
	s := defaultPackSpec(t)
	inputs := defaultInputs(t)
	// Also compare the pack under other settings: trusted signers and no
	// evidence requirement exercise the other branches.
	variants := map[string]func(map[string]any){
		"shipped data": func(map[string]any) {},
		"trusted signers": func(d map[string]any) {
			obj(obj(d, "hallmark"), "settings")["trusted_signers"] = []any{"release-key"}
		},
		"no evidence required": func(d map[string]any) {
			obj(obj(d, "hallmark"), "settings")["evidence_required"] = []any{}
		},
	}
	for _, vname := range sortedKeys(variants) {
		t.Run(vname, func(t *testing.T) {
			vs := s
			vs.data = mustJSONObject(t, mustMarshal(t, s.data))
			variants[vname](vs.data)
			for _, rule := range []string{decisionRule, "hallmark/promotion/deny", "hallmark/promotion/warn", "hallmark/promotion/required_approvals"} {
				t.Run(rule, func(t *testing.T) {
					vs := vs
					vs.entrypoint = rule
					p := preparePair(t, vs)
					for _, name := range sortedKeys(inputs) {
						doc, err := jsonDoc(inputs[name])
						if err != nil {
							t.Fatalf("%s: %v", name, err)
						}
						p.check(t, name, inputValue(t, doc))
						for _, m := range mutations {
							mdoc, err := jsonDoc(inputs[name]) // fresh copy: mutations edit in place
							if err != nil {
								t.Fatal(err)
							}
							m.apply(mdoc.(map[string]any))
							p.check(t, name+" / "+m.name, inputValue(t, mdoc))
						}
					}
				})
			}
		})
	}
}

// TestDefaultPackConcurrent shares one prepared program between
// goroutines, as package policy will; run it with -race.
func TestDefaultPackConcurrent(t *testing.T) {
	p := preparePair(t, defaultPackSpec(t))
	inputs := defaultInputs(t)
	var values []ast.Value
	for _, name := range sortedKeys(inputs) {
		doc, err := jsonDoc(inputs[name])
		if err != nil {
			t.Fatal(err)
		}
		values = append(values, inputValue(t, doc))
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				for _, v := range values {
					p.check(t, "concurrent", v)
				}
			}
		}()
	}
	wg.Wait()
}

func mustMarshal(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// FuzzDefaultPack feeds mutated decision inputs to the default pack both
// ways. Only JSON objects are evaluated: hallmark refuses anything else
// before evaluation.
func FuzzDefaultPack(f *testing.F) {
	s := defaultPackSpec(f)
	inputs := defaultInputs(f)
	for _, name := range sortedKeys(inputs) {
		f.Add(inputs[name])
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"request": {"rollback": true, "alias": "production"}, "approvals": [{"approver": "x", "meaning": "approved"}]}`))
	p := preparePair(f, s)
	f.Fuzz(func(t *testing.T, b []byte) {
		doc, err := jsonDoc(b)
		if err != nil {
			return
		}
		if _, ok := doc.(map[string]any); !ok {
			return
		}
		p.check(t, "fuzz", inputValue(t, doc))
	})
}
