package ledger

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// Hash is a SHA-256 Merkle tree hash (leaf or interior node).
type Hash [32]byte

// String returns the lower-case hex encoding of h.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// MarshalText encodes h as lower-case hex.
func (h Hash) MarshalText() ([]byte, error) {
	b := make([]byte, 64)
	hex.Encode(b, h[:])
	return b, nil
}

// UnmarshalText decodes 64 hex digits into h.
func (h *Hash) UnmarshalText(b []byte) error {
	if len(b) != 64 {
		return fmt.Errorf("parsing hash: got %d hex digits, want 64", len(b))
	}
	var x Hash
	if _, err := hex.Decode(x[:], b); err != nil {
		return fmt.Errorf("parsing hash: %w", err)
	}
	*h = x
	return nil
}

// LeafHashOf returns the RFC 6962 leaf hash SHA-256(0x00 || entry).
func LeafHashOf(entry []byte) Hash {
	d := sha256.New()
	d.Write([]byte{0})
	d.Write(entry)
	var h Hash
	d.Sum(h[:0])
	return h
}

// nodeHash returns the RFC 6962 interior hash SHA-256(0x01 || l || r).
func nodeHash(l, r Hash) Hash {
	var buf [65]byte
	buf[0] = 1
	copy(buf[1:33], l[:])
	copy(buf[33:], r[:])
	return sha256.Sum256(buf[:])
}

// HashChildren is the RFC 6962 interior hash SHA-256(0x01 || l || r) in the
// []byte form the merkle module's proof and range code takes, without the
// rfc6962 hasher's per-call digest allocation: proof rebuilding calls it
// once per level per proof.
func HashChildren(l, r []byte) []byte {
	var buf [65]byte
	buf[0] = 1
	copy(buf[1:33], l)
	copy(buf[33:], r)
	h := sha256.Sum256(buf[:])
	return h[:]
}

// emptyRoot is the root of the empty tree, SHA-256 of nothing.
var emptyRoot = Hash(sha256.Sum256(nil))

// subtreeRoot returns the root of a perfect subtree whose level-0 hashes
// are hs (len(hs) a power of two, at least 1). It works in place on a copy.
func subtreeRoot(hs []Hash) Hash {
	n := len(hs)
	if n == 1 {
		return hs[0]
	}
	var buf [256]Hash
	work := buf[:0]
	if n > len(buf) {
		work = make([]Hash, 0, n)
	}
	work = append(work, hs...)
	for n > 1 {
		for i := 0; i < n/2; i++ {
			work[i] = nodeHash(work[2*i], work[2*i+1])
		}
		n /= 2
	}
	return work[0]
}
