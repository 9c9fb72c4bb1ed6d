package ireval_test

// TestCompliance runs OPA's own compliance cases (the Rego v1 set embedded
// in github.com/open-policy-agent/opa/v1/test/cases/testdata; the v0 cases
// live in a separate directory that the embed does not include) through
// both evaluators. The cases' expected results are not used: OPA's
// top-down evaluator, run on the same wrapped policy, is the reference, so
// a case passes when ireval agrees with it, whatever OPA's own verdict.
//
// Each case's query becomes a partial set rule so that it can be planned
// as an entrypoint:
//
//	package ireval_harness
//	query_result contains {"x": x, ...} if { <query> }
//
// binding every output variable of the query. The reference evaluates
// data.ireval_harness.query_result with package rego (full current
// capabilities, non-strict built-in errors, Rego v1, the case's data in an
// inmem store); ireval plans the same modules and evaluates the entrypoint
// ireval_harness/query_result on the same documents.
//
// Skip classes, with their counts on 2026-11-23 (OPA v1.22.2: 2,400 cases;
// 2,185 compared):
//
//   - unsupported: <reason> (197): ireval.New refused the plan, grouped by
//     reason in the summary: a reference reading rules and base documents
//     together (53), `with` on data (26), an iteration over data where rules
//     and base documents meet (10), a lookup in or iteration over a document
//     reached by a dynamic reference (3), walk (14), and built-ins with
//     effects (io.jwt.decode_verify 43, io.jwt.encode_sign_raw 14,
//     io.jwt.encode_sign 9, time.now_ns 8, json.match_schema 5,
//     json.verify_schema 4, net.lookup_ip_addr 3, http.send 2, opa.runtime,
//     rand.intn, uuid.rfc4122 1 each). hallmark evaluates all of these
//     top-down.
//   - plan: <file:line>: <reason> (12): ireval.Plan refused the source: a
//     comprehension standing alone as a body literal (11), an object with
//     a computed key beside others (1). Also evaluated top-down.
//   - gave up at evaluation (2): the plan met equal numbers spelt
//     differently (3.5 and 3.50) and hands the decision to top-down.
//   - case does not compile (2): the case is a compile error by design
//     (base/virtual conflicts) or needs a built-in only OPA's own test
//     binary registers (test.sleep).
//   - wrapped query does not compile (2): the query reads all of data,
//     which then contains the wrapper rule: rego_recursion_error.
//   - nondeterministic (0): the reference is evaluated twice and a case
//     whose two top-down runs differ cannot be compared. Cases calling
//     time.now_ns, rand.intn, uuid.rfc4122 and the like are not skipped by
//     name: the compliance cases only check properties of those values
//     (IREVAL_SELFCHECK=1 compares all 27 of them between two top-down runs,
//     and they agree), and with time.now_ns mocked by `with` they are
//     deterministic.
//   - needs environment variables (0): no v1 case sets any.
//
// No case is skipped for using `with` on built-ins or functions: the planner
// supports replacing them, and ireval agrees with topdown on every such case.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/test/cases"
	"github.com/open-policy-agent/opa/v1/test/cases/testdata"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/hallmark-dev/hallmark/policy/internal/ireval"
)

const (
	wrapPackage = "ireval_harness"
	wrapRule    = "query_result"
)

// summary counts outcomes across parallel subtests.
type summary struct {
	mu      sync.Mutex
	run     int
	passed  int
	failed  int
	skipped map[string]int
}

func (s *summary) skip(t *testing.T, class, detail string) {
	s.mu.Lock()
	s.skipped[class]++
	s.mu.Unlock()
	t.Skipf("%s: %s", class, detail)
}

func (s *summary) result(ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.run++
	if ok {
		s.passed++
	} else {
		s.failed++
	}
}

