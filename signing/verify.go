package signing

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
)

// ErrSignatureInvalid is returned when no trusted key verifies the
// envelope's signature.
var ErrSignatureInvalid = errors.New("signature does not verify")

// ErrNoTrust is returned when the trust store has nothing that could
// verify the bundle's kind of material (a certificate chain and no root
// certificates, for example).
var ErrNoTrust = errors.New("no trusted key or root for this signature")

// ErrCertificate is returned (wrapped) when a certificate chain does not
// lead to a trusted root, is expired, or does not allow code signing.
var ErrCertificate = errors.New("certificate not trusted")

// ErrIdentity is returned when a keyless signature's identity or issuer is
// not the expected one.
var ErrIdentity = errors.New("signer identity does not match")

// ErrKeyless is returned when a keyless bundle fails Sigstore verification
// (transparency log, timestamps, Fulcio chain).
var ErrKeyless = errors.New("keyless verification failed")

// Sentinels for the files of a model that disagree with its signature;
// they are matched by a *MismatchError.
var (
	ErrFileModified = errors.New("file does not match its signed digest")
	ErrFileMissing  = errors.New("signed file is missing")
	ErrFileUnsigned = errors.New("file is not covered by the signature")
)

// TrustStore is what a verifier trusts.
type TrustStore struct {
	// PublicKeys verify bundles signed with a bare key.
	PublicKeys []crypto.PublicKey
	// Roots are trust anchors for bundles carrying a certificate chain.
	Roots []*x509.Certificate
	// Keyless, when set, verifies keyless (Fulcio certificate) bundles.
	Keyless *KeylessPolicy
	// Time is the instant at which certificates must be valid (bundles with
	// a certificate chain carry no timestamp). The zero value means now.
	Time time.Time
}

// KeylessPolicy verifies keyless Sigstore bundles offline.
type KeylessPolicy struct {
	// TrustedRoot is the Sigstore trusted root (Fulcio CAs, Rekor keys,
	// timestamp authorities), for example from [LoadTrustedRoot].
	TrustedRoot root.TrustedMaterial
	// Identity is the exact certificate subject alternative name (an
	// e-mail or a workflow URI); Issuer the exact OIDC issuer URL.
	Identity, Issuer string
}

// LoadTrustedRoot reads a Sigstore trusted_root.json file.
func LoadTrustedRoot(path string) (root.TrustedMaterial, error) {
	tr, err := root.NewTrustedRootFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("reading trusted root %s: %w", path, err)
	}
	return tr, nil
}

// Result says who signed a verified bundle; it is meant to be recorded.
type Result struct {
	// Method is the bundle's kind of material.
	Method MaterialKind `json:"method"`
	// KeyFingerprint is the hex SHA-256 of the DER public key that verified
	// the signature (set for every method).
	KeyFingerprint string `json:"key_fingerprint"`
	// KeyAlgorithm is, for example, "ecdsa-p384-sha384" or "ed25519".
	KeyAlgorithm string `json:"key_algorithm"`
	// For certificate chains and keyless certificates: the leaf's subject
	// and issuer (RFC 2253 strings) and, for chains, the root's subject.
	CertificateSubject string `json:"certificate_subject,omitempty"`
	CertificateIssuer  string `json:"certificate_issuer,omitempty"`
	RootSubject        string `json:"root_subject,omitempty"`
	// For keyless: the verified identity (SAN) and OIDC issuer.
	Identity   string `json:"identity,omitempty"`
	OIDCIssuer string `json:"oidc_issuer,omitempty"`
	// ModelName is the statement subject's name, SubjectDigest its sha256.
	ModelName     string `json:"model_name"`
	SubjectDigest Digest `json:"subject_digest"`
	// Files is the number of signed resources checked (set by
	// VerifyManifest and VerifyPath).
	Files int `json:"files"`
}

