package signing

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature/kms/fake"
)

// writeModel creates a small model directory with nested files.
func writeModel(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "my-model")
	files := map[string]string{
		"config.json":          `{"layers": 2}`,
		"weights/part-1.bin":   strings.Repeat("a", 5000),
		"weights/part-2.bin":   strings.Repeat("b", 7),
		"tokenizer/vocab.txt":  "hello\nworld\n",
		"a-b":                  "sorts after a/ in model_signing's order",
		"a/c":                  "c",
		".git/HEAD":            "ref: refs/heads/main\n",
		"empty":                "",
		"deep/er/still/x.json": "{}",
	}
	for p, content := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		must(t, os.MkdirAll(filepath.Dir(full), 0o755))
		must(t, os.WriteFile(full, []byte(content), 0o644))
	}
	return dir
}

func signDir(t testing.TB, dir string, s Signer, ignore ...string) []byte {
	t.Helper()
	ctx := context.Background()
	m, err := ManifestFromPath(ctx, dir, WalkOptions{Ignore: ignore})
	must(t, err)
	b, err := Sign(ctx, m, filepath.Base(dir), s, SignOptions{IgnorePaths: append(ignore, DefaultIgnorePaths...)})
	must(t, err)
	return b
}

func TestSignVerifyRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, kt := range []string{KeyEd25519, KeyECDSAP256, KeyECDSAP384, KeyECDSAP521} {
		t.Run(kt, func(t *testing.T) {
			priv, err := GenerateKey(kt)
			must(t, err)
			// Through PEM, as the CLI does.
			pemKey, err := MarshalPrivateKeyPEM(priv)
			must(t, err)
			priv, err = ParsePrivateKeyPEM(pemKey)
			must(t, err)
			s, err := NewKeySigner(priv)
			must(t, err)
			dir := writeModel(t)
			b := signDir(t, dir, s)
			validateAgainstSchemas(t, b)

			ts := TrustStore{PublicKeys: []crypto.PublicKey{priv.Public()}}
			res, err := VerifyPath(ctx, dir, b, ts, VerifyPathOptions{})
			if err != nil {
				t.Fatalf("verify path: %v", err)
			}
			if want := keyAlgorithm(priv.Public()); res.KeyAlgorithm != want || res.ModelName != "my-model" {
				t.Errorf("result: got %+v, want algorithm %s, model my-model", res, want)
			}
			m, err := ManifestFromPath(ctx, dir, WalkOptions{})
			must(t, err)
			if _, err := VerifyManifest(ctx, b, m, ts); err != nil {
				t.Fatalf("verify manifest: %v", err)
			}

			other, err := GenerateKey(kt)
			must(t, err)
			_, err = VerifyPath(ctx, dir, b, TrustStore{PublicKeys: []crypto.PublicKey{other.Public()}}, VerifyPathOptions{})
			if !errors.Is(err, ErrSignatureInvalid) {
				t.Fatalf("wrong key: got %v, want %v", err, ErrSignatureInvalid)
			}
		})
	}
}

// TestResourceOrder checks that resources are listed in model_signing's
// (pathlib) order and that the subject digest follows that order.
func TestResourceOrder(t *testing.T) {
	priv, err := GenerateKey(KeyEd25519)
	must(t, err)
	s, err := NewKeySigner(priv)
	must(t, err)
	b := signDir(t, writeModel(t), s)
	bd, err := ParseBundle(b)
	must(t, err)
	st, err := bd.Statement()
	must(t, err)
	var names []string
	for _, r := range st.Resources {
		names = append(names, r.Name)
	}
	want := "a/c a-b config.json deep/er/still/x.json empty tokenizer/vocab.txt weights/part-1.bin weights/part-2.bin"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("resources: got %q, want %q", got, want)
	}
}

func TestKMSSigner(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	must(t, err)
	ctx := context.WithValue(context.Background(), fake.KmsCtxKey{}, crypto.PrivateKey(priv))
	s, err := NewKMSSigner(ctx, fake.ReferenceScheme+"test-key")
	if err != nil {
		t.Fatal(err)
	}
	dir := writeModel(t)
	m, err := ManifestFromPath(ctx, dir, WalkOptions{})
	must(t, err)
	b, err := Sign(ctx, m, "my-model", s, SignOptions{})
	must(t, err)
	res, err := VerifyManifest(ctx, b, m, TrustStore{PublicKeys: []crypto.PublicKey{priv.Public()}})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if res.KeyAlgorithm != "ecdsa-p384-sha384" {
		t.Errorf("algorithm: got %s, want ecdsa-p384-sha384", res.KeyAlgorithm)
	}
	if _, err := NewKMSSigner(context.Background(), "nosuchkms://key"); err == nil {
		t.Fatal("unknown KMS scheme: got a signer, want an error")
	}
}

// testPKI is a root, an intermediate and a code-signing leaf.
type testPKI struct {
	root, inter, leaf *x509.Certificate
	rootKey, interKey *ecdsa.PrivateKey
	leafKey           crypto.Signer
}

type certOpts struct {
	notBefore, notAfter time.Time
	eku                 []x509.ExtKeyUsage
	keyUsage            x509.KeyUsage
}

