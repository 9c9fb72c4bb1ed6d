package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/hallmark-dev/hallmark/ledger"
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

// keptSize reads the size line of a checkpoint file.
func keptSize(t testing.TB, path string) uint64 {
	t.Helper()
	lines := strings.SplitN(string(mustRead(t, path)), "\n", 3)
	n, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil {
		t.Fatalf("checkpoint %s: size line %q", path, lines[1])
	}
	return n
}

// TestAuditConsistentWith keeps the checkpoint of one export, exports
// again with --consistent-with it and verifies offline with
// --previous-checkpoint; a bundle that cannot prove consistency, a kept
// checkpoint newer than the bundle or signed by another key, and a size
// the server's log does not reach are refused with what to do.
func TestAuditConsistentWith(t *testing.T) {
	s := startServer(t, t.TempDir())
	pub := strings.TrimSpace(s.mustCLI(s.admin, "principals", "add", "ci", "--name", "CI pipeline", "--role", "publisher"))
	aud := strings.TrimSpace(s.mustCLI(s.admin, "principals", "add", "ada", "--name", "Ada Auditor", "--role", "auditor"))
	key := logVerifierKey(t, filepath.Join(s.dir, "ledger", "log.key"))
	tmp := t.TempDir()

	first := filepath.Join(tmp, "first")
	s.mustCLI(aud, "audit", "export", "--out", first)
	kept := filepath.Join(first, "checkpoint")
	k := keptSize(t, kept)
	s.mustCLI(pub, "push", writeModel(t, map[string]string{"weights.bin": "w1"}), "--model", "credit-risk", "--version", "1.0.0")

	second := filepath.Join(tmp, "second.zip")
	out := s.mustCLI(aud, "audit", "export", "--from", strconv.FormatUint(k, 10), "--consistent-with", kept, "--out", second)
	if !strings.Contains(out, fmt.Sprintf("consistency:     proof from your kept checkpoint's size %d to", k)) || !strings.Contains(out, "--previous-checkpoint "+kept) {
		t.Fatalf("export --consistent-with output:\n%s", out)
	}
	code, vout, verr := runCmd(t, "", "audit", "verify", second, "--log-key", key, "--previous-checkpoint", kept)
	if code != 0 || !strings.Contains(vout, fmt.Sprintf("consistency with kept checkpoint of size %d: ok (the bundle's consistency proof from size %d to", k, k)) ||
		!strings.Contains(vout, "kept checkpoint") || !strings.Contains(vout, "consistency proof") {
		t.Fatalf("verify --previous-checkpoint: exit %d\n%s\n%s", code, vout, verr)
	}

	// Without a proof, an export from index 0 settles it from its entries.
	whole := filepath.Join(tmp, "whole")
	s.mustCLI(aud, "audit", "export", "--out", whole)
	code, vout, _ = runCmd(t, "", "audit", "verify", whole, "--log-key", key, "--previous-checkpoint", kept)
	if code != 0 || !strings.Contains(vout, fmt.Sprintf("consistency with kept checkpoint of size %d: ok (root of size %d recomputed", k, k)) {
		t.Fatalf("verify whole range: exit %d\n%s", code, vout)
	}

	// A range after the kept size and no proof: export again.
	part := filepath.Join(tmp, "part.zip")
	s.mustCLI(aud, "audit", "export", "--from", strconv.FormatUint(k, 10), "--out", part)
	code, vout, _ = runCmd(t, "", "audit", "verify", part, "--log-key", key, "--previous-checkpoint", kept)
	if code != 1 || !strings.Contains(vout, "carries no consistency proof") || !strings.Contains(vout, "hallmark audit export --consistent-with "+kept) ||
		!strings.Contains(vout, fmt.Sprintf("consistency with kept checkpoint of size %d: FAILED", k)) {
		t.Fatalf("verify a bundle that cannot prove consistency: exit %d\n%s", code, vout)
	}

	// The kept checkpoint is newer than the bundle.
	newer := filepath.Join(whole, "checkpoint")
	code, vout, _ = runCmd(t, "", "audit", "verify", first, "--log-key", key, "--previous-checkpoint", newer)
	if code != 1 || !strings.Contains(vout, "the bundle is older than the checkpoint you kept") {
		t.Fatalf("verify against a newer kept checkpoint: exit %d\n%s", code, vout)
	}

	// A kept checkpoint signed by another key.
	skey, _, err := ledger.GenerateKey(ledger.DefaultOrigin)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	cp := mustRead(t, kept)
	forged, err := note.Sign(&note.Note{Text: string(cp[:bytes.Index(cp, []byte("\n\n"))+1])}, signer)
	if err != nil {
		t.Fatal(err)
	}
	forgedFile := filepath.Join(tmp, "forged.checkpoint")
	if err := os.WriteFile(forgedFile, forged, 0o644); err != nil {
		t.Fatal(err)
	}
	code, vout, _ = runCmd(t, "", "audit", "verify", second, "--log-key", key, "--previous-checkpoint", forgedFile)
	if code != 1 || !strings.Contains(vout, forgedFile+": is not signed by the log key given") {
		t.Fatalf("verify against a checkpoint of another key: exit %d\n%s", code, vout)
	}

	// A size the server's log has not reached.
	big := bytes.Replace(forged, []byte(fmt.Sprintf("\n%d\n", k)), []byte("\n999999\n"), 1)
	bigFile := filepath.Join(tmp, "big.checkpoint")
	if err := os.WriteFile(bigFile, big, 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := s.cli(aud, "audit", "export", "--consistent-with", bigFile, "--out", filepath.Join(tmp, "big.zip"))
	if code == 0 || !strings.Contains(errOut, "invalid_argument") || !strings.Contains(errOut, "the kept checkpoint has size 999999, larger than the log's latest checkpoint (size") {
		t.Fatalf("export --consistent-with a larger size: exit %d\n%s", code, errOut)
	}
	code, _, errOut = runCmd(t, "", "audit", "verify", second, "--previous-checkpoint", first)
	if code != 2 || !strings.Contains(errOut, "is a directory: give the checkpoint file (for an unpacked bundle, "+kept+")") {
		t.Fatalf("verify --previous-checkpoint DIR: exit %d\n%s", code, errOut)
	}
}

// TestAuditVerifyQuotesBundleText: a hostile bundle's manifest carries
// terminal escapes meant to print a fake "verified" line and hide what
// follows; verify prints them quoted, says the manifest is not verified, and
// fails.
func TestAuditVerifyQuotesBundleText(t *testing.T) {
	dir := t.TempDir()
	man := `{"format":"hallmark-audit-export/v1","generated_by":{"id":"x","name":"\u001b[2K\r\u001b[1A\u001b[2Kverified: every check passed\u001b[8m"},"generator":"g\u202e","log":{"origin":"o\u001b]0;pwned\u0007"}}`
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(man), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run(context.Background(), &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}, []string{"audit", "verify", dir})
	if code != 1 {
		t.Fatalf("exit %d, want 1; stdout %q stderr %q", code, out.String(), errb.String())
	}
	if strings.ContainsAny(out.String(), "\x1b\x07\r\u202e") {
		t.Fatalf("raw escape or invisible character from the bundle reached the output: %q", out.String())
	}
	for _, want := range []string{"NOT VERIFIED", `\x1b[2K`, `"g\u202e"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
