package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hallmark-dev/hallmark/signing"
)

// TestPushSignedFixture pushes a model signed by the reference
// model_signing tool with its signature file: the files its signer ignored
// are not part of the version, so the signature verifies; a retry with the
// same bundle is a retry; and a push that brings a signature to a version
// that exists without one is refused, not answered as a retry.
func TestPushSignedFixture(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "trust", "keys")
	if err := os.MkdirAll(keys, 0o755); err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(filepath.Join(omsFixtures, "keys", "signing-key-pub.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keys, "oms.pub"), pub, 0o644); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, dir)
	model := filepath.Join(t.TempDir(), "m")
	copyTree(t, filepath.Join(omsFixtures, "v1.1.0-elliptic-key"), model)
	sig := filepath.Join(model, "model.sig")

	s.mustCLI(s.admin, "push", model, "--model", "m", "--version", "1", "--signature", sig)
	out := s.mustCLI(s.admin, "show", "m@1")
	if !strings.Contains(out, "signed:   yes") || strings.Contains(out, "ignore-me") || !strings.Contains(out, "signme-2") {
		t.Fatalf("show after pushing the model_signing fixture:\n%s", out)
	}
	if code, _, stderr := s.cli(s.admin, "push", model, "--model", "m", "--version", "1", "--signature", sig); code != 0 || !strings.Contains(stderr, "already existed") {
		t.Fatalf("retry with the same signature: exit %d, %s", code, stderr)
	}

	unsigned := writeModel(t, map[string]string{"signme-1": "x", "signme-2": "y"})
	s.mustCLI(s.admin, "push", unsigned, "--model", "u", "--version", "1")
	code, _, stderr := s.cli(s.admin, "push", unsigned, "--model", "u", "--version", "1", "--sign-key", writeSigningKey(t))
	if code == 0 || !strings.Contains(stderr, `version "1" exists with these files but without a signature`) {
		t.Fatalf("a signature brought to an unsigned version: exit %d, %s; want it refused", code, stderr)
	}
	if out := s.mustCLI(s.admin, "show", "u@1"); !strings.Contains(out, "signed:   no") {
		t.Fatalf("u@1 after the refused push:\n%s", out)
	}
	if code, _, stderr = s.cli(s.admin, "push", model, "--model", "m2", "--version", "1", "--signature", filepath.Join(unsigned, "signme-1")); code == 0 || !strings.Contains(stderr, "not a signature bundle") {
		t.Fatalf("--signature with a file that is no bundle: exit %d, %s", code, stderr)
	}
}

// TestPushSignKeyRetry: ECDSA signatures differ on every run, so a re-run
// of `push --sign-key` made a new bundle the server refused as "another
// signature". The same key's retry is a retry; another key's is refused.
func TestPushSignKeyRetry(t *testing.T) {
	s := startServer(t, t.TempDir())
	model := writeModel(t, map[string]string{"w.bin": "weights", "c.json": "{}"})
	key := writeSigningKeyOfType(t, signing.KeyECDSAP256)
	s.mustCLI(s.admin, "push", model, "--model", "m", "--version", "1", "--sign-key", key)
	before := s.mustCLI(s.admin, "show", "m@1")
	if code, _, stderr := s.cli(s.admin, "push", model, "--model", "m", "--version", "1", "--sign-key", key); code != 0 || !strings.Contains(stderr, "already existed") {
		t.Fatalf("retry with the same ECDSA key: exit %d, %s", code, stderr)
	}
	if after := s.mustCLI(s.admin, "show", "m@1"); after != before {
		t.Fatalf("the retry changed the version:\n%s\nthen\n%s", before, after)
	}
	other := writeSigningKeyOfType(t, signing.KeyECDSAP256)
	if code, _, stderr := s.cli(s.admin, "push", model, "--model", "m", "--version", "1", "--sign-key", other); code == 0 || !strings.Contains(stderr, "another signature bundle") {
		t.Fatalf("push of the same files signed by another key: exit %d, %s; want it refused", code, stderr)
	}
}

// writeSigningKey writes a new Ed25519 private key (PEM) to a file and
// returns its path.
func writeSigningKey(t testing.TB) string {
	t.Helper()
	return writeSigningKeyOfType(t, signing.KeyEd25519)
}

// writeSigningKeyOfType writes a new private key of the given type (PEM)
// to a file and returns its path.
func writeSigningKeyOfType(t testing.TB, keyType string) string {
	t.Helper()
	priv, err := signing.GenerateKey(keyType)
	if err != nil {
		t.Fatal(err)
	}
	privPEM, err := signing.MarshalPrivateKeyPEM(priv)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "ci.key")
	if err := os.WriteFile(keyFile, privPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return keyFile
}
