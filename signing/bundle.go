package signing

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// BundleMediaType is the media type hallmark writes: Sigstore bundle v0.3.
const BundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"

// ErrInvalidBundle is returned when a signature file is not a Sigstore
// bundle that OMS can use.
var ErrInvalidBundle = errors.New("invalid Sigstore bundle")

// ErrMissingEnvelope is returned for a bundle without a DSSE envelope.
var ErrMissingEnvelope = errors.New("bundle has no DSSE envelope")

// ErrMissingVerificationMaterial is returned for a bundle without
// verification material.
var ErrMissingVerificationMaterial = errors.New("bundle has no verification material")

// ErrMissingTlogEntries is returned for a keyless bundle (a single
// certificate) without transparency-log entries: nothing would attest when
// the short-lived certificate was used.
var ErrMissingTlogEntries = errors.New("keyless bundle has no transparency log entries")

// MaterialKind says what verification material a bundle carries.
type MaterialKind string

// The kinds of verification material.
const (
	MaterialPublicKey        MaterialKind = "public-key"
	MaterialCertificateChain MaterialKind = "certificate-chain"
	MaterialKeyless          MaterialKind = "keyless"
)

// knownMediaTypes are the Sigstore bundle media types hallmark reads. An
// exact set rather than a prefix: a bundle's every byte should matter.
var knownMediaTypes = map[string]bool{
	BundleMediaType: true,
	"application/vnd.dev.sigstore.bundle+json;version=0.1": true,
	"application/vnd.dev.sigstore.bundle+json;version=0.2": true,
	"application/vnd.dev.sigstore.bundle+json;version=0.3": true,
}

// Bundle is a parsed Sigstore bundle carrying an OMS DSSE envelope.
type Bundle struct {
	MediaType string
	Kind      MaterialKind
	// PublicKeyHint is the public key's hint (bundles from model_signing
	// ≥ 1.1, and hallmark's): see [KeyHint].
	PublicKeyHint string
	// PublicKeyRaw is the PEM public key embedded by model_signing 1.0.x. It
	// is informative: verification uses the caller's trusted keys.
	PublicKeyRaw []byte
	// PublicKeyDetails is the key's algorithm as model_signing 1.0.x
	// recorded it ("PKIX_ECDSA_P384_SHA_384").
	PublicKeyDetails string
	// Certificates holds the chain, leaf first (certificate-chain), or the
	// one keyless certificate.
	Certificates []*x509.Certificate
	// TlogEntries counts the transparency-log entries.
	TlogEntries int
	Envelope    *Envelope
	// Raw is the bundle exactly as parsed (keyless verification hands it
	// to sigstore-go).
	Raw []byte
}

// ParseBundle parses a Sigstore bundle (v0.1 to v0.3, JSON) that must carry
// a DSSE envelope and one kind of verification material: a public key
// (hint or raw bytes), an X.509 certificate chain, or a keyless certificate
// with at least one transparency-log entry. Key and chain bundles may carry
// only empty transparency-log entries and timestamps, which nothing would
// verify. The envelope is parsed with
// [ParseEnvelope]; the statement inside it is not (see
// [Bundle.Statement]).
func ParseBundle(b []byte) (*Bundle, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, fmt.Errorf("%w: empty file", ErrInvalidBundle)
	}
	top, err := objectKeys(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidBundle, err)
	}
	bd := &Bundle{Raw: bytes.Clone(b)}
	if err := needString(top, "mediaType", &bd.MediaType); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidBundle, err)
	}
	if !knownMediaTypes[bd.MediaType] {
		return nil, fmt.Errorf("%w: mediaType %q is not a Sigstore bundle v0.1 to v0.3", ErrInvalidBundle, truncate(bd.MediaType))
	}
	for k := range top {
		switch k {
		case "mediaType", "verificationMaterial", "dsseEnvelope":
		case "messageSignature":
			return nil, fmt.Errorf("%w: bundle signs a message, not a DSSE envelope (OMS needs DSSE)", ErrInvalidBundle)
		default:
			return nil, fmt.Errorf("%w: unknown field %q", ErrInvalidBundle, truncate(k))
		}
	}
	vmRaw, ok := top["verificationMaterial"]
	if !ok || bytes.Equal(bytes.TrimSpace(vmRaw), []byte("null")) {
		return nil, ErrMissingVerificationMaterial
	}
	if err := bd.parseMaterial(vmRaw); err != nil {
		return nil, err
	}
	envRaw, ok := top["dsseEnvelope"]
	if !ok || bytes.Equal(bytes.TrimSpace(envRaw), []byte("null")) {
		return nil, ErrMissingEnvelope
	}
	if bd.Envelope, err = ParseEnvelope(envRaw); err != nil {
		return nil, err
	}
	return bd, nil
}