// VerifyBundle checks that bd's envelope is signed by something ts trusts
// and returns who signed and the parsed statement. It does not look at any
// model files: see [VerifyManifest] and [VerifyPath].
func VerifyBundle(ctx context.Context, bd *Bundle, ts TrustStore) (Result, *Statement, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, nil, err
	}
	res := Result{Method: bd.Kind}
	pae := PAE(bd.Envelope.PayloadType, bd.Envelope.Payload)
	switch bd.Kind {
	case MaterialPublicKey:
		if len(ts.PublicKeys) == 0 {
			return Result{}, nil, fmt.Errorf("%w: the bundle is signed with a key and no public key was given", ErrNoTrust)
		}
		pub, err := verifyAny(ctx, ts.PublicKeys, pae, bd.Envelope.Signatures)
		if err != nil {
			return Result{}, nil, err
		}
		if err := checkKeyClaims(bd, pub); err != nil {
			return Result{}, nil, err
		}
		res.KeyFingerprint, _ = KeyFingerprint(pub)
		res.KeyAlgorithm = keyAlgorithm(pub)
	case MaterialCertificateChain:
		if len(ts.Roots) == 0 {
			return Result{}, nil, fmt.Errorf("%w: the bundle carries a certificate chain and no root certificate was given", ErrNoTrust)
		}
		chain, err := verifyChain(bd.Certificates, ts)
		if err != nil {
			return Result{}, nil, err
		}
		leaf := chain[0]
		if _, err := verifyAny(ctx, []crypto.PublicKey{leaf.PublicKey}, pae, bd.Envelope.Signatures); err != nil {
			return Result{}, nil, fmt.Errorf("leaf certificate %q: %w", leaf.Subject.String(), err)
		}
		res.KeyFingerprint, _ = KeyFingerprint(leaf.PublicKey)
		res.KeyAlgorithm = keyAlgorithm(leaf.PublicKey)
		res.CertificateSubject = leaf.Subject.String()
		res.CertificateIssuer = leaf.Issuer.String()
		res.RootSubject = chain[len(chain)-1].Subject.String()
	case MaterialKeyless:
		if ts.Keyless == nil || ts.Keyless.TrustedRoot == nil {
			return Result{}, nil, fmt.Errorf("%w: the bundle is keyless and no trusted root was given", ErrNoTrust)
		}
		if err := verifyKeyless(bd, ts.Keyless, &res); err != nil {
			return Result{}, nil, err
		}
	default:
		return Result{}, nil, fmt.Errorf("%w: unknown material", ErrInvalidBundle)
	}
	st, err := bd.Statement()
	if err != nil {
		return Result{}, nil, err
	}
	res.ModelName = st.Name
	res.SubjectDigest = st.SubjectDigest
	return res, st, nil
}

// ErrKeyMismatch is returned when a bundle names a public key (hint, raw
// key or key details) other than the trusted key that verified it: the
// signature is valid but the bundle's claim about its signer is wrong.
var ErrKeyMismatch = errors.New("bundle names a different key")

// checkKeyClaims checks what a public-key bundle says about its key against
// the key that verified it. The claims are informative, but a verifier that
// ignored them would accept a bundle whose bytes had been changed.
func checkKeyClaims(bd *Bundle, pub crypto.PublicKey) error {
	if bd.PublicKeyHint != "" {
		want, err := KeyHint(pub)
		if err != nil {
			return err
		}
		if bd.PublicKeyHint != want {
			return fmt.Errorf("%w: hint %q, the verifying key's is %q", ErrKeyMismatch, truncate(bd.PublicKeyHint), want)
		}
	}
	if len(bd.PublicKeyRaw) > 0 {
		// rawBytes is either PEM (model_signing 1.0.x) or DER (the
		// Sigstore schema). PEM is told by its first bytes, not by
		// pem.Decode, which skips any text before the block. Either way the
		// claimed key must first parse, so that a wrong key is named as
		// such.
		isPEM := bytes.HasPrefix(bd.PublicKeyRaw, []byte("-----BEGIN "))
		var claimed crypto.PublicKey
		var err error
		if isPEM {
			claimed, err = ParsePublicKeyPEM(bd.PublicKeyRaw)
		} else {
			claimed, err = x509.ParsePKIXPublicKey(bd.PublicKeyRaw)
		}
		if err != nil {
			return fmt.Errorf("%w: rawBytes: %w", ErrKeyMismatch, err)
		}
		a, _ := KeyFingerprint(claimed)
		b, _ := KeyFingerprint(pub)
		if a != b {
			return fmt.Errorf("%w: rawBytes holds key %s, verified with key %s", ErrKeyMismatch, a, b)
		}
		// The bytes themselves must be the canonical encoding of the key,
		// or a changed byte in a PEM header or trailer would go unnoticed.
		var canon []byte
		if isPEM {
			canon, _ = MarshalPublicKeyPEM(pub)
		} else {
			canon, _ = x509.MarshalPKIXPublicKey(pub)
		}
		if !bytes.Equal(canon, bd.PublicKeyRaw) {
			return fmt.Errorf("%w: rawBytes is not the canonical encoding of the key", ErrKeyMismatch)
		}
	}
	if bd.PublicKeyDetails != "" && bd.PublicKeyDetails != keyDetails(pub) {
		return fmt.Errorf("%w: keyDetails %q, the verifying key is %s", ErrKeyMismatch, truncate(bd.PublicKeyDetails), keyDetails(pub))
	}
	return nil
}

