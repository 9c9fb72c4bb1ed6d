package policy

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrCompile reports a set that does not parse, compile or type-check.
	// The error is a *CompileError listing every problem.
	ErrCompile = errors.New("policy set does not compile")
	// ErrRefused reports a set that Vet refuses (compile errors, failing or
	// missing tests, coverage under the floor). The error is a *RefusedError.
	ErrRefused = errors.New("policy set refused")
	// ErrInvalidSet reports a set whose files break the set rules (names,
	// sizes, data.json placement).
	ErrInvalidSet = errors.New("invalid policy set")
	// ErrInvalidInput reports an input document that is not JSON or does not
	// satisfy the input schema.
	ErrInvalidInput = errors.New("invalid policy input")
	// ErrTimeout reports an evaluation that exceeded its deadline.
	ErrTimeout = errors.New("policy evaluation exceeded its deadline")
	// ErrUndefined reports that data.hallmark.promotion.decision is undefined
	// for the input.
	ErrUndefined = errors.New("policy decision is undefined")
	// ErrBadDecision reports a decision of the wrong shape.
	ErrBadDecision = errors.New("policy decision has the wrong shape")
	// ErrNoEntryPoint reports a set without data.hallmark.promotion.decision.
	ErrNoEntryPoint = errors.New("policy set has no rule data.hallmark.promotion.decision")
)

// Problem is one precise complaint about a policy set, located in a file of
// the set when it can be.
type Problem struct {
	File    string `json:"file,omitempty"` // name within the set ("rules/promotion.rego")
	Line    int    `json:"line,omitempty"`
	Col     int    `json:"col,omitempty"`
	Code    string `json:"code,omitempty"` // OPA's error code (rego_type_error) or hallmark's (test_failed)
	Message string `json:"message"`
}

// String formats the problem as file:line:col: code: message, leaving out
// the parts that are unknown.
func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		if p.Line > 0 {
			fmt.Fprintf(&b, ":%d", p.Line)
			if p.Col > 0 {
				fmt.Fprintf(&b, ":%d", p.Col)
			}
		}
		b.WriteString(": ")
	}
	if p.Code != "" {
		b.WriteString(p.Code)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

func problemsString(ps []Problem) string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// CompileError lists every problem found while parsing, compiling and
// type-checking a set. It matches ErrCompile with errors.Is.
type CompileError struct {
	Problems []Problem
}

func (e *CompileError) Error() string {
	if len(e.Problems) == 1 {
		return "policy set does not compile: " + e.Problems[0].String()
	}
	return fmt.Sprintf("policy set does not compile: %d problems:\n%s", len(e.Problems), problemsString(e.Problems))
}

func (e *CompileError) Is(target error) bool { return target == ErrCompile }

// RefusedError is Vet's refusal: the set's digest, every problem (file:line
// when known) and, when the tests ran, the publication that was refused. It
// matches ErrRefused with errors.Is.
type RefusedError struct {
	Digest      Digest
	Problems    []Problem
	Publication *Publication // nil when the set did not compile
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("policy set %s refused: %d problem(s):\n%s", e.Digest, len(e.Problems), problemsString(e.Problems))
}

func (e *RefusedError) Is(target error) bool { return target == ErrRefused }