func (s *summary) log(t *testing.T, total int) {
	nskip := 0
	for _, n := range s.skipped {
		nskip += n
	}
	t.Logf("compliance: %d cases; %d compared: %d passed, %d failed; %d skipped", total, s.run, s.passed, s.failed, nskip)
	classes := make([]string, 0, len(s.skipped))
	for c := range s.skipped {
		classes = append(classes, c)
	}
	slices.SortFunc(classes, func(a, b string) int {
		if d := s.skipped[b] - s.skipped[a]; d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	for _, c := range classes {
		t.Logf("  skipped %5d  %s", s.skipped[c], c)
	}
}

func loadCases(t *testing.T) []cases.TestCase {
	t.Helper()
	var all []cases.TestCase
	err := fs.WalkDir(testdata.V1, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := testdata.V1.ReadFile(path)
		if err != nil {
			return err
		}
		var set cases.Set
		if err := util.Unmarshal(b, &set); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		for i := range set.Cases {
			set.Cases[i].Filename = path
		}
		all = append(all, set.Cases...)
		return nil
	})
	if err != nil {
		t.Fatalf("load compliance cases: %v", err)
	}
	if len(all) == 0 {
		t.Fatal("no compliance cases in the embedded testdata")
	}
	return all
}

func TestCompliance(t *testing.T) {
	all := loadCases(t)
	sum := &summary{skipped: map[string]int{}}
	t.Run("v1", func(t *testing.T) {
		for _, tc := range all {
			t.Run(tc.Note, func(t *testing.T) {
				t.Parallel()
				runCase(t, tc, sum)
			})
		}
	})
	sum.log(t, len(all))
}

func capsFor(tc cases.TestCase) *ast.Capabilities {
	return ast.CapabilitiesForThisVersion(ast.CapabilitiesExperimentalKeywords(tc.ExperimentalKeywords))
}

func runCase(t *testing.T, tc cases.TestCase, sum *summary) {
	ctx := context.Background()
	caps := capsFor(tc)
	popts := ast.ParserOptions{RegoVersion: ast.RegoV1, Capabilities: caps}

	modules := make(map[string]string, len(tc.Modules)+1)
	for i, m := range tc.Modules {
		modules[fmt.Sprintf("test-%d.rego", i)] = m
	}
	body, err := ast.ParseBodyWithOpts(tc.Query, popts)
	if err != nil {
		sum.skip(t, "case does not compile", err.Error())
	}
	if len(tc.Env) > 0 {
		// t.Setenv cannot be used in parallel tests; no v1 case sets any.
		sum.skip(t, "needs environment variables", fmt.Sprint(tc.Env))
	}
	modules[wrapPackage+".rego"] = wrapQuery(tc.Query, queryVars(body))

	s := spec{modules: modules, entrypoint: wrapPackage + "/" + wrapRule, caps: caps}
	if tc.Data != nil {
		s.data = *tc.Data
	}
	switch {
	case tc.InputTerm != nil:
		term, err := ast.ParseTerm(*tc.InputTerm)
		if err != nil {
			sum.skip(t, "case does not compile", "input_term: "+err.Error())
		}
		s.input = term.Value
	case tc.Input != nil:
		if s.input, err = ast.InterfaceToValue(*tc.Input); err != nil {
			t.Fatalf("input: %v", err)
		}
	}

	td, err := prepareTopdown(ctx, s)
	if err != nil {
		if originalCompiles(ctx, tc, s) {
			sum.skip(t, "wrapped query does not compile: "+errorClass(err), err.Error())
		}
		sum.skip(t, "case does not compile", err.Error())
	}
	ir, err := prepareIR(ctx, s)
	var skip *skipError
	if errors.As(err, &skip) {
		sum.skip(t, skip.reason+": "+messageClass(skip.err), skip.err.Error())
	}
	if err != nil {
		sum.result(false)
		t.Fatalf("query: %s\n%v", tc.Query, err)
	}
	var data ast.Value
	if s.data != nil {
		if data, err = ast.InterfaceToValue(s.data); err != nil {
			t.Fatalf("data: %v", err)
		}
	}
	want := evalPrepared(ctx, td, s.input)
	if again := evalPrepared(ctx, td, s.input); compareOutcomes(want, again) != "" {
		sum.skip(t, "nondeterministic", fmt.Sprintf("two top-down runs differ: %s / %s", want, again))
	}
	got := ir.eval(ctx, s.input, data)
	if errors.Is(got.err, ireval.ErrUnsupported) {
		sum.skip(t, "gave up at evaluation (top-down answers)", got.err.Error())
	}
	d := compareOutcomes(want, got)
	sum.result(d == "")
	if d != "" {
		t.Errorf("file %s\nquery: %s\n%s", tc.Filename, tc.Query, d)
	}
}

// queryVars returns the variables a query binds for its caller, the ones
// topdown would report in a result row: not wildcards or generated names,
// not the roots data and input, not variables local to comprehensions,
// `every` bodies or negations.
func queryVars(body ast.Body) []string {
	callHeads := map[ast.Var]bool{}
	ast.WalkTerms(body, func(x *ast.Term) bool {
		if c, ok := x.Value.(ast.Call); ok {
			if r, ok := c[0].Value.(ast.Ref); ok {
				if v, ok := r[0].Value.(ast.Var); ok {
					callHeads[v] = true
				}
			}
		}
		return false
	})
	vis := ast.NewVarVisitor().WithParams(ast.VarVisitorParams{
		SkipRefCallHead: true,
		SkipClosures:    true,
		SkipWithTarget:  true,
	})
	vis.Walk(body)
	var names []string
	for v := range vis.Vars() {
		switch {
		case v.IsWildcard(), v.IsGenerated(), ast.RootDocumentNames.Contains(ast.NewTerm(v)), callHeads[v]:
			continue
		}
		names = append(names, string(v))
	}
	slices.Sort(names)
	return names
}

func TestQueryVars(t *testing.T) {
	for _, c := range []struct{ query, want string }{
		{`data.generated.p = x`, "x"},
		{`x := 1; y = [x, z] with input as {}; z = 2`, "x y z"},
		{`some a in input.xs; a > 1`, "a"},
		{`some k, v in data.m; v[_] = w`, "k v w"},
		{`x = [y | some y in input.xs]; every e in x { e > u }; u := 0`, "u x"},
		{`not data.p[q]; q = "a"`, "q"},
		{`sprintf("%d", [n], s); n = 1`, "n s"},
		{`data.a.b[_] = input.c`, ""},
	} {
		got := strings.Join(queryVars(ast.MustParseBody(c.query)), " ")
		if got != c.want {
			t.Errorf("queryVars(%q) = %q, want %q", c.query, got, c.want)
		}
	}
}

// wrapQuery makes a module with one partial set rule whose members are the
// query's bindings.
func wrapQuery(query string, vars []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "package %s\n\n%s contains {", wrapPackage, wrapRule)
	for i, v := range vars {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s: %s", strconv.Quote(v), v)
	}
	fmt.Fprintf(&b, "} if {\n%s\n}\n", query)
	return b.String()
}

