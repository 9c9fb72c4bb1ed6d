package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/hallmark-dev/hallmark/policy"
)

// The offline policy commands: they work on a folder of Rego files and need
// no server. publish, dry-run, show and replay against the ledger talk to the
// registry and live elsewhere.
func init() {
	register(command{name: "policy test", summary: "run a policy set's tests (like opa test)", run: runPolicyTest})
	register(command{name: "policy fmt", summary: "format a policy set's Rego files (opa fmt, Rego v1)", run: runPolicyFmt})
	register(command{name: "policy check", summary: "compile a policy set: strict, Rego v1, input schema", run: runPolicyCheck})
	register(command{name: "policy eval", summary: "evaluate a promotion decision for an input document", run: runPolicyEval})
}

// loadPolicyDir loads DIR, the single positional argument.
func loadPolicyDir(args []string, synopsis string) (string, *policy.Set, error) {
	if len(args) != 1 {
		return "", nil, usagef("want exactly one policy folder: %s", synopsis)
	}
	s, err := policy.LoadDir(args[0])
	if err != nil {
		return "", nil, err
	}
	return args[0], s, nil
}

// printProblems writes one problem a line with paths joined to dir, as
// compilers print them (dir/file.rego:line:col: code: message).
func printProblems(w io.Writer, dir string, ps []policy.Problem) {
	for _, p := range ps {
		if p.File != "" {
			p.File = filepath.Join(dir, filepath.FromSlash(p.File))
		}
		fmt.Fprintln(w, p.String())
	}
}

// compileFailure prints a *CompileError's problems and returns exit 1.
func compileFailure(e *env, dir string, err error) error {
	var ce *policy.CompileError
	if errors.As(err, &ce) {
		printProblems(e.stderr, dir, ce.Problems)
		return exitError{1, fmt.Errorf("%d problem(s) in %s", len(ce.Problems), dir)}
	}
	return err
}

func runPolicyTest(ctx context.Context, e *env, args []string) error {
	const synopsis = "DIR [--coverage] [--run REGEX] [-v] [--timeout DURATION]"
	fs := newFlagSet(e, "policy test", synopsis)
	cov := fs.Bool("coverage", false, "report line coverage of the set's non-test modules")
	runRe := fs.String("run", "", "run only tests whose full name matches this regular expression")
	verbose := fs.Bool("v", false, "list every test and print the trace of failing ones")
	timeout := fs.Duration("timeout", 5*time.Second, "deadline of each test")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if _, err := regexp.Compile(*runRe); err != nil {
		return usagef("--run %q: %v", *runRe, err)
	}
	if *timeout <= 0 {
		return usagef("--timeout %s: want a positive duration", *timeout)
	}
	dir, set, err := loadPolicyDir(pos, synopsis)
	if err != nil {
		return err
	}
	rep, err := policy.Test(ctx, set, policy.TestOptions{Coverage: *cov, Run: *runRe, Timeout: *timeout, Trace: *verbose})
	if err != nil {
		return compileFailure(e, dir, err)
	}
	printTestReport(e.stdout, dir, rep, *verbose)
	return testOutcome(rep, *runRe)
}

// testOutcome is the exit status of policy test: 1 when a test failed or
// errored, or when no test ran (none matched, or all are skipped todo_
// tests), so that a pipeline cannot pass on tests that never ran.
func testOutcome(rep *policy.TestReport, run string) error {
	switch {
	case rep.Failed > 0 || rep.Errored > 0:
		return exitError{1, fmt.Errorf("%d of %d test(s) failed, %d errored", rep.Failed, len(rep.Results), rep.Errored)}
	case len(rep.Results) == 0 && run != "":
		return exitError{1, fmt.Errorf("no tests were run: none matches --run %q", run)}
	case len(rep.Results) == 0:
		return exitError{1, errors.New("no tests were run: the set has no test_ rules")}
	case rep.Passed == 0:
		return exitError{1, fmt.Errorf("no tests were run: all %d test(s) are skipped (todo_)", rep.Skipped)}
	}
	return nil
}

