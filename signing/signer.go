package signing

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/kms"
	"github.com/sigstore/sigstore/pkg/signature/options"
)

// ErrCertificateKeyMismatch is returned when a certificate chain's leaf does
// not certify the signing key.
var ErrCertificateKeyMismatch = errors.New("certificate does not match the signing key")

// Signer signs the DSSE pre-authentication encoding of a statement.
type Signer interface {
	// Sign returns the signature of message (ASN.1 DER for ECDSA, raw for
	// Ed25519), hashing it as the key requires.
	Sign(ctx context.Context, message []byte) ([]byte, error)
	// PublicKey returns the key that verifies the signatures.
	PublicKey() crypto.PublicKey
	// CertificateChain returns the DER certificates to embed, leaf first,
	// or nil for a bare key.
	CertificateChain() [][]byte
}

type keySigner struct {
	sv    signature.Signer
	pub   crypto.PublicKey
	chain [][]byte
}

func (s *keySigner) Sign(ctx context.Context, message []byte) ([]byte, error) {
	return s.sv.SignMessage(bytes.NewReader(message), options.WithContext(ctx))
}
func (s *keySigner) PublicKey() crypto.PublicKey { return s.pub }
func (s *keySigner) CertificateChain() [][]byte  { return s.chain }

// NewKeySigner returns a Signer for an in-memory private key (ECDSA P-256,
// P-384, P-521 or Ed25519), hashing as [model_signing] does for that key.
func NewKeySigner(priv crypto.Signer) (Signer, error) {
	h, err := signatureHash(priv.Public())
	if err != nil {
		return nil, err
	}
	if _, ok := priv.Public().(*rsa.PublicKey); ok {
		return nil, fmt.Errorf("%w: RSA keys are accepted for verification only", ErrUnsupportedKey)
	}
	sv, err := signature.LoadSigner(priv, h)
	if err != nil {
		return nil, fmt.Errorf("loading signer: %w", err)
	}
	return &keySigner{sv: sv, pub: priv.Public()}, nil
}

// LoadKeySigner reads an unencrypted PEM private key file.
func LoadKeySigner(path string) (Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading key: %w", err)
	}
	priv, err := ParsePrivateKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	return NewKeySigner(priv)
}

// WithCertificateChain returns s with a certificate chain to embed: chain
// holds the leaf (whose public key must be s's) then any intermediates, as
// model_signing's --signing_certificate and --certificate_chain together.
// The root stays out: verifiers bring their own trust anchor.
func WithCertificateChain(s Signer, chain []*x509.Certificate) (Signer, error) {
	if len(chain) == 0 {
		return nil, errors.New("empty certificate chain")
	}
	leafKey, err := KeyFingerprint(chain[0].PublicKey)
	if err != nil {
		return nil, fmt.Errorf("leaf certificate: %w", err)
	}
	key, err := KeyFingerprint(s.PublicKey())
	if err != nil {
		return nil, err
	}
	if leafKey != key {
		return nil, fmt.Errorf("%w: leaf %q certifies key %s, signing key is %s", ErrCertificateKeyMismatch, chain[0].Subject.String(), leafKey, key)
	}
	var ders [][]byte
	for _, c := range chain {
		ders = append(ders, c.Raw)
	}
	return &chainSigner{Signer: s, chain: ders}, nil
}

type chainSigner struct {
	Signer
	chain [][]byte
}

func (s *chainSigner) CertificateChain() [][]byte { return s.chain }

// IsKMSURI reports whether ref names a KMS key (a URI such as
// "awskms://...", "gcpkms://...", "hashivault://..." or a plugin's
// "name://...") rather than a key file.
func IsKMSURI(ref string) bool {
	i := strings.Index(ref, "://")
	return i > 0 && !strings.ContainsAny(ref[:i], `/\.`)
}

// NewKMSSigner returns a Signer for the KMS key at uri through sigstore's
// KMS providers (sigstore/sigstore pkg/signature/kms). hallmark registers no
// cloud SDK in-process (see docs/signing.md): kms.Get falls back to
// sigstore's KMS plugin protocol, running an executable named
// "sigstore-kms-<scheme>" from PATH, so any provider can be added without
// rebuilding. Programs that link a provider (importing
// github.com/sigstore/sigstore/pkg/signature/kms/aws, for example) get it
// here too.
func NewKMSSigner(ctx context.Context, uri string) (Signer, error) {
	// The hash must be chosen when the provider is opened, but only the
	// key tells which one: open with SHA-256, then reopen if the key wants
	// another.
	sv, err := kms.Get(ctx, uri, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("opening KMS key %s: %w", uri, err)
	}
	pub, err := sv.PublicKey(options.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("reading KMS public key %s: %w", uri, err)
	}
	h, err := signatureHash(pub)
	if err != nil {
		return nil, fmt.Errorf("KMS key %s: %w", uri, err)
	}
	if h != crypto.SHA256 {
		if sv, err = kms.Get(ctx, uri, h); err != nil {
			return nil, fmt.Errorf("opening KMS key %s: %w", uri, err)
		}
	}
	return &keySigner{sv: sv, pub: pub}, nil
}

// SignOptions controls [Sign].
type SignOptions struct {
	// IgnorePaths are recorded in the predicate's serialization block, as
	// model_signing 1.1 does, so that verifiers know what was left out.
	IgnorePaths []string
}

// Sign signs manifest m of the model called name (the subject name; by
// convention the model directory's base name) and returns the Sigstore
// bundle JSON to write to a signature file. The signature is verified with
// the signer's public key before it is returned, so a misconfigured signer
// (a KMS key hashing differently, say) fails here and not at a verifier.
func Sign(ctx context.Context, m Manifest, name string, s Signer, opts SignOptions) ([]byte, error) {
	if m.Len() == 0 {
		return nil, errors.New("signing: the model has no files")
	}
	st, err := NewStatement(name, m, opts.IgnorePaths)
	if err != nil {
		return nil, err
	}
	payload, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encoding statement: %w", err)
	}
	sig, err := s.Sign(ctx, PAE(InTotoPayloadType, payload))
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	if err := verifySig(s.PublicKey(), PAE(InTotoPayloadType, payload), sig); err != nil {
		return nil, fmt.Errorf("signing: the new signature does not verify: %w", err)
	}
	hint, err := KeyHint(s.PublicKey())
	if err != nil {
		return nil, err
	}
	env := Envelope{PayloadType: InTotoPayloadType, Payload: payload, Signatures: []EnvelopeSignature{{Sig: sig}}}
	return marshalBundle(env, hint, s.CertificateChain())
}

// verifySig checks sig over message with pub, hashing as signatureHash
// says.
func verifySig(pub crypto.PublicKey, message, sig []byte) error {
	h, err := signatureHash(pub)
	if err != nil {
		return err
	}
	v, err := signature.LoadVerifier(pub, h)
	if err != nil {
		return fmt.Errorf("loading verifier: %w", err)
	}
	return v.VerifySignature(bytes.NewReader(sig), bytes.NewReader(message))
}