// verifyAny returns the first key of keys that verifies one of sigs over
// message. ParseEnvelope bounds sigs, but a trust store may hold many keys,
// so ctx is checked before each key.
func verifyAny(ctx context.Context, keys []crypto.PublicKey, message []byte, sigs []EnvelopeSignature) (crypto.PublicKey, error) {
	var lastErr error
	for _, k := range keys {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for _, s := range sigs {
			err := verifySig(k, message, s.Sig)
			if err == nil {
				return k, nil
			}
			lastErr = err
		}
	}
	if len(keys) == 1 {
		fp, _ := KeyFingerprint(keys[0])
		return nil, fmt.Errorf("%w with key %s: %w", ErrSignatureInvalid, fp, lastErr)
	}
	return nil, fmt.Errorf("%w with any of %d trusted keys", ErrSignatureInvalid, len(keys))
}

// verifyChain verifies a bundle's chain (leaf first, then intermediates)
// up to one of ts.Roots, for code signing, at ts.Time, and returns the
// verified path, leaf first and root last.
func verifyChain(certs []*x509.Certificate, ts TrustStore) ([]*x509.Certificate, error) {
	leaf := certs[0]
	roots := x509.NewCertPool()
	for _, r := range ts.Roots {
		roots.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	at := ts.Time
	if at.IsZero() {
		at = time.Now()
	}
	subj := leaf.Subject.String()
	if at.Before(leaf.NotBefore) || at.After(leaf.NotAfter) {
		return nil, fmt.Errorf("%w: leaf %q is valid from %s to %s, not at %s", ErrCertificate, subj,
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339))
	}
	// Go checks extended key usage along the chain but not the key usage
	// bits; a leaf that may not make digital signatures must not count.
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, fmt.Errorf("%w: leaf %q does not allow digital signatures (key usage)", ErrCertificate, subj)
	}
	// Go treats a leaf without extended key usage as good for any use; the
	// documented promise is a certificate issued for code signing, so the
	// leaf must say so itself.
	if !slices.ContainsFunc(leaf.ExtKeyUsage, func(u x509.ExtKeyUsage) bool {
		return u == x509.ExtKeyUsageCodeSigning || u == x509.ExtKeyUsageAny
	}) {
		return nil, fmt.Errorf("%w: leaf %q does not allow code signing (its extended key usage lacks codeSigning)", ErrCertificate, subj)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: leaf %q (issuer %q): %w", ErrCertificate, subj, leaf.Issuer.String(), err)
	}
	return chains[0], nil
}

func verifyKeyless(bd *Bundle, p *KeylessPolicy, res *Result) error {
	if p.Identity == "" || p.Issuer == "" {
		return fmt.Errorf("%w: keyless verification needs an identity and an issuer", ErrNoTrust)
	}
	var sb bundle.Bundle
	if err := sb.UnmarshalJSON(bd.Raw); err != nil {
		return fmt.Errorf("%w: parsing bundle: %w", ErrInvalidBundle, err)
	}
	v, err := verify.NewVerifier(p.TrustedRoot, verify.WithTransparencyLog(1), verify.WithObserverTimestamps(1))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrKeyless, err)
	}
	id, err := verify.NewShortCertificateIdentity(p.Issuer, "", p.Identity, "")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrKeyless, err)
	}
	vr, err := v.Verify(&sb, verify.NewPolicy(verify.WithoutArtifactUnsafe(), verify.WithCertificateIdentity(id)))
	if err != nil {
		var nm *verify.ErrNoMatchingCertificateIdentity
		if errors.As(err, &nm) {
			leaf := bd.Certificates[0]
			return fmt.Errorf("%w: want identity %q issued by %q; the certificate names %q: %w", ErrIdentity, p.Identity, p.Issuer, strings.Join(certificateSANs(leaf), ", "), err)
		}
		return fmt.Errorf("%w: %w", ErrKeyless, err)
	}
	leaf := bd.Certificates[0]
	res.KeyFingerprint, _ = KeyFingerprint(leaf.PublicKey)
	res.KeyAlgorithm = keyAlgorithm(leaf.PublicKey)
	res.CertificateSubject = leaf.Subject.String()
	res.CertificateIssuer = leaf.Issuer.String()
	if vr.Signature != nil && vr.Signature.Certificate != nil {
		res.Identity = vr.Signature.Certificate.SubjectAlternativeName
		res.OIDCIssuer = vr.Signature.Certificate.Issuer
	}
	return nil
}

