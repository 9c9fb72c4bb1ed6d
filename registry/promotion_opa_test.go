package registry

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/hallmark-dev/hallmark/policy"
)

// opaVersion is the stock OPA CLI the compatibility test builds: the
// version hallmark embeds (scripts/opa-compat.sh builds it the same way).
const opaVersion = "v1.22.2"

// opaCLI returns the path of the stock OPA CLI: $HALLMARK_OPA when set,
// else one built with `go install` into a temporary folder.
func opaCLI(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("HALLMARK_OPA"); p != "" {
		return p
	}
	bin := t.TempDir()
	cmd := exec.Command("go", "install", "github.com/open-policy-agent/opa@"+opaVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+bin, "GOFLAGS=-mod=mod", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("cannot build the OPA CLI (%v): %s", err, out)
	}
	return filepath.Join(bin, "opa")
}

// TestRecordedDecisionWithStockOPA takes decisions recorded by a promotion
// under the default pack and evaluates their recorded input documents with
// the stock `opa eval` over the pack's files: each gives the recorded result.
func TestRecordedDecisionWithStockOPA(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the OPA CLI; skipped with -short")
	}
	e := newPromoEnv(t)
	e.pushSigned(t, "m", "1.0", true)
	res := e.promote(t, "m", "1.0", "staging", "")
	approve(t, e.reg, aliceActor, res.Request.ID, MeaningApproved)
	ds := allDecisions(t, e.reg, DecisionFilter{})
	if len(ds) != 2 {
		t.Fatalf("decisions: got %d, want 2", len(ds))
	}
	dir := t.TempDir()
	for _, f := range policy.DefaultSet().Files() {
		p := filepath.Join(dir, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	opa := opaCLI(t)
	for _, d := range ds {
		if d.PolicySet != policy.DefaultSet().Digest().String() {
			t.Fatalf("decision %d was made by %s, want the default pack", d.Index, d.PolicySet)
		}
		in := filepath.Join(t.TempDir(), "input.json")
		if err := os.WriteFile(in, d.Input, 0o644); err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd := exec.Command(opa, "eval", "--v1-compatible", "-d", dir, "-i", in, "-f", "raw", "data.hallmark.promotion.decision")
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("opa eval of decision %d: %v\n%s", d.Index, err, stderr.String())
		}
		got, err := policy.ParseDecision(out)
		if err != nil {
			t.Fatalf("opa's decision %d: %v\n%s", d.Index, err, out)
		}
		gb, _ := json.Marshal(got)
		wb, _ := json.Marshal(d.Result)
		if !bytes.Equal(gb, wb) {
			t.Fatalf("decision %d (%s): opa eval gives %s, recorded %s", d.Index, d.Status, gb, wb)
		}
	}
}
