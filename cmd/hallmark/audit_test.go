package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// TestAuditEndToEnd exports through a live server with the CLI as an
// auditor, verifies the zip and the directory forms offline with the log
// key, catches a tampered copy, and answers `audit at` with a verified
// proof.
func TestAuditEndToEnd(t *testing.T) {
	s := startServer(t, t.TempDir())
	pub := strings.TrimSpace(s.mustCLI(s.admin, "principals", "add", "ci", "--name", "CI pipeline", "--role", "publisher"))
	aud := strings.TrimSpace(s.mustCLI(s.admin, "principals", "add", "ada", "--name", "Ada Auditor", "--role", "auditor"))
	model := writeModel(t, map[string]string{"weights.bin": "w1", "config.json": "{}"})
	s.mustCLI(pub, "push", model, "--model", "credit-risk", "--version", "1.0.0")
	s.mustCLI(s.admin, "alias", "set", "credit-risk", "production", "1.0.0", "--expect-unset", "--reason", "CHG-1")
	moved := time.Now()
	key := logVerifierKey(t, filepath.Join(s.dir, "ledger", "log.key"))
	keyFile := filepath.Join(t.TempDir(), "log.vkey")
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	if code, _, errOut := s.cli(pub, "audit", "export", "--out", filepath.Join(t.TempDir(), "x.zip")); code == 0 || !strings.Contains(errOut, "permission_denied") {
		t.Fatalf("export by a publisher: exit %d, %s", code, errOut)
	}
	zip := filepath.Join(t.TempDir(), "report.zip")
	out := s.mustCLI(aud, "audit", "export", "--model", "credit-risk", "--out", zip)
	if !strings.Contains(out, "recorded at:     ledger entry") {
		t.Fatalf("export output:\n%s", out)
	}
	code, vout, verr := runCmd(t, "", "audit", "verify", zip, "--log-key", keyFile)
	if code != 0 || !strings.Contains(vout, "verified: every check passed") || strings.Contains(verr, "NO --log-key") {
		t.Fatalf("verify zip: exit %d\n%s\n%s", code, vout, verr)
	}
	code, _, verr = runCmd(t, "", "audit", "verify", zip)
	if code != 0 || !strings.Contains(verr, "NO --log-key GIVEN") {
		t.Fatalf("verify without a key: exit %d, stderr %s", code, verr)
	}

	dir := filepath.Join(t.TempDir(), "bundle")
	s.mustCLI(aud, "audit", "export", "--out", dir, "--from", "0")
	if code, vout, _ := runCmd(t, "", "audit", "verify", dir, "--log-key", key); code != 0 {
		t.Fatalf("verify dir: exit %d\n%s", code, vout)
	}
	csv := filepath.Join(dir, "registers", "versions.csv")
	b := mustRead(t, csv)
	if err := os.WriteFile(csv, []byte(strings.Replace(string(b), "1.0.0", "9.9.9", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, vout, _ = runCmd(t, "", "audit", "verify", dir, "--log-key", key)
	if code != 1 || !strings.Contains(vout, `registers/versions.csv: does not match the report the verified entries give`) {
		t.Fatalf("verify tampered dir: exit %d\n%s", code, vout)
	}

	at := s.mustCLI(aud, "audit", "at", "--model", "credit-risk", "--alias", "production", "--time", moved.Add(time.Minute).UTC().Format(time.RFC3339), "--log-key", keyFile)
	if !strings.Contains(at, "1.0.0") || !strings.Contains(at, "inclusion proof verified") {
		t.Fatalf("audit at:\n%s", at)
	}
	if code, _, errOut := s.cli(aud, "audit", "at", "--model", "credit-risk", "--alias", "production", "--time", "2000-01-01T00:00:00Z"); code == 0 || !strings.Contains(errOut, "not_found") {
		t.Fatalf("audit at before the alias existed: exit %d, %s", code, errOut)
	}
}

// logVerifierKey derives the log's verifier key from its signer key file
// (what `hallmark ledger key` prints, which cannot open a served ledger).
func logVerifierKey(t testing.TB, path string) string {
	t.Helper()
	parts := strings.SplitN(strings.TrimSpace(string(mustRead(t, path))), "+", 5)
	raw, err := base64.StdEncoding.DecodeString(parts[len(parts)-1])
	if err != nil || len(parts) != 5 || len(raw) != 1+ed25519.SeedSize {
		t.Fatalf("log key file %s: not a note signer key", path)
	}
	k, err := note.NewEd25519VerifierKey(parts[2], ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return k
}
