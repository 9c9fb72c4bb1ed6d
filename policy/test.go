package policy

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// TestOptions configure Test. The zero value runs every test without
// coverage, each with a 5 s deadline.
type TestOptions struct {
	// Coverage measures which lines of the set's non-test modules the tests
	// evaluate.
	Coverage bool
	// Run, when set, is a regular expression selecting tests by their full
	// name (data.pkg.test_name), as opa test --run does.
	Run string
	// Timeout bounds each test. The default is 5 s, as in opa test.
	Timeout time.Duration
	// Trace keeps each failing test's evaluation trace in TestResult.Trace.
	Trace bool
}

// TestResult is the outcome of one test rule.
type TestResult struct {
	Package  string        `json:"package"` // data.hallmark.promotion_test
	Name     string        `json:"name"`    // test_production_allowed
	File     string        `json:"file"`
	Line     int           `json:"line"`
	Pass     bool          `json:"pass"`
	Skip     bool          `json:"skip,omitempty"`
	Error    string        `json:"error,omitempty"` // evaluation error (timeout, built-in error)
	Duration time.Duration `json:"duration_ns"`
	Output   string        `json:"output,omitempty"` // what print() wrote
	Trace    []string      `json:"-"`
}

// Status returns "PASS", "FAIL", "ERROR" or "SKIPPED", as opa test prints.
func (r TestResult) Status() string {
	switch {
	case r.Skip:
		return "SKIPPED"
	case r.Error != "":
		return "ERROR"
	case r.Pass:
		return "PASS"
	}
	return "FAIL"
}

// Coverage is line coverage of a set's non-test modules by its tests.
type Coverage struct {
	Percent      float64                 `json:"percent"` // 0..100; 100 when no line can be covered
	CoveredLines int                     `json:"covered_lines"`
	TotalLines   int                     `json:"total_lines"`
	Files        map[string]FileCoverage `json:"files"`
}

// FileCoverage is one module's coverage; NotCovered lists line ranges
// ("12" or "12-14").
type FileCoverage struct {
	Percent      float64  `json:"percent"`
	CoveredLines int      `json:"covered_lines"`
	TotalLines   int      `json:"total_lines"`
	NotCovered   []string `json:"not_covered,omitempty"`
}

// TestReport is what Test returns: results sorted by file and line, counts
// and, when asked, coverage.
type TestReport struct {
	Results  []TestResult `json:"results"`
	Passed   int          `json:"passed"`
	Failed   int          `json:"failed"`
	Errored  int          `json:"errored"`
	Skipped  int          `json:"skipped"`
	Coverage *Coverage    `json:"coverage,omitempty"`
}

// OK reports whether tests ran and none failed or errored.
func (r *TestReport) OK() bool { return r.Failed == 0 && r.Errored == 0 && len(r.Results) > r.Skipped }