// originalCompiles reports whether the case's own query compiles, to tell
// a wrapping failure from a case that is a compile error by design.
func originalCompiles(ctx context.Context, tc cases.TestCase, s spec) bool {
	opts := []func(*rego.Rego){
		rego.Query(tc.Query),
		rego.Store(newStore(s.data)),
		rego.Capabilities(capsFor(tc)),
		rego.SetRegoVersion(ast.RegoV1),
	}
	for i, m := range tc.Modules {
		opts = append(opts, rego.Module(fmt.Sprintf("test-%d.rego", i), m))
	}
	_, err := rego.New(opts...).PrepareForEval(ctx)
	return err == nil
}

// errorCodeRE pulls an OPA error code ("rego_type_error") out of a message,
// to group skips by cause.
var errorCodeRE = regexp.MustCompile(`\b(rego_[a-z_]+|eval_[a-z_]+)\b`)

// errorClass names an error by its OPA code for the summary.
func errorClass(err error) string {
	if m := errorCodeRE.FindString(err.Error()); m != "" {
		return m
	}
	return "other"
}

// messageClass shortens a planning or support error to a summary line:
// the OPA error code when there is one, else ireval's reason without the
// function it was found in, first line only, at most 100 bytes.
func messageClass(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ireval.ErrUnsupported.Error()+": "); i >= 0 {
		msg = msg[i+len(ireval.ErrUnsupported.Error())+2:]
	} else if c := errorCodeRE.FindString(msg); c != "" {
		return c
	}
	msg, _, _ = strings.Cut(msg, "\n")
	if len(msg) > 100 {
		msg = msg[:100] + "…"
	}
	return msg
}
