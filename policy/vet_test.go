package policy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

const gatedModule = `package hallmark.promotion

deny contains {"rule": "alias.frozen", "message": "frozen"} if input.request.alias == "frozen"

decision := {"allow": count(deny) == 0, "deny": deny, "warn": set(), "required_approvals": 0}
`

func TestVetRefuses(t *testing.T) {
	tests := []struct {
		name     string
		files    map[string]string
		floor    float64
		wantCode string
		wantLoc  string // "file:line" prefix of the problem, when it has one
	}{
		{
			name: "failing test",
			files: map[string]string{"p.rego": gatedModule, "p_test.rego": `package hallmark.promotion_test

import data.hallmark.promotion

test_allows if promotion.decision.allow with input.request.alias as "staging"

test_wrong if promotion.decision.allow with input.request.alias as "frozen"
`},
			wantCode: "test_failed", wantLoc: "p_test.rego:7",
		},
		{
			name:     "no tests",
			files:    map[string]string{"p.rego": gatedModule},
			wantCode: "no_tests",
		},
		{
			name: "coverage under floor",
			files: map[string]string{"p.rego": gatedModule, "p_test.rego": `package hallmark.promotion_test

import data.hallmark.promotion

test_allows if promotion.decision.allow with input.request.alias as "staging"
`},
			floor: 100, wantCode: "coverage_below_floor",
		},
		{
			name:     "compile error",
			files:    map[string]string{"p.rego": gatedModule + "\nx := input.requst\n", "p_test.rego": "package t\n\ntest_x if true\n"},
			wantCode: "rego_type_error", wantLoc: "p.rego:7",
		},
		{
			name: "test type error",
			files: map[string]string{"p.rego": gatedModule, "p_test.rego": `package t

test_x if input.request.modle == "x"
`},
			wantCode: "rego_type_error", wantLoc: "p_test.rego:3",
		},
		{
			name:     "no entry point",
			files:    map[string]string{"p.rego": "package other\n\nx := 1\n", "p_test.rego": "package t\n\ntest_x if true\n"},
			wantCode: "no_entry_point",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Vet(context.Background(), mustSet(t, tt.files), VetOptions{MinCoverage: tt.floor})
			var re *RefusedError
			if !errors.As(err, &re) || !errors.Is(err, ErrRefused) {
				t.Fatalf("Vet: got %v, want a *RefusedError", err)
			}
			for _, p := range re.Problems {
				if p.Code == tt.wantCode && strings.HasPrefix(p.String(), tt.wantLoc) {
					return
				}
			}
			t.Fatalf("problems: got %v, want code %s at %q", re.Problems, tt.wantCode, tt.wantLoc)
		})
	}
}

func TestVetAcceptsCoveredSet(t *testing.T) {
	s := mustSet(t, map[string]string{"p.rego": gatedModule, "p_test.rego": `package hallmark.promotion_test

import data.hallmark.promotion

test_allows if promotion.decision.allow with input.request.alias as "staging"

test_denies if {
	d := promotion.decision with input.request.alias as "frozen"
	not d.allow
}
`})
	pub, err := Vet(context.Background(), s, VetOptions{MinCoverage: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(pub.Tests) != 2 || pub.Coverage.Percent != 100 || pub.OPAVersion == "" {
		t.Fatalf("publication: got %d tests, %v%% coverage, OPA %q", len(pub.Tests), pub.Coverage.Percent, pub.OPAVersion)
	}
}

func TestTestReportsOutcomes(t *testing.T) {
	s := mustSet(t, map[string]string{"p.rego": gatedModule, "p_test.rego": `package hallmark.promotion_test

import data.hallmark.promotion

test_pass if promotion.decision.allow with input.request.alias as "staging"

test_fail if promotion.decision.allow with input.request.alias as "frozen"

todo_test_later if false

test_error if {
	print("looking at", input.request.alias)
	x := numbers.range(1, 100000000)
	count(x) > 0
}
`})
	rep, err := Test(context.Background(), s, TestOptions{Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range rep.Results {
		got[r.Name] = r.Status()
	}
	want := map[string]string{"test_pass": "PASS", "test_fail": "FAIL", "todo_test_later": "SKIPPED", "test_error": "ERROR"}
	for name, status := range want {
		if got[name] != status {
			t.Errorf("%s: got %s, want %s", name, got[name], status)
		}
	}
	if rep.OK() {
		t.Error("OK: got true with failures")
	}
}