// Test compiles set like Prepare (strict, pinned capabilities, schema
// type-check, print() kept) and runs its test rules with OPA's tester, in
// process, with the set's data.json as data. It returns an error only when
// the set does not compile or the run cannot start; failing tests are in the
// report.
func Test(ctx context.Context, set *Set, opts TestOptions) (*TestReport, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.Run != "" {
		if _, err := regexp.Compile(opts.Run); err != nil {
			return nil, fmt.Errorf("test filter %q: %w", opts.Run, err)
		}
	}
	// Compile once to report errors precisely, then hand a fresh compiler
	// of the same configuration to the tester, which adds its own stages.
	c, err := compile(ctx, set, true)
	if err != nil {
		return nil, err
	}
	caps, _ := Capabilities()
	ss, _ := schemas()
	tc := ast.NewCompiler().
		WithCapabilities(caps).
		WithStrict(true).
		WithSchemas(ss).
		WithUseTypeCheckAnnotations(true).
		WithEnablePrintStatements(true).
		WithDefaultRegoVersion(ast.RegoV1)
	modules := make(map[string]*ast.Module, len(c.modules))
	for name, m := range c.modules {
		modules[name] = m.Copy()
	}
	var cov *cover.Cover
	runner := tester.NewRunner().
		SetCompiler(tc).
		SetStore(c.store).
		SetModules(modules).
		CapturePrintOutput(true).
		EnableTracing(opts.Trace).
		SetTimeout(opts.Timeout).
		Filter(opts.Run)
	if opts.Coverage {
		cov = cover.New()
		runner = runner.SetCoverageQueryTracer(cov)
	}
	ch, err := runner.RunTests(ctx, nil)
	if err != nil {
		var errs ast.Errors
		if errors.As(err, &errs) {
			return nil, &CompileError{Problems: astProblems(errs)}
		}
		return nil, fmt.Errorf("run tests: %w", err)
	}
	rep := &TestReport{Results: []TestResult{}}
	for r := range ch {
		tr := TestResult{Package: r.Package, Name: r.Name, Duration: r.Duration, Output: string(r.Output), Skip: r.Skip}
		if r.Location != nil {
			tr.File, tr.Line = r.Location.File, r.Location.Row
		}
		switch {
		case r.Skip:
			rep.Skipped++
		case r.Error != nil:
			tr.Error = r.Error.Error()
			rep.Errored++
		case r.Fail:
			rep.Failed++
		default:
			tr.Pass = true
			rep.Passed++
		}
		if opts.Trace && !tr.Pass {
			var b strings.Builder
			topdown.PrettyTraceWithLocation(&b, r.Trace)
			tr.Trace = strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
		}
		rep.Results = append(rep.Results, tr)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("run tests: %w", err)
	}
	slices.SortFunc(rep.Results, func(a, b TestResult) int {
		if c := strings.Compare(a.File, b.File); c != 0 {
			return c
		}
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return strings.Compare(a.Name, b.Name)
	})
	if cov != nil {
		nonTest := map[string]*ast.Module{}
		for _, f := range set.files {
			if m, ok := c.modules[f.Name]; ok && !f.IsTest() {
				nonTest[f.Name] = m
			}
		}
		rep.Coverage = coverage(cov.Report(nonTest), nonTest)
	}
	return rep, nil
}

func coverage(r cover.Report, modules map[string]*ast.Module) *Coverage {
	out := &Coverage{Files: map[string]FileCoverage{}}
	for name := range modules {
		fr := r.Files[name]
		fc := FileCoverage{}
		if fr != nil {
			fc.CoveredLines, fc.TotalLines = fr.CoveredLines, fr.CoveredLines+fr.NotCoveredLines
			fc.NotCovered = lineRanges(fr.NotCovered)
		}
		fc.Percent = percent(fc.CoveredLines, fc.TotalLines)
		out.Files[name] = fc
		out.CoveredLines += fc.CoveredLines
		out.TotalLines += fc.TotalLines
	}
	out.Percent = percent(out.CoveredLines, out.TotalLines)
	return out
}

// lineRanges turns OPA's not-covered ranges, which are per expression and
// so repeat a line that holds several, into distinct lines with runs of
// consecutive lines merged: "5", "9-11".
func lineRanges(rs []cover.Range) []string {
	var rows []int
	for _, r := range rs {
		for row := r.Start.Row; row <= max(r.Start.Row, r.End.Row); row++ {
			rows = append(rows, row)
		}
	}
	slices.Sort(rows)
	rows = slices.Compact(rows)
	var out []string
	for i := 0; i < len(rows); {
		j := i
		for j+1 < len(rows) && rows[j+1] == rows[j]+1 {
			j++
		}
		if i == j {
			out = append(out, strconv.Itoa(rows[i]))
		} else {
			out = append(out, fmt.Sprintf("%d-%d", rows[i], rows[j]))
		}
		i = j + 1
	}
	return out
}

func percent(n, total int) float64 {
	if total == 0 {
		return 100
	}
	return 100 * float64(n) / float64(total)
}

// VetOptions configure Vet.
type VetOptions struct {
	// MinCoverage is the coverage floor in percent (0..100) of the set's
	// non-test modules. Zero means no floor.
	MinCoverage float64
	// TestTimeout bounds each test; the default is 5 s.
	TestTimeout time.Duration
}

