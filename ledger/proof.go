package ledger

import (
	"fmt"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// nodeReader fetches tree nodes from stored tiles, caching the tiles it
// read so that one proof reads each tile once.
type nodeReader struct {
	l     *Log
	tiles map[[2]uint64][]byte
}

// node returns the hash of the perfect subtree node (level, index); it must
// lie inside the committed tree. A node between tile levels is recomputed
// from the at most 128 tile hashes below it.
func (r *nodeReader) node(level uint, index uint64) (Hash, error) {
	tl, sub := uint64(level/TileHeight), level%TileHeight
	first := index << sub
	k := [2]uint64{tl, first / TileWidth}
	t, ok := r.tiles[k]
	if !ok {
		b, err := r.l.getMeta(tileKey(tl, k[1]))
		if err != nil {
			return Hash{}, fmt.Errorf("reading %s: %w", TilePath(tl, k[1], 0), err)
		}
		if r.tiles == nil {
			r.tiles = map[[2]uint64][]byte{}
		}
		r.tiles[k], t = b, b
	}
	pos, n := first%TileWidth, uint64(1)<<sub
	if uint64(len(t)) < (pos+n)*32 {
		return Hash{}, fmt.Errorf("reading node %d/%d: %s holds %d hashes, need %d: %w", level, index, TilePath(tl, k[1], 0), len(t)/32, pos+n, ErrTampered)
	}
	hs := make([]Hash, n)
	for i := range hs {
		hs[i] = Hash(t[(pos+uint64(i))*32:])
	}
	return subtreeRoot(hs), nil
}

func (r *nodeReader) nodes(ids []compact.NodeID) ([][]byte, error) {
	out := make([][]byte, len(ids))
	for i, id := range ids {
		h, err := r.node(id.Level, id.Index)
		if err != nil {
			return nil, err
		}
		out[i] = h[:]
	}
	return out, nil
}

// LeafHash returns the stored leaf hash of entry index.
func (l *Log) LeafHash(index uint64) (Hash, error) {
	if l.isClosed() {
		return Hash{}, ErrClosed
	}
	if index >= l.Size() {
		return Hash{}, fmt.Errorf("leaf %d: %w", index, ErrNotFound)
	}
	r := nodeReader{l: l}
	return r.node(0, index)
}

// RootAt returns the root of the tree of the given size (at most Size()).
func (l *Log) RootAt(size uint64) (Hash, error) {
	if l.isClosed() {
		return Hash{}, ErrClosed
	}
	h := l.head.Load()
	switch {
	case size > h.size:
		return Hash{}, fmt.Errorf("root at %d (tree size %d): %w", size, h.size, ErrNotFound)
	case size == h.size:
		return h.root, nil
	case size == 0:
		return emptyRoot, nil
	}
	r := nodeReader{l: l}
	hs, err := r.nodes(compact.RangeNodes(0, size, nil))
	if err != nil {
		return Hash{}, fmt.Errorf("root at %d: %w", size, err)
	}
	rng, err := rangeFactory.NewRange(0, size, hs)
	if err != nil {
		return Hash{}, fmt.Errorf("root at %d: %w", size, err)
	}
	root, err := rng.GetRootHash(nil)
	if err != nil {
		return Hash{}, fmt.Errorf("root at %d: %w", size, err)
	}
	return Hash(root), nil
}

// InclusionProof returns the RFC 6962 inclusion proof of leaf index in the
// tree of the given size (index < size <= Size()).
func (l *Log) InclusionProof(index, size uint64) ([]Hash, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	if cur := l.Size(); size > cur || index >= size {
		return nil, fmt.Errorf("inclusion proof of %d in tree size %d (current %d): %w", index, size, cur, ErrNotFound)
	}
	ns, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, fmt.Errorf("inclusion proof of %d in %d: %w", index, size, err)
	}
	return l.buildProof(ns)
}

// ConsistencyProof returns the RFC 6962 consistency proof between tree
// sizes from and to (from <= to <= Size()).
func (l *Log) ConsistencyProof(from, to uint64) ([]Hash, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	if cur := l.Size(); to > cur || from > to {
		return nil, fmt.Errorf("consistency proof %d to %d (current %d): %w", from, to, cur, ErrNotFound)
	}
	ns, err := proof.Consistency(from, to)
	if err != nil {
		return nil, fmt.Errorf("consistency proof %d to %d: %w", from, to, err)
	}
	return l.buildProof(ns)
}

func (l *Log) buildProof(ns proof.Nodes) ([]Hash, error) {
	r := nodeReader{l: l}
	hs, err := r.nodes(ns.IDs)
	if err != nil {
		return nil, fmt.Errorf("building proof: %w", err)
	}
	hs, err = ns.Rehash(hs, HashChildren)
	if err != nil {
		return nil, fmt.Errorf("building proof: %w", err)
	}
	out := make([]Hash, len(hs))
	for i, h := range hs {
		out[i] = Hash(h)
	}
	return out, nil
}

var hasher = rfc6962.DefaultHasher

func hashSlices(hs []Hash) [][]byte {
	out := make([][]byte, len(hs))
	for i := range hs {
		out[i] = hs[i][:]
	}
	return out
}

// VerifyInclusion checks that leaf is at index in the tree of size with
// root, by proof. Failures wrap ErrInvalidProof.
func VerifyInclusion(index, size uint64, leaf Hash, p []Hash, root Hash) error {
	if err := proof.VerifyInclusion(hasher, index, size, leaf[:], hashSlices(p), root[:]); err != nil {
		return fmt.Errorf("%w: inclusion of %d in %d: %w", ErrInvalidProof, index, size, err)
	}
	return nil
}

// VerifyConsistency checks that the tree of size2 with root2 extends the
// tree of size1 with root1, by proof. Failures wrap ErrInvalidProof.
func VerifyConsistency(size1, size2 uint64, p []Hash, root1, root2 Hash) error {
	if err := proof.VerifyConsistency(hasher, size1, size2, hashSlices(p), root1[:], root2[:]); err != nil {
		return fmt.Errorf("%w: consistency %d to %d: %w", ErrInvalidProof, size1, size2, err)
	}
	return nil
}