func (bd *Bundle) parseMaterial(raw json.RawMessage) error {
	vm, err := objectKeys(raw)
	if err != nil {
		return fmt.Errorf("%w: verificationMaterial: %w", ErrInvalidBundle, err)
	}
	kinds := 0
	hasTimestamps := false
	for k, v := range vm {
		switch k {
		case "publicKey":
			kinds++
			bd.Kind = MaterialPublicKey
			pk, err := objectKeys(v, "hint", "rawBytes", "keyDetails")
			if err != nil {
				return fmt.Errorf("%w: publicKey: %w", ErrInvalidBundle, err)
			}
			if h, ok := pk["hint"]; ok {
				if err := json.Unmarshal(h, &bd.PublicKeyHint); err != nil {
					return fmt.Errorf("%w: publicKey: hint is not a string", ErrInvalidBundle)
				}
			}
			if r, ok := pk["rawBytes"]; ok {
				var s string
				if err := json.Unmarshal(r, &s); err != nil {
					return fmt.Errorf("%w: publicKey: rawBytes is not a string", ErrInvalidBundle)
				}
				if bd.PublicKeyRaw, err = strictBase64(s); err != nil {
					return fmt.Errorf("%w: publicKey: rawBytes: %w", ErrInvalidBundle, err)
				}
			}
			if d, ok := pk["keyDetails"]; ok {
				if err := json.Unmarshal(d, &bd.PublicKeyDetails); err != nil {
					return fmt.Errorf("%w: publicKey: keyDetails is not a string", ErrInvalidBundle)
				}
			}
			if bd.PublicKeyHint == "" && len(bd.PublicKeyRaw) == 0 {
				return fmt.Errorf("%w: publicKey has neither hint nor rawBytes", ErrInvalidBundle)
			}
		case "x509CertificateChain":
			kinds++
			bd.Kind = MaterialCertificateChain
			chain, err := objectKeys(v, "certificates")
			if err != nil {
				return fmt.Errorf("%w: x509CertificateChain: %w", ErrInvalidBundle, err)
			}
			var certs []json.RawMessage
			if err := json.Unmarshal(chain["certificates"], &certs); err != nil || len(certs) == 0 {
				return fmt.Errorf("%w: x509CertificateChain has no certificates", ErrInvalidBundle)
			}
			for i, c := range certs {
				cert, err := parseRawCertificate(c)
				if err != nil {
					return fmt.Errorf("%w: x509CertificateChain: certificate %d: %w", ErrInvalidBundle, i, err)
				}
				bd.Certificates = append(bd.Certificates, cert)
			}
		case "certificate":
			kinds++
			bd.Kind = MaterialKeyless
			cert, err := parseRawCertificate(v)
			if err != nil {
				return fmt.Errorf("%w: certificate: %w", ErrInvalidBundle, err)
			}
			bd.Certificates = []*x509.Certificate{cert}
		case "tlogEntries":
			var entries []json.RawMessage
			if err := json.Unmarshal(v, &entries); err != nil {
				return fmt.Errorf("%w: tlogEntries is not a list", ErrInvalidBundle)
			}
			bd.TlogEntries = len(entries)
		case "timestampVerificationData":
			hasTimestamps = !emptyJSON(v)
		default:
			return fmt.Errorf("%w: verificationMaterial: unknown field %q", ErrInvalidBundle, truncate(k))
		}
	}
	switch {
	case kinds == 0:
		return fmt.Errorf("%w: no public key, certificate chain or certificate", ErrMissingVerificationMaterial)
	case kinds > 1:
		return fmt.Errorf("%w: verificationMaterial has more than one of publicKey, x509CertificateChain, certificate", ErrInvalidBundle)
	case bd.Kind == MaterialKeyless && bd.TlogEntries == 0:
		return ErrMissingTlogEntries
	// Only keyless verification reads log entries and timestamps; on other
	// bundles they would be bytes that nothing checks, so they are refused
	// rather than carried along as if they meant something.
	case bd.Kind != MaterialKeyless && bd.TlogEntries > 0:
		return fmt.Errorf("%w: a %s bundle has %d transparency-log entries; hallmark verifies them only for keyless bundles", ErrInvalidBundle, bd.Kind, bd.TlogEntries)
	case bd.Kind != MaterialKeyless && hasTimestamps:
		return fmt.Errorf("%w: a %s bundle has timestampVerificationData; hallmark verifies timestamps only for keyless bundles", ErrInvalidBundle, bd.Kind)
	}
	return nil
}