// Publication is what a registry records when it publishes a set: the full
// text of every file, the set's digest, every test result and the coverage,
// with the engine's versions.
type Publication struct {
	Digest              Digest       `json:"digest"`
	Files               []File       `json:"files"`
	Tests               []TestResult `json:"tests"`
	Coverage            Coverage     `json:"coverage"`
	MinCoverage         float64      `json:"min_coverage"`
	OPAVersion          string       `json:"opa_version"`
	CapabilitiesVersion string       `json:"capabilities_version"`
	SchemaVersion       int          `json:"schema_version"`
}

// Vet decides whether set may be published: it must compile (strict, Rego
// v1, pinned capabilities, input schema), define the entry point, contain at
// least one test, pass every test, and reach opts.MinCoverage. On success it
// returns the Publication to record; otherwise a *RefusedError listing every
// problem with its file:line (and the refused Publication when the tests
// ran). Other errors (cancelled context) are returned as they are.
func Vet(ctx context.Context, set *Set, opts VetOptions) (*Publication, error) {
	if opts.MinCoverage < 0 || opts.MinCoverage > 100 {
		return nil, fmt.Errorf("vet policy set: coverage floor %v is not in [0, 100]", opts.MinCoverage)
	}
	refuse := func(ps []Problem, pub *Publication) error {
		return &RefusedError{Digest: set.digest, Problems: ps, Publication: pub}
	}
	if err := Check(ctx, set); err != nil {
		var ce *CompileError
		switch {
		case errors.As(err, &ce):
			return nil, refuse(ce.Problems, nil)
		case errors.Is(err, ErrNoEntryPoint):
			return nil, refuse([]Problem{{Code: "no_entry_point", Message: ErrNoEntryPoint.Error()}}, nil)
		}
		return nil, err
	}
	rep, err := Test(ctx, set, TestOptions{Coverage: true, Timeout: opts.TestTimeout})
	if err != nil {
		var ce *CompileError
		if errors.As(err, &ce) {
			return nil, refuse(ce.Problems, nil)
		}
		return nil, err
	}
	pub := &Publication{
		Digest:              set.digest,
		Files:               set.Files(),
		Tests:               rep.Results,
		Coverage:            *rep.Coverage,
		MinCoverage:         opts.MinCoverage,
		OPAVersion:          OPAVersion,
		CapabilitiesVersion: CapabilitiesVersion,
		SchemaVersion:       SchemaVersion,
	}
	var ps []Problem
	if len(rep.Results) == rep.Skipped {
		ps = append(ps, Problem{Code: "no_tests", Message: "the set has no tests (test_* rules); a published set must carry its tests"})
	}
	for _, r := range rep.Results {
		switch r.Status() {
		case "FAIL":
			ps = append(ps, Problem{File: r.File, Line: r.Line, Code: "test_failed", Message: r.Package + "." + r.Name + " failed"})
		case "ERROR":
			ps = append(ps, Problem{File: r.File, Line: r.Line, Code: "test_error", Message: r.Package + "." + r.Name + ": " + r.Error})
		}
	}
	if cv := rep.Coverage; cv.Percent < opts.MinCoverage {
		names := make([]string, 0, len(cv.Files))
		for n := range cv.Files {
			names = append(names, n)
		}
		sort.Strings(names)
		ps = append(ps, Problem{Code: "coverage_below_floor", Message: fmt.Sprintf("coverage %.1f%% is below the floor %.1f%%", cv.Percent, opts.MinCoverage)})
		for _, n := range names {
			fc := cv.Files[n]
			if len(fc.NotCovered) > 0 {
				first := strings.SplitN(fc.NotCovered[0], "-", 2)[0]
				var line int
				fmt.Sscan(first, &line)
				ps = append(ps, Problem{File: n, Line: line, Code: "not_covered", Message: fmt.Sprintf("%.1f%% covered; lines not covered: %s", fc.Percent, strings.Join(fc.NotCovered, ", "))})
			}
		}
	}
	if len(ps) > 0 {
		return nil, refuse(ps, pub)
	}
	return pub, nil
}