func certificateSANs(c *x509.Certificate) []string {
	var out []string
	out = append(out, c.EmailAddresses...)
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	return out
}

// FileProblem is one file that disagrees with the signature.
type FileProblem struct {
	Path string
	// Err is ErrFileModified, ErrFileMissing or ErrFileUnsigned.
	Err error
	// Signed and Actual are the digests, for ErrFileModified.
	Signed, Actual Digest
}

func (p FileProblem) String() string {
	if p.Err == ErrFileModified {
		return fmt.Sprintf("file %q: sha256 %s does not match signed %s", p.Path, p.Actual, p.Signed)
	}
	return fmt.Sprintf("file %q: %v", p.Path, p.Err)
}

// MismatchError lists the files of a model that disagree with a valid
// signature, sorted by path. It matches ErrFileModified, ErrFileMissing and
// ErrFileUnsigned with errors.Is according to the problems it holds.
type MismatchError struct {
	Problems []FileProblem
}

func (e *MismatchError) Error() string {
	const show = 5
	var b strings.Builder
	b.WriteString("model does not match its signature: ")
	for i, p := range e.Problems {
		if i == show {
			fmt.Fprintf(&b, "; and %d more", len(e.Problems)-show)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// Is matches the sentinels of the problems held.
func (e *MismatchError) Is(target error) bool {
	for _, p := range e.Problems {
		if p.Err == target {
			return true
		}
	}
	return false
}

// VerifyManifest verifies a bundle (the bytes of a signature file) against
// a manifest, without any directory: the signature must verify with ts,
// the statement must use the files serialization, and its resources must be
// exactly the manifest's paths with the same digests (OMS records no sizes,
// so sizes are not compared). The manifest must not contain files the
// signer ignored, since the registry stores only signed files.
func VerifyManifest(ctx context.Context, bundleJSON []byte, m Manifest, ts TrustStore) (Result, error) {
	bd, err := ParseBundle(bundleJSON)
	if err != nil {
		return Result{}, err
	}
	res, st, err := VerifyBundle(ctx, bd, ts)
	if err != nil {
		return Result{}, err
	}
	if st.Method != MethodFiles {
		return Result{}, fmt.Errorf("%w: a %s signature can only be checked against the files themselves (VerifyPath)", ErrUnsupported, st.Method)
	}
	if err := compareFiles(st, m); err != nil {
		return Result{}, err
	}
	res.Files = len(st.Resources)
	return res, nil
}

// compareFiles compares a files-serialization statement with a manifest.
func compareFiles(st *Statement, m Manifest) error {
	signed := make(map[string]Digest, len(st.Resources))
	for _, r := range st.Resources {
		signed[r.Path] = r.Digest
	}
	var probs []FileProblem
	for _, f := range m.files {
		d, ok := signed[f.Path]
		switch {
		case !ok:
			probs = append(probs, FileProblem{Path: f.Path, Err: ErrFileUnsigned})
		case d != f.Digest:
			probs = append(probs, FileProblem{Path: f.Path, Err: ErrFileModified, Signed: d, Actual: f.Digest})
		}
		delete(signed, f.Path)
	}
	for p := range signed {
		probs = append(probs, FileProblem{Path: p, Err: ErrFileMissing})
	}
	if len(probs) == 0 {
		return nil
	}
	slices.SortFunc(probs, func(a, b FileProblem) int { return strings.Compare(a.Path, b.Path) })
	return &MismatchError{Problems: probs}
}