func newCert(t testing.TB, tmpl *x509.Certificate, parent *x509.Certificate, pub crypto.PublicKey, parentKey crypto.Signer) *x509.Certificate {
	t.Helper()
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	must(t, err)
	c, err := x509.ParseCertificate(der)
	must(t, err)
	return c
}

var serial int64

func newPKI(t testing.TB, leafKeyType string, o certOpts) testPKI {
	t.Helper()
	now := time.Now()
	ca := func(name string) *x509.Certificate {
		serial++
		return &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		}
	}
	var p testPKI
	var err error
	p.rootKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	p.root = newCert(t, ca("test-root"), nil, p.rootKey.Public(), p.rootKey)
	p.interKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	p.inter = newCert(t, ca("test-intermediate"), p.root, p.interKey.Public(), p.rootKey)
	p.leafKey, err = GenerateKey(leafKeyType)
	must(t, err)
	serial++
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "ml-release-signer", Organization: []string{"Example Bank"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
	}
	if !o.notBefore.IsZero() {
		leaf.NotBefore, leaf.NotAfter = o.notBefore, o.notAfter
	}
	if o.eku != nil {
		leaf.ExtKeyUsage = o.eku
	}
	if o.keyUsage != 0 {
		leaf.KeyUsage = o.keyUsage
	}
	p.leaf = newCert(t, leaf, p.inter, p.leafKey.Public(), p.interKey)
	return p
}

func TestCertificateChainRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, kt := range []string{KeyEd25519, KeyECDSAP256, KeyECDSAP384, KeyECDSAP521} {
		t.Run(kt, func(t *testing.T) {
			p := newPKI(t, kt, certOpts{})
			ks, err := NewKeySigner(p.leafKey)
			must(t, err)
			s, err := WithCertificateChain(ks, []*x509.Certificate{p.leaf, p.inter})
			must(t, err)
			dir := writeModel(t)
			b := signDir(t, dir, s)
			validateAgainstSchemas(t, b)
			res, err := VerifyPath(ctx, dir, b, TrustStore{Roots: []*x509.Certificate{p.root}}, VerifyPathOptions{})
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if res.CertificateSubject != "CN=ml-release-signer,O=Example Bank" || res.CertificateIssuer != "CN=test-intermediate" || res.RootSubject != "CN=test-root" {
				t.Errorf("result: got %+v", res)
			}
		})
	}
}

func TestCertificateChainRejected(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	cases := []struct {
		name string
		opts certOpts
		// trust overrides the root (nil: the PKI's own root)
		otherRoot bool
		wantMsg   string
	}{
		{name: "wrong root", otherRoot: true, wantMsg: "unknown authority"},
		{name: "expired leaf", opts: certOpts{notBefore: now.Add(-48 * time.Hour), notAfter: now.Add(-24 * time.Hour)}, wantMsg: "valid from"},
		{name: "not yet valid leaf", opts: certOpts{notBefore: now.Add(24 * time.Hour), notAfter: now.Add(48 * time.Hour)}, wantMsg: "valid from"},
		{name: "server auth only", opts: certOpts{eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, wantMsg: "key usage"},
		{name: "no digital signature", opts: certOpts{keyUsage: x509.KeyUsageKeyEncipherment}, wantMsg: "digital signatures"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := newPKI(t, KeyECDSAP256, c.opts)
			ks, err := NewKeySigner(p.leafKey)
			must(t, err)
			s, err := WithCertificateChain(ks, []*x509.Certificate{p.leaf, p.inter})
			must(t, err)
			dir := writeModel(t)
			b := signDir(t, dir, s)
			root := p.root
			if c.otherRoot {
				root = newPKI(t, KeyECDSAP256, certOpts{}).root
			}
			_, err = VerifyPath(ctx, dir, b, TrustStore{Roots: []*x509.Certificate{root}}, VerifyPathOptions{})
			if !errors.Is(err, ErrCertificate) {
				t.Fatalf("got %v, want %v", err, ErrCertificate)
			}
			if !strings.Contains(err.Error(), c.wantMsg) || !strings.Contains(err.Error(), "ml-release-signer") {
				t.Errorf("error %q: want it to name the leaf and contain %q", err, c.wantMsg)
			}
		})
	}

	t.Run("leaf for another key", func(t *testing.T) {
		p := newPKI(t, KeyECDSAP256, certOpts{})
		other, err := GenerateKey(KeyECDSAP256)
		must(t, err)
		ks, err := NewKeySigner(other)
		must(t, err)
		if _, err := WithCertificateChain(ks, []*x509.Certificate{p.leaf, p.inter}); !errors.Is(err, ErrCertificateKeyMismatch) {
			t.Fatalf("got %v, want %v", err, ErrCertificateKeyMismatch)
		}
	})
	t.Run("chain bundle, key trust only", func(t *testing.T) {
		p := newPKI(t, KeyECDSAP256, certOpts{})
		ks, err := NewKeySigner(p.leafKey)
		must(t, err)
		s, err := WithCertificateChain(ks, []*x509.Certificate{p.leaf, p.inter})
		must(t, err)
		dir := writeModel(t)
		b := signDir(t, dir, s)
		_, err = VerifyPath(ctx, dir, b, TrustStore{PublicKeys: []crypto.PublicKey{p.leafKey.Public()}}, VerifyPathOptions{})
		if !errors.Is(err, ErrNoTrust) {
			t.Fatalf("got %v, want %v", err, ErrNoTrust)
		}
	})
}
