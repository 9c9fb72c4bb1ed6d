package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Key layout inside pebble (see docs/design/ledger-storage.md). One-byte
// prefixes keep each kind in its own contiguous key range so that scans
// never mix kinds, and big-endian numbers sort in numeric order.
const (
	pfxMeta       = 'm' // m<name>: origin, tree state, state generation
	pfxEntry      = 'e' // e<index u64>: an entry of the current partial bundle
	pfxBundle     = 'b' // b<bundle u64>: a full entry bundle
	pfxTile       = 't' // t<level u8><index u64>: a hash tile (full or the partial one)
	pfxCheckpoint = 'c' // c<size u64>: prev size u64 || signed checkpoint note
	pfxState      = 's' // s<generation u64><caller key>: state keyspace
)

var (
	keyOrigin    = []byte("morigin")
	keyTreeState = []byte("mtree")
	keyStateGen  = []byte("mstategen")
)

func u64Key(pfx byte, n uint64) []byte {
	k := make([]byte, 9)
	k[0] = pfx
	binary.BigEndian.PutUint64(k[1:], n)
	return k
}

func entryKey(i uint64) []byte      { return u64Key(pfxEntry, i) }
func bundleKey(k uint64) []byte     { return u64Key(pfxBundle, k) }
func checkpointKey(s uint64) []byte { return u64Key(pfxCheckpoint, s) }

func tileKey(level, index uint64) []byte {
	k := make([]byte, 10)
	k[0] = pfxTile
	k[1] = byte(level)
	binary.BigEndian.PutUint64(k[2:], index)
	return k
}

func stateKey(gen uint64, key []byte) []byte {
	k := make([]byte, 9, 9+len(key))
	k[0] = pfxState
	binary.BigEndian.PutUint64(k[1:], gen)
	return append(k, key...)
}

// prefixEnd returns the smallest key greater than every key with prefix p,
// or nil if there is none.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}

// treeState is the durable summary of the tree, rewritten by every batch:
// the size, the root and the compact range of [0, size) (the roots of the
// perfect subtrees, left to right), from which the sequencer continues.
type treeState struct {
	size   uint64
	root   Hash
	hashes []Hash
}

const treeStateVersion = 1

func (s treeState) encode() []byte {
	b := make([]byte, 0, 1+8+32+1+32*len(s.hashes))
	b = append(b, treeStateVersion)
	b = binary.BigEndian.AppendUint64(b, s.size)
	b = append(b, s.root[:]...)
	b = append(b, byte(len(s.hashes)))
	for _, h := range s.hashes {
		b = append(b, h[:]...)
	}
	return b
}

var errBadTreeState = errors.New("malformed tree state")

func decodeTreeState(b []byte) (treeState, error) {
	var s treeState
	if len(b) < 42 {
		return s, fmt.Errorf("%w: %d bytes, want at least 42", errBadTreeState, len(b))
	}
	if b[0] != treeStateVersion {
		return s, fmt.Errorf("%w: version %d, want %d", errBadTreeState, b[0], treeStateVersion)
	}
	s.size = binary.BigEndian.Uint64(b[1:])
	copy(s.root[:], b[9:41])
	n := int(b[41])
	if len(b) != 42+32*n {
		return s, fmt.Errorf("%w: %d bytes for %d hashes, want %d", errBadTreeState, len(b), n, 42+32*n)
	}
	if want := compactSize(s.size); n != want {
		return s, fmt.Errorf("%w: %d compact range hashes for size %d, want %d", errBadTreeState, n, s.size, want)
	}
	s.hashes = make([]Hash, n)
	for i := range s.hashes {
		copy(s.hashes[i][:], b[42+32*i:])
	}
	return s, nil
}

// compactSize is the number of perfect subtrees covering [0, size).
func compactSize(size uint64) int {
	n := 0
	for ; size != 0; size &= size - 1 {
		n++
	}
	return n
}

// checkpoint records are prev size || note; prev chains each stored
// checkpoint to the one before it so that a deleted one is noticed.
func encodeCheckpointRecord(prev uint64, note []byte) []byte {
	b := make([]byte, 8, 8+len(note))
	binary.BigEndian.PutUint64(b, prev)
	return append(b, note...)
}

func decodeCheckpointRecord(b []byte) (prev uint64, note []byte, err error) {
	if len(b) < 8 {
		return 0, nil, fmt.Errorf("checkpoint record of %d bytes, want at least 8", len(b))
	}
	return binary.BigEndian.Uint64(b), b[8:], nil
}
