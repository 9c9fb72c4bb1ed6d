package signing

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// ErrUnsupportedKey is returned for key types hallmark cannot sign or
// verify with.
var ErrUnsupportedKey = errors.New("unsupported key type")

// Key types accepted by [GenerateKey].
const (
	KeyEd25519   = "ed25519"
	KeyECDSAP256 = "ecdsa-p256"
	KeyECDSAP384 = "ecdsa-p384"
	KeyECDSAP521 = "ecdsa-p521"
)

// GenerateKey creates a private key of the given type (KeyEd25519,
// KeyECDSAP256, KeyECDSAP384 or KeyECDSAP521).
func GenerateKey(keyType string) (crypto.Signer, error) {
	switch keyType {
	case KeyEd25519:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	case KeyECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case KeyECDSAP521:
		return ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	}
	return nil, fmt.Errorf("%w: %q (want %s, %s, %s or %s)", ErrUnsupportedKey, keyType, KeyEd25519, KeyECDSAP256, KeyECDSAP384, KeyECDSAP521)
}

// MarshalPrivateKeyPEM encodes a private key as an unencrypted PKCS #8
// "PRIVATE KEY" PEM block, which model_signing and openssl read.
func MarshalPrivateKeyPEM(priv crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encoding private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// MarshalPublicKeyPEM encodes a public key as a PKIX "PUBLIC KEY" PEM block.
func MarshalPublicKeyPEM(pub crypto.PublicKey) ([]byte, error) {
	b, err := cryptoutils.MarshalPublicKeyToPEM(pub)
	if err != nil {
		return nil, fmt.Errorf("encoding public key: %w", err)
	}
	return b, nil
}

// ParsePrivateKeyPEM decodes an unencrypted private key (PKCS #8, SEC 1 EC
// or PKCS #1 RSA PEM) that can sign.
func ParsePrivateKeyPEM(b []byte) (crypto.Signer, error) {
	k, err := cryptoutils.UnmarshalPEMToPrivateKey(b, cryptoutils.SkipPassword)
	if err != nil {
		return nil, fmt.Errorf("decoding private key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: %T", ErrUnsupportedKey, k)
	}
	if _, err := signatureHash(s.Public()); err != nil {
		return nil, err
	}
	return s, nil
}

// ParsePublicKeyPEM decodes a PKIX "PUBLIC KEY" PEM block (or the public
// key of a certificate).
func ParsePublicKeyPEM(b []byte) (crypto.PublicKey, error) {
	if blk, _ := pem.Decode(b); blk != nil && blk.Type == "CERTIFICATE" {
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("decoding certificate: %w", err)
		}
		return c.PublicKey, nil
	}
	k, err := cryptoutils.UnmarshalPEMToPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("decoding public key: %w", err)
	}
	if _, err := signatureHash(k); err != nil {
		return nil, err
	}
	return k, nil
}

// ParseCertificatesPEM decodes every CERTIFICATE block of a PEM file, in
// order.
func ParseCertificatesPEM(b []byte) ([]*x509.Certificate, error) {
	cs, err := cryptoutils.UnmarshalCertificatesFromPEM(b)
	if err != nil {
		return nil, fmt.Errorf("decoding certificates: %w", err)
	}
	if len(cs) == 0 {
		return nil, errors.New("decoding certificates: no CERTIFICATE block")
	}
	return cs, nil
}

// KeyFingerprint identifies a public key: lower-case hex SHA-256 of its DER
// (PKIX) encoding. hallmark writes it as the bundle's public-key hint.
func KeyFingerprint(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnsupportedKey, err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// KeyHint is the public-key hint model_signing (≥ 1.1) writes into bundles
// and hallmark too: lower-case hex SHA-256 of the key's PKIX PEM encoding
// (64-character lines, trailing newline).
func KeyHint(pub crypto.PublicKey) (string, error) {
	p, err := MarshalPublicKeyPEM(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(p)
	return hex.EncodeToString(sum[:]), nil
}

// keyDetails returns the Sigstore PublicKeyDetails name of a key, as
// model_signing 1.0.x records it.
func keyDetails(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return "PKIX_ECDSA_P256_SHA_256"
		case elliptic.P384():
			return "PKIX_ECDSA_P384_SHA_384"
		case elliptic.P521():
			return "PKIX_ECDSA_P521_SHA_512"
		}
	case ed25519.PublicKey:
		return "PKIX_ED25519"
	case *rsa.PublicKey:
		return fmt.Sprintf("PKIX_RSA_PKCS1V15_%d_SHA256", k.N.BitLen())
	}
	return ""
}

// signatureHash returns the hash a key signs with, matching model_signing
// and Sigstore's key details: ECDSA P-256 with SHA-256, P-384 with SHA-384
// (PKIX_ECDSA_P384_SHA_384), P-521 with SHA-512; Ed25519 signs the message
// itself (crypto.Hash(0)); RSA (verification only) with SHA-256.
func signatureHash(pub crypto.PublicKey) (crypto.Hash, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return crypto.SHA256, nil
		case elliptic.P384():
			return crypto.SHA384, nil
		case elliptic.P521():
			return crypto.SHA512, nil
		}
		return 0, fmt.Errorf("%w: ECDSA curve %s", ErrUnsupportedKey, k.Curve.Params().Name)
	case ed25519.PublicKey:
		return crypto.Hash(0), nil
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return 0, fmt.Errorf("%w: RSA key of %d bits", ErrUnsupportedKey, k.N.BitLen())
		}
		return crypto.SHA256, nil
	}
	return 0, fmt.Errorf("%w: %T", ErrUnsupportedKey, pub)
}

// keyAlgorithm names a key for records ("ecdsa-p384-sha384").
func keyAlgorithm(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		h, _ := signatureHash(k)
		return fmt.Sprintf("ecdsa-%s-%s", map[string]string{"P-256": "p256", "P-384": "p384", "P-521": "p521"}[k.Curve.Params().Name], map[crypto.Hash]string{crypto.SHA256: "sha256", crypto.SHA384: "sha384", crypto.SHA512: "sha512"}[h])
	case ed25519.PublicKey:
		return "ed25519"
	case *rsa.PublicKey:
		return fmt.Sprintf("rsa-%d-pkcs1v15-sha256", k.N.BitLen())
	}
	return fmt.Sprintf("%T", pub)
}
