package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestOPACompat runs scripts/opa-compat.sh, which builds the stock OPA CLI
// (the embedded version) from the module cache, runs opa test and opa check
// on the default pack and opa eval on every input in testdata, and checks
// that each of opa's decisions equals hallmark's, byte for byte once
// marshalled. It takes about a minute on a cold build cache; -short skips
// it.
func TestOPACompat(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the OPA CLI; skipped with -short")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not found")
	}
	out := t.TempDir()
	cmd := exec.Command("bash", filepath.Join("..", "scripts", "opa-compat.sh"))
	cmd.Env = append(os.Environ(), "OPA_COMPAT_OUT="+out)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err != nil {
		t.Fatalf("opa-compat.sh: %v\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), "PASS: ") {
		t.Fatalf("opa test printed no PASS line:\n%s", log.String())
	}
	inputs, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no inputs in testdata: %v", err)
	}
	p := defaultPolicy(t)
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".json")
		t.Run(name, func(t *testing.T) {
			doc, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			ours, err := p.Decide(context.Background(), doc)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(filepath.Join(out, name+".json"))
			if err != nil {
				t.Fatalf("opa eval wrote no decision for %s: %v", name, err)
			}
			theirs, err := ParseDecision(raw)
			if err != nil {
				t.Fatal(err)
			}
			a, _ := json.Marshal(ours)
			b, _ := json.Marshal(theirs)
			if !bytes.Equal(a, b) {
				t.Fatalf("decision differs:\nhallmark %s\nopa      %s", a, b)
			}
		})
	}
}
