package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
	"github.com/hallmark-dev/hallmark/policy"
	"github.com/hallmark-dev/hallmark/registry"
)

// permissivePolicy allows every promotion of a version that is not revoked.
var permissivePolicy = map[string]string{
	"permissive.rego": `package hallmark.promotion

decision := {"allow": count(deny) == 0, "deny": deny, "warn": set(), "required_approvals": 0}

deny contains {"rule": "version.revoked", "message": "the version is revoked"} if input.candidate.revoked
`,
	"permissive_test.rego": `package hallmark.promotion_test

import data.hallmark.promotion

test_allows if promotion.decision.allow with input.candidate.revoked as false

test_revoked if not promotion.decision.allow with input.candidate.revoked as true
`,
}

// approvalPolicy lets a new alias be set without approval; moving an
// existing one needs NEED approvals by people who neither asked nor pushed.
func approvalPolicy(need string) map[string]string {
	return map[string]string{
		"promotion.rego": `package hallmark.promotion

decision := {"allow": count(deny) == 0, "deny": deny, "warn": set(), "required_approvals": need}

need := 0 if input.request.from_version == ""

need := ` + need + ` if input.request.from_version != ""

approvers contains a.approver if {
	some a in input.approvals
	a.meaning == "approved"
	not a.approver in {input.request.requester, input.candidate.creator}
}

deny contains {"rule": "approvals.insufficient", "message": sprintf("needs %d approval(s)", [need])} if count(approvers) < need

deny contains {"rule": "version.revoked", "message": "the version is revoked"} if input.candidate.revoked
`,
		"promotion_test.rego": `package hallmark.promotion_test

import data.hallmark.promotion

test_new_alias_needs_none if promotion.need == 0 with input.request.from_version as ""

test_move_needs_another_person if {
	d := promotion.decision with input.request.from_version as "x" with input.request.requester as "rq" with input.candidate.creator as "ci" with input.candidate.revoked as false with input.approvals as [{"approver": "rq", "meaning": "approved", "at": "2026-01-01T00:00:00Z"}]
	not d.allow
}

test_revoked_denied if {
	d := promotion.decision with input.candidate.revoked as true with input.request.from_version as ""
	not d.allow
}
`,
	}
}

// usePermissivePolicy publishes permissivePolicy as reg's active set, once
// (a data directory opened again keeps it).
func usePermissivePolicy(t testing.TB, reg *registry.Registry) {
	t.Helper()
	var files []policy.File
	for n, text := range permissivePolicy {
		files = append(files, policy.File{Name: n, Data: []byte(text)})
	}
	admin := registry.Actor{ID: registry.AdminID, Name: "Administrator", Roles: []registry.Role{registry.RoleAdmin}, Auth: registry.AuthLocal}
	_, err := reg.PublishPolicySet(context.Background(), admin, files, registry.PublishOptions{})
	if err != nil && !errors.Is(err, registry.ErrAlreadyExists) {
		t.Fatalf("publishing the permissive test policy: %v", err)
	}
}