// emptyJSON reports whether v is null, an empty list, or an object whose
// values are all empty: what a tool writes when it has no timestamps.
func emptyJSON(v json.RawMessage) bool {
	var x any
	if err := json.Unmarshal(v, &x); err != nil {
		return false
	}
	var empty func(any) bool
	empty = func(x any) bool {
		switch x := x.(type) {
		case nil:
			return true
		case []any:
			return len(x) == 0
		case map[string]any:
			for _, e := range x {
				if !empty(e) {
					return false
				}
			}
			return true
		}
		return false
	}
	return empty(x)
}

// parseRawCertificate decodes {"rawBytes": base64 DER} strictly.
func parseRawCertificate(v json.RawMessage) (*x509.Certificate, error) {
	m, err := objectKeys(v, "rawBytes")
	if err != nil {
		return nil, err
	}
	var s string
	if err := needString(m, "rawBytes", &s); err != nil {
		return nil, err
	}
	der, err := strictBase64(s)
	if err != nil {
		return nil, fmt.Errorf("rawBytes: %w", err)
	}
	return x509.ParseCertificate(der)
}

// strictBase64 decodes padded standard base64, refusing non-zero padding
// bits, so that each encoded byte string has exactly one spelling.
func strictBase64(s string) ([]byte, error) {
	return base64.StdEncoding.Strict().DecodeString(s)
}

// Statement parses the envelope's payload as an OMS statement.
func (bd *Bundle) Statement() (*Statement, error) {
	return ParseStatement(bd.Envelope.Payload)
}

type bundleJSON struct {
	MediaType            string       `json:"mediaType"`
	VerificationMaterial materialJSON `json:"verificationMaterial"`
	DSSEEnvelope         Envelope     `json:"dsseEnvelope"`
}

type materialJSON struct {
	PublicKey            *hintJSON  `json:"publicKey,omitempty"`
	X509CertificateChain *chainJSON `json:"x509CertificateChain,omitempty"`
	TlogEntries          []struct{} `json:"tlogEntries"`
}

type hintJSON struct {
	Hint string `json:"hint"`
}

type chainJSON struct {
	Certificates []rawBytesJSON `json:"certificates"`
}

type rawBytesJSON struct {
	RawBytes []byte `json:"rawBytes"`
}

// marshalBundle writes a bundle as model_signing 1.1 does: v0.3 media type,
// a public-key hint or the certificate chain (leaf first), and an empty
// tlogEntries list (no transparency log is involved).
func marshalBundle(env Envelope, hint string, chain [][]byte) ([]byte, error) {
	j := bundleJSON{MediaType: BundleMediaType, DSSEEnvelope: env}
	j.VerificationMaterial.TlogEntries = []struct{}{}
	if len(chain) > 0 {
		c := &chainJSON{}
		for _, der := range chain {
			c.Certificates = append(c.Certificates, rawBytesJSON{RawBytes: der})
		}
		j.VerificationMaterial.X509CertificateChain = c
	} else {
		j.VerificationMaterial.PublicKey = &hintJSON{Hint: hint}
	}
	out, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding bundle: %w", err)
	}
	return append(out, '\n'), nil
}
