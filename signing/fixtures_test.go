package signing

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const omsDir = "testdata/oms/model_signing"

// copyDir copies a fixture model into a writable temporary directory.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
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
	return dst
}

func readPublicKey(t testing.TB, path string) crypto.PublicKey {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParsePublicKeyPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func readCerts(t testing.TB, path string) []*x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := ParseCertificatesPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// fixtureCase is one model_signing fixture folder and how to verify it.
type fixtureCase struct {
	name       string
	trust      TrustStore
	ignore     []string
	singleFile bool
}

func fixtureCases(t testing.TB) []fixtureCase {
	pub := readPublicKey(t, filepath.Join(omsDir, "keys/signing-key-pub.pem"))
	roots := readCerts(t, filepath.Join(omsDir, "keys/ca-cert.pem"))
	key := TrustStore{PublicKeys: []crypto.PublicKey{pub}}
	chain := TrustStore{Roots: roots}
	return []fixtureCase{
		{name: "v1.0.0-elliptic-key", trust: key, singleFile: true},
		{name: "v1.0.1-elliptic-key", trust: key, ignore: []string{"ignore-me"}},
		{name: "v1.1.0-elliptic-key", trust: key, ignore: []string{"ignore-me"}},
		{name: "v1.0.0-certificate", trust: chain},
		{name: "v1.0.1-certificate", trust: chain, ignore: []string{"ignore-me"}},
		{name: "v1.1.0-certificate", trust: chain, ignore: []string{"ignore-me"}},
	}
}

// verifyFixture verifies model dir (or its signme-1 for single-file models)
// with its model.sig.
func verifyFixture(t testing.TB, c fixtureCase, dir string) (Result, error) {
	t.Helper()
	sigPath := filepath.Join(dir, "model.sig")
	b, err := os.ReadFile(sigPath)
	if err != nil {
		t.Fatal(err)
	}
	model := dir
	if c.singleFile {
		model = filepath.Join(dir, "signme-1")
	}
	return VerifyPath(context.Background(), model, b, c.trust, VerifyPathOptions{Ignore: c.ignore, SignaturePath: sigPath})
}

func TestModelSigningFixturesVerify(t *testing.T) {
	for _, c := range fixtureCases(t) {
		t.Run(c.name, func(t *testing.T) {
			res, err := verifyFixture(t, c, filepath.Join(omsDir, c.name))
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if strings.HasSuffix(c.name, "certificate") {
				if res.Method != MaterialCertificateChain || res.CertificateSubject != "CN=intermediate-ca" || res.RootSubject != "CN=root-ca" {
					t.Errorf("result: got %+v, want a certificate chain to CN=root-ca", res)
				}
			} else if res.Method != MaterialPublicKey || res.KeyAlgorithm != "ecdsa-p384-sha384" {
				t.Errorf("result: got %+v, want an ECDSA P-384 key", res)
			}
		})
	}
}

func TestModelSigningFixturesTampered(t *testing.T) {
	type tamper struct {
		name    string
		apply   func(t *testing.T, dir string)
		wantErr error
		wantMsg string
	}
	tampers := []tamper{
		{"byte of signed file", func(t *testing.T, dir string) { flipByte(t, filepath.Join(dir, "signme-1"), 0) }, ErrFileModified, `"signme-1"`},
		{"signed file removed", func(t *testing.T, dir string) { must(t, os.Remove(filepath.Join(dir, "signme-2"))) }, ErrFileMissing, `"signme-2"`},
		{"unsigned file added", func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, "extra.bin"), []byte("x"), 0o644))
		}, ErrFileUnsigned, `"extra.bin"`},
		{"byte of model.sig", func(t *testing.T, dir string) { flipSigPayloadByte(t, filepath.Join(dir, "model.sig")) }, nil, ""},
	}
	for _, c := range fixtureCases(t) {
		for _, tp := range tampers {
			if c.singleFile && (tp.name == "signed file removed" || tp.name == "unsigned file added") {
				continue // a single-file model has no file list
			}
			t.Run(c.name+"/"+tp.name, func(t *testing.T) {
				dir := copyDir(t, filepath.Join(omsDir, c.name))
				tp.apply(t, dir)
				_, err := verifyFixture(t, c, dir)
				if err == nil {
					t.Fatal("verify: got success, want an error")
				}
				if tp.wantErr != nil && !errors.Is(err, tp.wantErr) {
					t.Errorf("error: got %v, want %v", err, tp.wantErr)
				}
				if !strings.Contains(err.Error(), tp.wantMsg) {
					t.Errorf("error: got %q, want it to name %s", err, tp.wantMsg)
				}
			})
		}
	}
}

// TestModelSigningFixturesEveryByte flips one bit of each byte of each
// model.sig in turn: every change must be rejected.
func TestModelSigningFixturesEveryByte(t *testing.T) {
	ctx := context.Background()
	for _, c := range fixtureCases(t) {
		t.Run(c.name, func(t *testing.T) {
			orig, err := os.ReadFile(filepath.Join(omsDir, c.name, "model.sig"))
			must(t, err)
			model := filepath.Join(omsDir, c.name)
			if c.singleFile {
				model = filepath.Join(model, "signme-1")
			}
			m, err := ManifestFromPath(ctx, model, WalkOptions{Ignore: append([]string{"model.sig"}, c.ignore...)})
			must(t, err)
			accepted := 0
			for i := range orig {
				b := []byte(string(orig))
				b[i] ^= 0x01
				if _, err := VerifyManifest(ctx, b, m, c.trust); err == nil {
					accepted++
					t.Logf("byte %d (%q) flipped: accepted", i, orig[i])
				}
			}
			if accepted > 0 {
				t.Errorf("%d of %d single-bit changes accepted, want 0", accepted, len(orig))
			}
		})
	}
}

func flipByte(t testing.TB, path string, off int) {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	b[off] ^= 0xff
	must(t, os.WriteFile(path, b, 0o644))
}

// flipSigPayloadByte changes one character inside the base64 payload of
// model.sig, keeping it valid base64.
func flipSigPayloadByte(t testing.TB, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	i := strings.Index(string(b), `"payload": "`)
	if i < 0 {
		i = strings.Index(string(b), `"payload":"`)
	}
	if i < 0 {
		t.Fatal("no payload in model.sig")
	}
	j := i + len(`"payload": "`) + 20
	if b[j] == 'A' {
		b[j] = 'B'
	} else {
		b[j] = 'A'
	}
	must(t, os.WriteFile(path, b, 0o644))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