// printTestReport prints results the way opa test does: failures (or every
// test with -v) grouped by file, then the counts.
func printTestReport(w io.Writer, dir string, rep *policy.TestReport, verbose bool) {
	lastFile := ""
	shown := 0
	for _, r := range rep.Results {
		if !verbose && (r.Pass || r.Skip) {
			continue
		}
		if r.File != lastFile {
			if shown > 0 {
				fmt.Fprintln(w)
			}
			fmt.Fprintf(w, "%s:\n", filepath.Join(dir, filepath.FromSlash(r.File)))
			lastFile = r.File
		}
		shown++
		fmt.Fprintf(w, "%s.%s: %s (%s)\n", r.Package, r.Name, r.Status(), r.Duration.Round(time.Microsecond))
		if r.Error != "" {
			fmt.Fprintf(w, "  %s\n", r.Error)
		}
		for _, line := range strings.Split(strings.TrimRight(r.Output, "\n"), "\n") {
			if line != "" {
				fmt.Fprintf(w, "  %s\n", line)
			}
		}
		if verbose && !r.Pass && !r.Skip {
			for _, line := range r.Trace {
				fmt.Fprintf(w, "    %s\n", line)
			}
		}
	}
	if shown > 0 {
		fmt.Fprintln(w, strings.Repeat("-", 80))
	}
	total := len(rep.Results)
	for _, c := range []struct {
		label string
		n     int
	}{{"PASS", rep.Passed}, {"FAIL", rep.Failed}, {"SKIPPED", rep.Skipped}, {"ERROR", rep.Errored}} {
		if c.n > 0 || c.label == "PASS" {
			fmt.Fprintf(w, "%s: %d/%d\n", c.label, c.n, total)
		}
	}
	if cv := rep.Coverage; cv != nil {
		fmt.Fprintf(w, "coverage: %.1f%% (%d of %d lines)\n", cv.Percent, cv.CoveredLines, cv.TotalLines)
		names := make([]string, 0, len(cv.Files))
		for n := range cv.Files {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fc := cv.Files[n]
			line := fmt.Sprintf("  %s: %.1f%% (%d of %d lines)", filepath.Join(dir, filepath.FromSlash(n)), fc.Percent, fc.CoveredLines, fc.TotalLines)
			if len(fc.NotCovered) > 0 {
				line += "; not covered: " + strings.Join(fc.NotCovered, ", ")
			}
			fmt.Fprintln(w, line)
		}
	}
}

func runPolicyFmt(ctx context.Context, e *env, args []string) error {
	const synopsis = "DIR [--check]"
	fs := newFlagSet(e, "policy fmt", synopsis)
	check := fs.Bool("check", false, "change nothing; list the files that are not formatted and exit 1 if any")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	dir, set, err := loadPolicyDir(pos, synopsis)
	if err != nil {
		return err
	}
	// Format everything first: a parse error in one file leaves every file
	// untouched.
	type change struct {
		path string
		data []byte
	}
	var changes []change
	for _, f := range set.Files() {
		if !strings.HasSuffix(f.Name, ".rego") {
			continue
		}
		out, err := policy.Format(f.Name, f.Data)
		if err != nil {
			return compileFailure(e, dir, err)
		}
		if !bytes.Equal(out, f.Data) {
			changes = append(changes, change{filepath.Join(dir, filepath.FromSlash(f.Name)), out})
		}
	}
	for _, c := range changes {
		fmt.Fprintln(e.stdout, c.path)
		if !*check {
			if err := writeFileAtomic(c.path, c.data); err != nil {
				return err
			}
		}
	}
	if *check && len(changes) > 0 {
		return exitError{1, fmt.Errorf("%d file(s) not formatted", len(changes))}
	}
	return nil
}

