package signing

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// editBundle decodes bundle b, lets edit change it, and encodes it again.
func editBundle(t *testing.T, b []byte, edit func(top map[string]any)) []byte {
	t.Helper()
	var top map[string]any
	must(t, json.Unmarshal(b, &top))
	edit(top)
	out, err := json.Marshal(top)
	must(t, err)
	return out
}

func material(top map[string]any) map[string]any {
	return top["verificationMaterial"].(map[string]any)
}

func keyBundle(t *testing.T) ([]byte, TrustStore) {
	t.Helper()
	priv, err := GenerateKey(KeyECDSAP256)
	must(t, err)
	s, err := NewKeySigner(priv)
	must(t, err)
	return signDir(t, writeModel(t), s), TrustStore{PublicKeys: []crypto.PublicKey{priv.Public()}}
}

func verifyBytes(b []byte, ts TrustStore) error {
	bd, err := ParseBundle(b)
	if err != nil {
		return err
	}
	_, _, err = VerifyBundle(context.Background(), bd, ts)
	return err
}

func TestEnvelopeSignatureCountLimited(t *testing.T) {
	b, ts := keyBundle(t)
	withSigs := func(n int) []byte {
		return editBundle(t, b, func(top map[string]any) {
			env := top["dsseEnvelope"].(map[string]any)
			sigs := env["signatures"].([]any)
			for len(sigs) < n {
				sigs = append([]any{map[string]any{"sig": base64.StdEncoding.EncodeToString([]byte("not a signature")), "keyid": ""}}, sigs...)
			}
			env["signatures"] = sigs
		})
	}
	// The good signature comes last, so every bad one is tried first.
	if err := verifyBytes(withSigs(MaxEnvelopeSignatures), ts); err != nil {
		t.Fatalf("%d signatures: %v", MaxEnvelopeSignatures, err)
	}
	err := verifyBytes(withSigs(MaxEnvelopeSignatures+1), ts)
	if !errors.Is(err, ErrInvalidEnvelope) || !strings.Contains(err.Error(), "5 signatures, at most 4") {
		t.Fatalf("%d signatures: got %v, want %v naming the count", MaxEnvelopeSignatures+1, err, ErrInvalidEnvelope)
	}
}

func TestVerifyAnyStopsWhenCancelled(t *testing.T) {
	priv, err := GenerateKey(KeyECDSAP256)
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	keys := []crypto.PublicKey{priv.Public(), priv.Public()}
	_, err = verifyAny(ctx, keys, []byte("m"), []EnvelopeSignature{{Sig: []byte("x")}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want %v", err, context.Canceled)
	}
}

func TestCertificateChainExtKeyUsage(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		eku    []x509.ExtKeyUsage
		accept bool
	}{
		{name: "no extended key usage", eku: []x509.ExtKeyUsage{}},
		{name: "any", eku: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, accept: true},
		{name: "code signing among others", eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageCodeSigning}, accept: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := newPKI(t, KeyECDSAP256, certOpts{eku: c.eku})
			ks, err := NewKeySigner(p.leafKey)
			must(t, err)
			s, err := WithCertificateChain(ks, []*x509.Certificate{p.leaf, p.inter})
			must(t, err)
			dir := writeModel(t)
			b := signDir(t, dir, s)
			_, err = VerifyPath(ctx, dir, b, TrustStore{Roots: []*x509.Certificate{p.root}}, VerifyPathOptions{})
			if c.accept {
				if err != nil {
					t.Fatalf("verify: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrCertificate) || !strings.Contains(err.Error(), "code signing") || !strings.Contains(err.Error(), "ml-release-signer") {
				t.Fatalf("got %v, want %v naming the leaf and code signing", err, ErrCertificate)
			}
		})
	}
}

func TestManifestFromSymlinkedDirectory(t *testing.T) {
	ctx := context.Background()
	dir := writeModel(t)
	link := filepath.Join(t.TempDir(), "link")
	must(t, os.Symlink(dir, link))
	want, err := ManifestFromPath(ctx, dir, WalkOptions{})
	must(t, err)
	got, err := ManifestFromPath(ctx, link, WalkOptions{})
	must(t, err)
	if got.Len() == 0 || got.Digest() != want.Digest() {
		t.Fatalf("through the link: %d files, digest %v; the directory: %d files, digest %v", got.Len(), got.Digest(), want.Len(), want.Digest())
	}
}

