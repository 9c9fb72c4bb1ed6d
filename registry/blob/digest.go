package blob

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// DigestPrefix is the algorithm prefix of a digest's text form.
const DigestPrefix = "sha256:"

// Digest is the SHA-256 of a blob's or a chunk's bytes. It is comparable and
// usable as a map key; its zero value is the digest of nothing in particular
// (not of the empty blob — see EmptyDigest).
type Digest [sha256.Size]byte

// EmptyDigest is the digest of the empty blob.
var EmptyDigest = Digest(sha256.Sum256(nil))

// Sum returns the digest of b.
func Sum(b []byte) Digest { return Digest(sha256.Sum256(b)) }

// String returns the digest as "sha256:" followed by 64 lower-case hex digits.
func (d Digest) String() string { return DigestPrefix + hex.EncodeToString(d[:]) }

// Hex returns the 64 lower-case hex digits of the digest.
func (d Digest) Hex() string { return hex.EncodeToString(d[:]) }

// MarshalText implements encoding.TextMarshaler with the String form.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with ParseDigest's rules.
func (d *Digest) UnmarshalText(b []byte) error {
	p, err := ParseDigest(string(b))
	if err != nil {
		return err
	}
	*d = p
	return nil
}

// ParseDigest parses "sha256:" followed by exactly 64 lower-case hex digits.
// It is strict on purpose: a digest has exactly one spelling, so it can be
// compared as text (upper-case hex, other algorithms, whitespace and missing
// prefixes are refused with ErrInvalidDigest).
func ParseDigest(s string) (Digest, error) {
	var d Digest
	if len(s) != len(DigestPrefix)+2*sha256.Size || s[:len(DigestPrefix)] != DigestPrefix {
		return d, fmt.Errorf("%w: %q: want %q followed by 64 lower-case hex digits", ErrInvalidDigest, clip(s), DigestPrefix)
	}
	h := s[len(DigestPrefix):]
	for i := 0; i < len(h); i++ {
		c := h[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return d, fmt.Errorf("%w: %q: character %d is not a lower-case hex digit", ErrInvalidDigest, clip(s), len(DigestPrefix)+i)
		}
	}
	if _, err := hex.Decode(d[:], []byte(h)); err != nil {
		return Digest{}, fmt.Errorf("%w: %q: %w", ErrInvalidDigest, clip(s), err)
	}
	return d, nil
}

// clip bounds untrusted text quoted in error messages.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