// writeFileAtomic replaces path with data through a temporary file and a
// rename, keeping the file's permissions, so an interrupted fmt never leaves
// a truncated module.
func writeFileAtomic(path string, data []byte) error {
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(info.Mode().Perm()); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	// The data must be on disk before the rename is: otherwise a crash
	// can leave the new name pointing at an empty file.
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// The rename itself lives in the folder: sync it (syncDir of pull) so
	// the new module survives a crash.
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func runPolicyCheck(ctx context.Context, e *env, args []string) error {
	const synopsis = "DIR"
	fs := newFlagSet(e, "policy check", synopsis)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	dir, set, err := loadPolicyDir(pos, synopsis)
	if err != nil {
		return err
	}
	if err := policy.Check(ctx, set); err != nil {
		if errors.Is(err, policy.ErrNoEntryPoint) {
			return exitError{1, fmt.Errorf("%s: %w", dir, err)}
		}
		return compileFailure(e, dir, err)
	}
	fmt.Fprintf(e.stdout, "%s: ok, %d file(s), set digest %s\n", dir, len(set.Files()), set.Digest())
	p, err := policy.Prepare(ctx, set, policy.Options{})
	if err != nil {
		return compileFailure(e, dir, err)
	}
	if refused := p.PlanRefused(); refused != nil {
		fmt.Fprintf(e.stdout, "decisions evaluate with OPA's top-down evaluator: %s\n", printable(refused.Error()))
	} else {
		fmt.Fprintf(e.stdout, "decisions evaluate with OPA's plan of %s (the fast path)\n", policy.EntryPoint)
	}
	return nil
}

func runPolicyEval(ctx context.Context, e *env, args []string) error {
	const synopsis = "DIR --input input.json [--explain]"
	fs := newFlagSet(e, "policy eval", synopsis)
	inputPath := fs.String("input", "", "input document (JSON, see docs/policy-authoring.md); - reads stdin")
	explain := fs.Bool("explain", false, "after the decision, list which rule (file:line) produced each deny and warn")
	timeout := fs.Duration("timeout", policy.DefaultTimeout, "evaluation deadline")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *inputPath == "" {
		return usagef("--input is required: %s", synopsis)
	}
	dir, set, err := loadPolicyDir(pos, synopsis)
	if err != nil {
		return err
	}
	var in []byte
	if *inputPath == "-" {
		in, err = io.ReadAll(io.LimitReader(e.stdin, 64<<20))
	} else {
		in, err = os.ReadFile(*inputPath)
	}
	if err != nil {
		return fmt.Errorf("read input: %w", err)
	}
	p, err := policy.Prepare(ctx, set, policy.Options{Timeout: *timeout})
	if err != nil {
		if errors.Is(err, policy.ErrNoEntryPoint) {
			return fmt.Errorf("%s: %w", dir, err)
		}
		return compileFailure(e, dir, err)
	}
	var d *policy.Decision
	var ex *policy.Explanation
	if *explain {
		ex, err = p.Explain(ctx, in)
		if ex != nil {
			d = ex.Decision
		}
	} else {
		d, err = p.Decide(ctx, in)
	}
	if err != nil {
		return fmt.Errorf("input %s: %w", *inputPath, err)
	}
	out, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s\n", out)
	if ex != nil {
		for _, a := range ex.Attributions {
			// Explain lists only rules the evaluation showed producing the
			// reason; anything else would be a guess.
			src := "source not identified"
			if len(a.Sources) > 0 {
				for i, s := range a.Sources {
					a.Sources[i] = filepath.Join(dir, filepath.FromSlash(s))
				}
				src = strings.Join(a.Sources, ", ")
			}
			fmt.Fprintf(e.stdout, "%s %s: %s\n  %s\n", a.Kind, a.Reason.Rule, src, a.Reason.Message)
		}
	}
	return nil
}