func TestNonUTF8PathRefused(t *testing.T) {
	name := "a\xff"
	err := ValidatePath("dir/" + name)
	if err == nil || !strings.Contains(err.Error(), `"dir/a\xff"`) {
		t.Fatalf("ValidatePath: got %v, want an error quoting the path", err)
	}
	if _, err := NewManifest([]File{{Path: name}}); !errors.Is(err, ErrInvalidManifest) {
		t.Fatalf("NewManifest: got %v, want %v", err, ErrInvalidManifest)
	}
	dir := writeModel(t)
	if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o644); err != nil {
		t.Skipf("file system refuses non-UTF-8 names: %v", err)
	}
	_, err = ManifestFromPath(context.Background(), dir, WalkOptions{})
	if !errors.Is(err, ErrInvalidManifest) || !strings.Contains(err.Error(), `"a\xff"`) || !strings.Contains(err.Error(), "UTF-8") {
		t.Fatalf("ManifestFromPath: got %v, want %v quoting the name", err, ErrInvalidManifest)
	}
}

func TestUnverifiedMaterialRefused(t *testing.T) {
	b, ts := keyBundle(t)
	p := newPKI(t, KeyECDSAP256, certOpts{})
	ks, err := NewKeySigner(p.leafKey)
	must(t, err)
	cs, err := WithCertificateChain(ks, []*x509.Certificate{p.leaf, p.inter})
	must(t, err)
	cb := signDir(t, writeModel(t), cs)
	cts := TrustStore{Roots: []*x509.Certificate{p.root}}

	junkEntry := []any{map[string]any{"logIndex": "1"}}
	junkTimestamps := map[string]any{"rfc3161Timestamps": []any{map[string]any{"signedTimestamp": "AAAA"}}}
	cases := []struct {
		name   string
		bundle []byte
		ts     TrustStore
		edit   func(vm map[string]any)
		accept bool
	}{
		{name: "key, tlogEntries", bundle: b, ts: ts, edit: func(vm map[string]any) { vm["tlogEntries"] = junkEntry }},
		{name: "chain, tlogEntries", bundle: cb, ts: cts, edit: func(vm map[string]any) { vm["tlogEntries"] = junkEntry }},
		{name: "key, timestamps", bundle: b, ts: ts, edit: func(vm map[string]any) { vm["timestampVerificationData"] = junkTimestamps }},
		{name: "chain, timestamps", bundle: cb, ts: cts, edit: func(vm map[string]any) { vm["timestampVerificationData"] = junkTimestamps }},
		{name: "key, empty timestamps", bundle: b, ts: ts, accept: true, edit: func(vm map[string]any) {
			vm["timestampVerificationData"] = map[string]any{"rfc3161Timestamps": []any{}}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := verifyBytes(editBundle(t, c.bundle, func(top map[string]any) { c.edit(material(top)) }), c.ts)
			if c.accept {
				if err != nil {
					t.Fatalf("verify: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidBundle) {
				t.Fatalf("got %v, want %v", err, ErrInvalidBundle)
			}
		})
	}
}

func TestPublicKeyRawBytesExact(t *testing.T) {
	c := fixtureCases(t)[1] // v1.0.1-elliptic-key: rawBytes holds a PEM key
	orig, err := os.ReadFile(filepath.Join(omsDir, c.name, "model.sig"))
	must(t, err)
	pub := c.trust.PublicKeys[0]
	der, err := x509.MarshalPKIXPublicKey(pub)
	must(t, err)
	setRaw := func(raw []byte) []byte {
		return editBundle(t, orig, func(top map[string]any) {
			material(top)["publicKey"].(map[string]any)["rawBytes"] = base64.StdEncoding.EncodeToString(raw)
		})
	}
	var pemRaw []byte
	{
		bd, err := ParseBundle(orig)
		must(t, err)
		pemRaw = bd.PublicKeyRaw
	}
	if err := verifyBytes(setRaw(pemRaw), c.trust); err != nil {
		t.Fatalf("re-encoded fixture: %v", err)
	}
	if err := verifyBytes(setRaw(der), c.trust); err != nil {
		t.Fatalf("DER rawBytes: %v", err)
	}
	for name, raw := range map[string][]byte{
		"text before the PEM": append([]byte("hello\n"), pemRaw...),
		"text after the PEM":  append(append([]byte{}, pemRaw...), "hello\n"...),
	} {
		if err := verifyBytes(setRaw(raw), c.trust); !errors.Is(err, ErrKeyMismatch) {
			t.Errorf("%s: got %v, want %v", name, err, ErrKeyMismatch)
		}
	}
}
