package export

import (
	"crypto/sha256"
	"fmt"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
)

type hash = [sha256.Size]byte

// nodeSource returns the hash of a perfect subtree node from the log.
type nodeSource func(level uint, index uint64) (hash, error)

// rangeProver computes the inclusion proofs of every leaf of [first, end)
// in the tree of size n. Nodes inside the range are hashed in memory from
// the leaves; the few nodes that reach outside it (at most a handful per
// level, shared by every proof) are read from the log once each. Reading
// every proof from the log instead would rehash up to 127 tile hashes per
// level per proof.
type rangeProver struct {
	first, end, n uint64
	// levels[k][j] is node (k, lo_k+j) for the nodes wholly inside the
	// range, lo_k being first rounded up to a multiple of 2^k.
	levels [][]hash
	lo     []uint64
	src    nodeSource
	cache  map[compact.NodeID]hash
}

func newRangeProver(first uint64, leaves []hash, n uint64, src nodeSource) *rangeProver {
	p := &rangeProver{first: first, end: first + uint64(len(leaves)), n: n, src: src, cache: map[compact.NodeID]hash{}}
	p.levels = append(p.levels, leaves)
	p.lo = append(p.lo, first)
	var buf [65]byte
	buf[0] = 1
	for k := 0; ; k++ {
		cur, lo := p.levels[k], p.lo[k]
		hi := lo + uint64(len(cur))
		nlo, nhi := (lo+1)/2, hi/2
		if nhi <= nlo {
			break
		}
		next := make([]hash, nhi-nlo)
		for j := nlo; j < nhi; j++ {
			copy(buf[1:33], cur[2*j-lo][:])
			copy(buf[33:], cur[2*j+1-lo][:])
			next[j-nlo] = sha256.Sum256(buf[:])
		}
		p.levels = append(p.levels, next)
		p.lo = append(p.lo, nlo)
	}
	return p
}

func (p *rangeProver) node(id compact.NodeID) (hash, error) {
	if int(id.Level) < len(p.levels) {
		lo := p.lo[id.Level]
		if id.Index >= lo && id.Index-lo < uint64(len(p.levels[id.Level])) {
			return p.levels[id.Level][id.Index-lo], nil
		}
	}
	if h, ok := p.cache[id]; ok {
		return h, nil
	}
	h, err := p.src(id.Level, id.Index)
	if err != nil {
		return hash{}, err
	}
	p.cache[id] = h
	return h, nil
}

// proof returns the inclusion proof of leaf index (first <= index < end).
func (p *rangeProver) proof(index uint64) ([]hash, error) {
	ns, err := proof.Inclusion(index, p.n)
	if err != nil {
		return nil, err
	}
	hs := make([][]byte, len(ns.IDs))
	for i, id := range ns.IDs {
		h, err := p.node(id)
		if err != nil {
			return nil, fmt.Errorf("inclusion proof of entry %d: node %d/%d: %w", index, id.Level, id.Index, err)
		}
		hs[i] = h[:]
	}
	hs, err = ns.Rehash(hs, ledger.HashChildren)
	if err != nil {
		return nil, fmt.Errorf("inclusion proof of entry %d: %w", index, err)
	}
	out := make([]hash, len(hs))
	for i := range hs {
		out[i] = hash(hs[i])
	}
	return out, nil
}
