// Package ledger is hallmark's append-only, verifiable log of opaque entries.
//
// Entries are committed through a single sequencer goroutine that gathers
// concurrent callers into one synced pebble batch (group commit). An index
// MUST NOT be returned to a caller until its entry, the Merkle tiles that
// cover it, the tree state and a signed checkpoint for the batch are durably
// committed together. Callers may put their own state writes (the registry's
// projection) into the same batch and check preconditions against committed
// state inside the sequencer, so that a state change and the entry that
// records it commit atomically or not at all.
//
// The Merkle tree is RFC 6962/9162 (github.com/transparency-dev/merkle),
// stored as C2SP tlog-tiles (hash tiles of 256 hashes, entry bundles of 256
// entries) inside pebble, and served read-only over HTTP at the tlog-tiles
// paths by Handler. Checkpoints are C2SP tlog-checkpoint signed notes with an
// Ed25519 key kept in the data directory. The stored entry bytes are what is
// hashed: entries are never re-encoded.
//
// VerifyStore re-hashes every stored entry, rebuilds the tree and checks every
// tile, the tree state and every stored checkpoint, on a possibly damaged
// store opened read-only; it names the first bad object. The key layout and
// the reasons behind it are in docs/design/ledger-storage.md.
package ledger

import "errors"

var (
	// ErrNotFound is returned when a state key, entry, tile or checkpoint does
	// not exist (for tiles and entries: lies beyond the current tree).
	ErrNotFound = errors.New("not found")
	// ErrEntryTooLarge is returned by Tx.Add for an entry over MaxEntrySize
	// bytes; it is wrapped with the entry's size.
	ErrEntryTooLarge = errors.New("entry too large")
	// ErrClosed is returned by operations on a closed Log, and to callers
	// whose Append was still queued when the Log was closed.
	ErrClosed = errors.New("ledger closed")
	// ErrTampered is matched (errors.Is) by every *VerifyError: a stored
	// object is missing, malformed or does not match the rest of the store.
	ErrTampered = errors.New("ledger store tampered or damaged")
	// ErrOriginMismatch is returned by Open when Options.Origin differs from
	// the origin the store was created with, or from the key's name.
	ErrOriginMismatch = errors.New("origin mismatch")
	// ErrInconsistent is returned by Open when the stored tree state does not
	// match the latest stored checkpoint; run `hallmark ledger verify`.
	ErrInconsistent = errors.New("tree state does not match latest checkpoint")
	// ErrInvalidProof is returned by VerifyInclusion and VerifyConsistency
	// when a proof does not prove what it claims.
	ErrInvalidProof = errors.New("invalid proof")
	// ErrBadPath is returned by ParseTilePath for a malformed tile path.
	ErrBadPath = errors.New("malformed tile path")
	// ErrBadBundle is returned by DecodeEntryBundle for malformed bundles.
	ErrBadBundle = errors.New("malformed entry bundle")
	// ErrTxDone is returned by Tx methods used after the function that
	// received the Tx returned.
	ErrTxDone = errors.New("transaction already finished")
)
