package main

import (
	"strings"
	"testing"
)

// TestRevokeCLI revokes a version by label, and checks the refusals: an
// alias (it names whatever version is current), a missing reason, a
// non-admin, and a second revocation.
func TestRevokeCLI(t *testing.T) {
	s := startServer(t, t.TempDir())
	pub := strings.TrimSpace(s.mustCLI(s.admin, "principals", "add", "ci", "--name", "CI pipeline", "--role", "publisher"))
	s.mustCLI(pub, "push", writeModel(t, map[string]string{"w.bin": "w1"}), "--model", "credit-risk", "--version", "1.0.0")
	s.mustCLI(s.admin, "alias", "set", "credit-risk", "production", "1.0.0", "--expect-unset", "--reason", "CHG-1")

	for _, tc := range []struct {
		name, token string
		args        []string
		want        string
	}{
		{"through an alias", s.admin, []string{"credit-risk@production", "--reason", "bias found"}, "credit-risk@production is an alias (now credit-risk@1.0.0)"},
		{"without a reason", s.admin, []string{"credit-risk@1.0.0", "--reason", "  "}, "--reason is required"},
		{"by a publisher", pub, []string{"credit-risk@1.0.0", "--reason", "bias found"}, "permission_denied"},
		{"of an unknown version", s.admin, []string{"credit-risk@9.9.9", "--reason", "bias found"}, "not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := s.cli(tc.token, append([]string{"revoke"}, tc.args...)...)
			if code == 0 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, stderr %q; want a failure saying %q", code, errOut, tc.want)
			}
		})
	}
	if out := s.mustCLI(s.admin, "show", "credit-risk@1.0.0"); strings.Contains(out, "revoked") {
		t.Fatalf("a refused revocation revoked the version:\n%s", out)
	}

	out := s.mustCLI(s.admin, "revoke", "credit-risk@1.0.0", "--reason", "bias found in post-market review")
	if !strings.HasPrefix(out, "revoked credit-risk@1.0.0 (sha256:") || !strings.Contains(out, "bias found in post-market review") {
		t.Fatalf("revoke printed %q", out)
	}
	if out := s.mustCLI(s.admin, "show", "credit-risk@1.0.0"); !strings.Contains(out, "revoked:  bias found in post-market review") {
		t.Fatalf("show after revoke:\n%s", out)
	}
	if out := s.mustCLI(s.admin, "versions", "credit-risk"); !strings.Contains(out, "1.0.0 (revoked)") {
		t.Fatalf("versions after revoke:\n%s", out)
	}
	code, _, errOut := s.cli(s.admin, "revoke", "credit-risk@1.0.0", "--reason", "again")
	if code == 0 || !strings.Contains(errOut, "already revoked") {
		t.Fatalf("second revoke: exit %d, stderr %q", code, errOut)
	}
}
