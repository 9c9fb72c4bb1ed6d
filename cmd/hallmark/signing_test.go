package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const omsFixtures = "../../signing/testdata/oms/model_signing"

func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestKeysSignVerify(t *testing.T) {
	dir := t.TempDir()
	prefix := filepath.Join(dir, "release")
	for _, typ := range []string{"ecdsa-p256", "ecdsa-p384", "ed25519"} {
		t.Run(typ, func(t *testing.T) {
			p := prefix + "-" + typ
			if code, _, stderr := runCmd(t, "", "keys", "generate", "--out", p, "--type", typ); code != 0 {
				t.Fatalf("keys generate: exit %d: %s", code, stderr)
			}
			fi, err := os.Stat(p + ".key")
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("private key mode: got %v, %v; want 0600", fi.Mode().Perm(), err)
			}
			if code, _, stderr := runCmd(t, "", "keys", "generate", "--out", p); code == 0 || !strings.Contains(stderr, "exists") {
				t.Fatalf("overwriting a key: exit %d, stderr %q; want a refusal", code, stderr)
			}

			model := filepath.Join(t.TempDir(), "model")
			copyTree(t, filepath.Join(omsFixtures, "v1.1.0-certificate"), model)
			os.Remove(filepath.Join(model, "model.sig"))
			sig := filepath.Join(model, "model.sig")
			code, stdout, stderr := runCmd(t, "", "sign", model, "--key", p+".key", "--ignore-paths", filepath.Join(model, "ignore-me"), "--out", sig)
			if code != 0 {
				t.Fatalf("sign: exit %d: %s", code, stderr)
			}
			if !strings.Contains(stdout, "signed 2 files") {
				t.Errorf("sign output: got %q, want 2 files signed", stdout)
			}
			code, stdout, stderr = runCmd(t, "", "verify", model, "--signature", sig, "--public-key", p+".pub")
			if code != 0 {
				t.Fatalf("verify: exit %d: %s", code, stderr)
			}
			if !strings.Contains(stdout, "2 files match") {
				t.Errorf("verify output: got %q", stdout)
			}
			// An unsigned file added: exit 1 naming it.
			if err := os.WriteFile(filepath.Join(model, "extra.bin"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			code, _, stderr = runCmd(t, "", "verify", model, "--signature", sig, "--public-key", p+".pub")
			if code != 1 || !strings.Contains(stderr, `"extra.bin"`) {
				t.Fatalf("unsigned file: exit %d, stderr %q; want 1 naming extra.bin", code, stderr)
			}
			code, _, _ = runCmd(t, "", "verify", model, "--signature", sig, "--public-key", p+".pub", "--ignore-paths", "extra.bin")
			if code != 0 {
				t.Fatalf("ignored unsigned file: exit %d, want 0", code)
			}
		})
	}
}

func TestVerifyModelSigningFixtures(t *testing.T) {
	keys := filepath.Join(omsFixtures, "keys")
	cases := []struct {
		name  string
		trust []string
	}{
		{"v1.0.1-elliptic-key", []string{"--public-key", filepath.Join(keys, "signing-key-pub.pem")}},
		{"v1.1.0-elliptic-key", []string{"--public-key", filepath.Join(keys, "signing-key-pub.pem")}},
		{"v1.0.1-certificate", []string{"--certificate-chain", filepath.Join(keys, "ca-cert.pem")}},
		{"v1.1.0-certificate", []string{"--certificate-chain", filepath.Join(keys, "ca-cert.pem")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			model := filepath.Join(t.TempDir(), c.name)
			copyTree(t, filepath.Join(omsFixtures, c.name), model)
			sig := filepath.Join(model, "model.sig")
			// As model_signing users write it: the ignore path through the
			// model directory.
			args := append([]string{"verify", model, "--signature", sig, "--ignore-paths", filepath.Join(model, "ignore-me")}, c.trust...)
			if code, _, stderr := runCmd(t, "", args...); code != 0 {
				t.Fatalf("verify: exit %d: %s", code, stderr)
			}
			b, _ := os.ReadFile(filepath.Join(model, "signme-2"))
			b[0] ^= 1
			os.WriteFile(filepath.Join(model, "signme-2"), b, 0o644)
			code, _, stderr := runCmd(t, "", args...)
			if code != 1 || !strings.Contains(stderr, `"signme-2"`) {
				t.Fatalf("modified file: exit %d, stderr %q; want 1 naming signme-2", code, stderr)
			}
		})
	}
	t.Run("single file model", func(t *testing.T) {
		d := filepath.Join(omsFixtures, "v1.0.0-elliptic-key")
		code, _, stderr := runCmd(t, "", "verify", filepath.Join(d, "signme-1"), "--signature", filepath.Join(d, "model.sig"), "--public-key", filepath.Join(keys, "signing-key-pub.pem"))
		if code != 0 {
			t.Fatalf("verify: exit %d: %s", code, stderr)
		}
	})
	t.Run("wrong root", func(t *testing.T) {
		d := filepath.Join(omsFixtures, "v1.0.0-certificate")
		code, _, stderr := runCmd(t, "", "verify", d, "--signature", filepath.Join(d, "model.sig"), "--certificate-chain", writeOtherRoot(t))
		if code != 1 || !strings.Contains(stderr, "certificate not trusted") {
			t.Fatalf("exit %d, stderr %q; want 1 with certificate not trusted", code, stderr)
		}
	})
}

// writeOtherRoot writes a self-signed CA unrelated to the fixtures.
func writeOtherRoot(t testing.TB) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "other-root.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSigningUsage(t *testing.T) {
	cases := [][]string{
		{"verify", "dir", "--signature", "s"},
		{"verify", "dir", "--signature", "s", "--public-key", "a", "--certificate-chain", "b"},
		{"verify", "dir", "--signature", "s", "--trusted-root", "r.json"},
		{"sign", "dir", "--key", "k"},
		{"sign", "dir", "--key", "k", "--out", "o", "--ignore-paths", "../etc"},
		{"keys", "generate"},
		{"keys", "generate", "--out", "x", "--type", "rsa"},
	}
	for _, args := range cases {
		if code, _, stderr := runCmd(t, "", args...); code != 2 {
			t.Errorf("%q: exit %d (%s), want 2", args, code, stderr)
		}
	}
}