func writePolicy(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for n, text := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

var requestID = regexp.MustCompile(`request (req-[0-9]+):`)

// decisionIndex finds the ledger index in "decision 813 by policy set".
var decisionIndex = regexp.MustCompile(`decision ([0-9]+) by policy set`)

func TestDecisionArg(t *testing.T) {
	for _, tc := range []struct {
		arg     string
		index   uint64
		request string
		usage   bool
	}{
		{arg: "@813", index: 813},
		{arg: "@0", index: 0},
		{arg: "813", request: "813"},
		{arg: "6", request: "6"},
		{arg: "req-12", request: "req-12"},
		{arg: "a.b_c-d", request: "a.b_c-d"},
		{arg: "@", usage: true},
		{arg: "@x1", usage: true},
		{arg: "@-1", usage: true},
		{arg: "@+1", usage: true},
		{arg: "", usage: true},
	} {
		index, request, err := decisionArg(tc.arg)
		var ue usageError
		if tc.usage {
			if !errors.As(err, &ue) {
				t.Errorf("decisionArg(%q): got %v, want a usage error", tc.arg, err)
			}
			continue
		}
		if err != nil || index != tc.index || request != tc.request {
			t.Errorf("decisionArg(%q): got (%d, %q, %v), want (%d, %q)", tc.arg, index, request, err, tc.index, tc.request)
		}
	}
}

func TestSetKeyHelpNamesTheKeyTypes(t *testing.T) {
	code, _, stderr := runCmd(t, "", "principals", "set-key", "-h")
	if code != 0 || !strings.Contains(stderr, "Ed25519, or ECDSA P-256 or P-384") {
		t.Fatalf("principals set-key -h: exit %d, %s", code, stderr)
	}
}

func TestDeniedExitHint(t *testing.T) {
	err := deniedExit(&registryv1.Decision{Status: registry.StatusDenied, Index: 7, RequestId: "6"})
	var xe exitError
	if !errors.As(err, &xe) || xe.code != 1 || !strings.Contains(err.Error(), "promotion 6 denied") || !strings.Contains(err.Error(), "(hallmark decision @7)") {
		t.Fatalf("got %v, want exit 1 naming request 6 and hallmark decision @7", err)
	}
	if err := deniedExit(&registryv1.Decision{Status: registry.StatusAllowed}); err != nil {
		t.Fatalf("allowed: got %v", err)
	}
}

func TestPromoteApproveReplayCLI(t *testing.T) {
	s := startServer(t, t.TempDir())
	token := func(id, role string) string {
		return strings.TrimSpace(s.mustCLI(s.admin, "principals", "add", id, "--name", "Test "+id, "--role", role))
	}
	ci, rq, alice, pa, aud := token("ci", "publisher"), token("rq", "publisher"), token("alice", "approver"), token("pa", "policy-author"), token("aud", "auditor")

	// A set whose tests fail is refused with file:line, and nothing changes.
	bad := approvalPolicy("1")
	bad["promotion_test.rego"] += "\ntest_broken if {\n\tfalse\n}\n"
	if code, _, errOut := s.cli(pa, "policy", "publish", writePolicy(t, bad)); code == 0 || !strings.Contains(errOut, "failed_precondition") || !strings.Contains(errOut, "promotion_test.rego:") {
		t.Fatalf("publishing a failing set: exit %d, %s", code, errOut)
	}
	if out := s.mustCLI(pa, "policy", "publish", writePolicy(t, approvalPolicy("1"))); !strings.Contains(out, "tests       3 passed of 3") {
		t.Fatalf("policy publish: %s", out)
	}
	if out := s.mustCLI(rq, "policy", "show"); !strings.Contains(out, "promotion.rego") {
		t.Fatalf("policy show: %s", out)
	}
	s.mustCLI(ci, "push", writeModel(t, map[string]string{"w.bin": "one"}), "--model", "m", "--version", "1.0")
	s.mustCLI(ci, "push", writeModel(t, map[string]string{"w.bin": "two"}), "--model", "m", "--version", "2.0")

	out := s.mustCLI(rq, "promote", "m@1.0", "--to", "prod", "--expect-unset", "--reason", "CHG-1")
	if !strings.Contains(out, "allowed: m@prod now points at 1.0") {
		t.Fatalf("first promotion: %s", out)
	}
	out = s.mustCLI(rq, "promote", "m@2.0", "--to", "prod", "--expect", "1.0", "--reason", "CHG-2")
	if !strings.Contains(out, "waiting for 1 approval(s)") || !strings.Contains(out, "deny  approvals.insufficient") {
		t.Fatalf("second promotion: %s", out)
	}
	id := requestID.FindStringSubmatch(out)[1]
	if out := s.mustCLI(aud, "decision", "@"+decisionIndex.FindStringSubmatch(out)[1], "--explain"); !strings.Contains(out, "  explanation:\n    deny approvals.insufficient <- promotion.rego:") {
		t.Fatalf("decision --explain of a waiting decision: %s", out)
	}
	// A request id of digits only would read as a ledger index.
	if code, _, errOut := s.cli(rq, "promote", "m@2.0", "--to", "canary", "--expect-unset", "--reason", "CHG-3", "--id", "12345"); code != 1 ||
		!strings.Contains(errOut, `invalid_argument: promotion request id "12345" is all digits`) {
		t.Fatalf("promote --id 12345: exit %d, %s", code, errOut)
	}

	// Separation of duties: the requester may not approve.
	if code, _, errOut := s.cli(rq, "approve", id, "--meaning", "approved"); code == 0 || !strings.Contains(errOut, "permission_denied") {
		t.Fatalf("requester approving: exit %d, %s", code, errOut)
	}
	// With a registered key, approvals must be signed, and signed right.
	keys := filepath.Join(t.TempDir(), "alice")
	other := filepath.Join(t.TempDir(), "other")
	for _, k := range []string{keys, other} {
		if code, _, errOut := runCmd(t, "", "keys", "generate", "--out", k, "--type", "ed25519"); code != 0 {
			t.Fatalf("keys generate: %s", errOut)
		}
	}
	s.mustCLI(s.admin, "principals", "set-key", "alice", "--public-key", keys+".pub")
	if code, _, errOut := s.cli(alice, "approve", id, "--meaning", "approved"); code == 0 || !strings.Contains(errOut, "must be signed") {
		t.Fatalf("unsigned approval: exit %d, %s", code, errOut)
	}
	if code, _, errOut := s.cli(alice, "approve", id, "--meaning", "approved", "--sign-key", other+".key"); code == 0 || !strings.Contains(errOut, "does not verify") {
		t.Fatalf("approval signed with another key: exit %d, %s", code, errOut)
	}
	out = s.mustCLI(alice, "approve", id, "--meaning", "approved", "--comment", "reviewed the metrics", "--sign-key", keys+".key")
	if !strings.Contains(out, "approved recorded (signed)") || !strings.Contains(out, "allowed: m@prod now points at 2.0") {
		t.Fatalf("signed approval: %s", out)
	}
	if out := s.mustCLI(aud, "requests", "--model", "m"); !strings.Contains(out, id) || !strings.Contains(out, "alice:approved") {
		t.Fatalf("requests: %s", out)
	}
	if out := s.mustCLI(aud, "decision", id, "--explain"); !strings.Contains(out, "allowed") || !strings.Contains(out, "policy set  sha256:") ||
		!strings.Contains(out, "  explanation: nothing to explain: the decision allowed the move with no deny or warn reasons\n") {
		t.Fatalf("decision: %s", out)
	}
	// @INDEX is the decision at that ledger index; a bare number is a
	// request id, and one that names no request gets the @INDEX hint.
	index := decisionIndex.FindStringSubmatch(out)[1]
	if got := s.mustCLI(aud, "decision", "@"+index); !strings.Contains(got, "decision "+index+" of request "+id) {
		t.Fatalf("decision @%s: %s", index, got)
	}
	if code, _, errOut := s.cli(aud, "decision", index); code != 1 || !strings.Contains(errOut, "not_found") ||
		!strings.Contains(errOut, "a bare argument is a request id: for the decision at ledger index "+index+", write @"+index) {
		t.Fatalf("decision %s (bare number): exit %d, %s", index, code, errOut)
	}

	// A draft that needs two approvals, in dry run: recorded, not enforced.
	draft := writePolicy(t, approvalPolicy("2"))
	s.mustCLI(pa, "policy", "dry-run", draft)
	out = s.mustCLI(rq, "promote", "m@1.0", "--to", "prod", "--expect", "2.0", "--reason", "INC-9 roll back")
	if !strings.Contains(out, "rollback of m@prod") || !strings.Contains(out, "dry run sha256:") {
		t.Fatalf("rollback request with a dry run: %s", out)
	}
	s.mustCLI(pa, "policy", "dry-run", "--stop", "--reason", "seen enough")

	// Replay against the draft: the approved move flips to deny.
	out = s.mustCLI(aud, "policy", "replay", draft, "--output", "json")
	var rep replayOutput
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("replay json: %v\n%s", err, out)
	}
	var flips []replayRow
	for _, c := range rep.Changes {
		if c.Change == "allow_to_deny" || c.Change == "deny_to_allow" {
			flips = append(flips, c)
		}
	}
	if rep.Total != 4 || len(rep.Errors) != 0 || len(flips) != 1 || flips[0].Request != id || flips[0].AddedRules[0] != "approvals.insufficient" {
		t.Fatalf("replay: got %+v, want 4 decisions and only %s flipping allow_to_deny", rep, id)
	}
	if rep.Timeout != "10s" || rep.Timeouts == nil || len(rep.Timeouts) != 0 || !strings.Contains(out, `"timeouts": []`) {
		t.Fatalf("replay: timeout %q, timeouts %v; want 10s and an empty list\n%s", rep.Timeout, rep.Timeouts, out)
	}
	if again := s.mustCLI(aud, "policy", "replay", draft, "--output", "json"); again != out {
		t.Fatalf("replay output is not deterministic:\n%s\n%s", out, again)
	}
	// One decision per page: replay walks every page and says the same.
	defer func(n int32) { replayPageSize = n }(replayPageSize)
	replayPageSize = 1
	if paged := s.mustCLI(aud, "policy", "replay", draft, "--output", "json"); paged != out {
		t.Fatalf("replay one decision per page differs from one page:\n%s\n%s", out, paged)
	}
	replayPageSize = registry.MaxPageSize
	if out := s.mustCLI(pa, "policy", "replay", draft); !strings.Contains(out, "allow_to_deny") || !strings.Contains(out, "+approvals.insufficient") ||
		!strings.Contains(out, "0 timed out (deadline 10s), 0 error(s)") {
		t.Fatalf("replay table: %s", out)
	}
	// A draft that would take minutes: every decision is a timeout, listed
	// as such and not as an error.
	slow := writePolicy(t, map[string]string{"slow.rego": `package hallmark.promotion

n := count([x |
	some i in numbers.range(1, 100000)
	some j in numbers.range(1, 100000)
	x := i * j
])

decision := {"allow": n > 0, "deny": set(), "warn": set(), "required_approvals": 0}
`})
	out = s.mustCLI(aud, "policy", "replay", slow, "--timeout", "50ms")
	if !strings.Contains(out, "4 timed out (deadline 50ms), 0 error(s)") || !strings.Contains(out, "timeout: decision ") ||
		!strings.Contains(out, "timeouts depend on this machine and its load") {
		t.Fatalf("replay of a slow draft: %s", out)
	}
	if code, _, errOut := s.cli(aud, "policy", "replay", draft, "--timeout", "0s"); code != 2 || !strings.Contains(errOut, "want a positive duration") {
		t.Fatalf("replay --timeout 0s: exit %d, %s", code, errOut)
	}
	if code, _, errOut := s.cli(rq, "policy", "replay", draft); code == 0 || !strings.Contains(errOut, "permission_denied") {
		t.Fatalf("replay by a publisher: exit %d, %s", code, errOut)
	}
}
