package export

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/hallmark-dev/hallmark/ledger/tlogproof"
)

// One bundle verifies against its own checkpoint only: a server holding
// the log key could show each auditor a different history (a fork). An
// auditor who kept a checkpoint from an earlier export closes that gap
// offline: the next export carries the consistency proof from the kept
// checkpoint's size to its own (proofs/consistency.json), and Verify, given
// the kept checkpoint, checks that the bundle's tree extends it.

// ErrConsistencySize is wrapped by Build's refusal of a kept checkpoint's
// size that the export's checkpoint cannot extend.
var ErrConsistencySize = errors.New("invalid consistent_from_size")

// ConsistencyFile is proofs/consistency.json.
type ConsistencyFile struct {
	// FromSize and FromRoot are the tree the auditor kept a checkpoint of
	// (FromRoot is standard base64, as in a checkpoint); ToSize is the
	// bundle's checkpoint size.
	FromSize uint64 `json:"from_size"`
	ToSize   uint64 `json:"to_size"`
	FromRoot string `json:"from_root"`
	// Hashes is the RFC 6962 (section 2.1.2) consistency proof from
	// FromSize to ToSize, each hash standard base64; empty when the sizes
	// are equal.
	Hashes []string `json:"hashes"`
}

// A consistency proof between trees of at most 2^64 leaves has at most 65
// hashes (the inclusion proof of one node, plus that node): the file is a
// few kilobytes, and anything larger is refused before it is parsed.
const (
	maxConsistencyHashes = 65
	maxConsistencyBytes  = 16 << 10
)

var treeHasher = rfc6962.DefaultHasher

// buildConsistency returns proofs/consistency.json for the tree of size
// from and the checkpoint's tree (size to, root). The proof is checked
// before it is written: a bundle whose proof fails would only tell the
// auditor that the server's store is damaged, which Build can say itself.
func buildConsistency(src nodeSource, from, to uint64, root hash) ([]byte, error) {
	read := func(ids []compact.NodeID) ([][]byte, error) {
		out := make([][]byte, len(ids))
		for i, id := range ids {
			h, err := src(id.Level, id.Index)
			if err != nil {
				return nil, fmt.Errorf("consistency proof from %d to %d: node %d/%d: %w", from, to, id.Level, id.Index, err)
			}
			out[i] = h[:]
		}
		return out, nil
	}
	ns, err := proof.Consistency(from, to)
	if err != nil {
		return nil, fmt.Errorf("consistency proof from %d to %d: %w", from, to, err)
	}
	hs, err := read(ns.IDs)
	if err != nil {
		return nil, err
	}
	if hs, err = ns.Rehash(hs, treeHasher.HashChildren); err != nil {
		return nil, fmt.Errorf("consistency proof from %d to %d: %w", from, to, err)
	}
	fromRoot := root[:]
	if from < to {
		rs, err := read(compact.RangeNodes(0, from, nil))
		if err != nil {
			return nil, err
		}
		rng, err := (&compact.RangeFactory{Hash: treeHasher.HashChildren}).NewRange(0, from, rs)
		if err != nil {
			return nil, fmt.Errorf("root of tree size %d: %w", from, err)
		}
		if fromRoot, err = rng.GetRootHash(nil); err != nil {
			return nil, fmt.Errorf("root of tree size %d: %w", from, err)
		}
	}
	if err := proof.VerifyConsistency(treeHasher, from, to, hs, fromRoot, root[:]); err != nil {
		return nil, fmt.Errorf("the ledger's consistency proof from %d to %d does not verify against its checkpoint: %w", from, to, err)
	}
	f := ConsistencyFile{FromSize: from, ToSize: to, FromRoot: base64.StdEncoding.EncodeToString(fromRoot), Hashes: make([]string, len(hs))}
	for i, h := range hs {
		f.Hashes[i] = base64.StdEncoding.EncodeToString(h)
	}
	return encodeJSON(&f)
}

// consistencyProof is a parsed proofs/consistency.json whose proof
// verified against the bundle's checkpoint.
type consistencyProof struct {
	from     uint64
	fromRoot hash
	hashes   [][]byte
}

func decodeHash(s string) (hash, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return hash{}, fmt.Errorf("not standard base64: %v", err)
	}
	if len(b) != sha256.Size {
		return hash{}, fmt.Errorf("%d bytes, want %d", len(b), sha256.Size)
	}
	return hash(b), nil
}

// checkConsistencyFile checks proofs/consistency.json, when the bundle has
// one, against the bundle's checkpoint: it must prove that the tree it
// names (from_size, from_root) is a prefix of the checkpoint's. Whether
// that tree is the one the auditor saw is checkKept's question.
func (v *verifier) checkConsistencyFile(cp tlogproof.Checkpoint, cpOK bool) *consistencyProof {
	data, ok := v.b.Files[ConsistencyName]
	if !ok {
		return nil
	}
	v.begin(CheckConsistency)
	v.item()
	if !cpOK {
		v.skip("no verified checkpoint to check the proof against")
		return nil
	}
	if len(data) > maxConsistencyBytes {
		v.fail(ConsistencyName, 0, nil, "is %d bytes, more than the %d a consistency proof can need: not read", len(data), maxConsistencyBytes)
		return nil
	}
	var f ConsistencyFile
	if err := strictJSON(data, &f); err != nil {
		v.fail(ConsistencyName, 0, nil, "not a consistency proof: %v", err)
		return nil
	}
	switch {
	case f.ToSize != cp.Size:
		v.fail(ConsistencyName, 0, nil, "to_size is %d, the bundle's checkpoint has size %d: the proof is not for this checkpoint", f.ToSize, cp.Size)
		return nil
	case f.FromSize == 0 || f.FromSize > f.ToSize:
		v.fail(ConsistencyName, 0, nil, "from_size is %d, want 1 to to_size %d", f.FromSize, f.ToSize)
		return nil
	case len(f.Hashes) > maxConsistencyHashes:
		v.fail(ConsistencyName, 0, nil, "has %d hashes; a consistency proof has at most %d", len(f.Hashes), maxConsistencyHashes)
		return nil
	}
	p := &consistencyProof{from: f.FromSize, hashes: make([][]byte, len(f.Hashes))}
	var err error
	if p.fromRoot, err = decodeHash(f.FromRoot); err != nil {
		v.fail(ConsistencyName, 0, nil, "from_root: %v", err)
		return nil
	}
	for i, s := range f.Hashes {
		h, err := decodeHash(s)
		if err != nil {
			v.fail(ConsistencyName, 0, nil, "hash %d: %v", i+1, err)
			return nil
		}
		p.hashes[i] = h[:]
	}
	if err := proof.VerifyConsistency(treeHasher, p.from, cp.Size, p.hashes, p.fromRoot[:], cp.Root[:]); err != nil {
		v.fail(ConsistencyName, 0, nil, "does not prove that the tree of size %d with root %s is a prefix of the checkpoint's tree of size %d: %v",
			p.from, f.FromRoot, cp.Size, err)
		return nil
	}
	return p
}

// Consistency is what Verify found comparing the bundle's checkpoint with
// the one the auditor kept (VerifyOptions.KeptCheckpoint).
type Consistency struct {
	KeptSize, BundleSize uint64
	// How says what settled it; empty when the check failed.
	How string
}

func b64(h hash) string { return base64.StdEncoding.EncodeToString(h[:]) }

// checkKept checks that the bundle's checkpoint extends the checkpoint the
// auditor kept: same log key and origin, then equal roots at equal sizes,
// or the bundle's consistency proof from the kept size, or the root of the
// kept size recomputed from the bundle's proved entries when they start at
// index 0.
func (v *verifier) checkKept(lv note.Verifier, man *Manifest, cp tlogproof.Checkpoint, cpOK bool, cons *consistencyProof, leaves map[uint64]hash, proved map[uint64]bool) {
	if v.opts.KeptCheckpoint == nil {
		return
	}
	v.begin(CheckKept)
	v.item()
	name := v.opts.KeptCheckpointName
	switch {
	case lv == nil:
		v.skip("no usable log key")
		return
	case !cpOK:
		v.skip("no verified checkpoint of the bundle to compare with")
		return
	}
	keyWhat := "the log key given"
	if v.rep.TOFU {
		keyWhat = "the bundle's own log key (trusted on first use)"
	}
	kept, err := tlogproof.OpenCheckpoint(v.opts.KeptCheckpoint, cp.Origin, lv)
	switch {
	case errors.Is(err, tlogproof.ErrSignature):
		v.fail(name, 0, nil, "is not signed by %s, %s, which the bundle is verified with: %v", keyWhat, lv.Name(), err)
		return
	case errors.Is(err, tlogproof.ErrOrigin):
		v.fail(name, 0, nil, "is not a checkpoint of the bundle's log %q: %v", cp.Origin, err)
		return
	case err != nil:
		v.fail(name, 0, nil, "not a signed checkpoint: %v", err)
		return
	}
	res := &Consistency{KeptSize: kept.Size, BundleSize: cp.Size}
	v.rep.Consistency = res
	fork := "both are signed by the log key, so the log showed you two different histories (a fork)"
	k, n := kept.Size, cp.Size
	switch {
	case k > n:
		v.fail(name, 0, nil, "the bundle is older than the checkpoint you kept: yours has size %d, the bundle's checkpoint size %d. A log only grows: export again, and if the server's latest checkpoint is still smaller than %d, the log was rolled back", k, n, k)
	case k == n && kept.Root != cp.Root:
		v.fail(CheckpointName, 0, nil, "has root %s at size %d, your kept checkpoint (%s) has root %s at the same size: %s", b64(cp.Root), n, name, b64(kept.Root), fork)
	case k == n:
		res.How = "same size and root"
	case k == 0:
		// Every tree extends the empty one, whose root is fixed.
		if empty := hash(sha256.Sum256(nil)); kept.Root != empty {
			v.fail(name, 0, nil, "has size 0 but root %s, not the empty tree's %s", b64(kept.Root), b64(empty))
			return
		}
		res.How = "every tree extends the empty tree"
	case cons != nil && cons.from == k:
		if err := proof.VerifyConsistency(treeHasher, k, n, cons.hashes, kept.Root[:], cp.Root[:]); err != nil {
			// The proof verified from its own from_root (checkConsistencyFile),
			// so the kept root is not the log's root at that size.
			v.fail(ConsistencyName, 0, nil, "proves that the bundle's checkpoint extends a tree of size %d with root %s, but your kept checkpoint (%s) has root %s at that size: %s",
				k, b64(cons.fromRoot), name, b64(kept.Root), fork)
			return
		}
		res.How = fmt.Sprintf("the bundle's consistency proof from size %d to %d verifies", k, n)
	case man.Scope.FirstIndex == 0 && man.Scope.LastIndex >= k-1:
		root, ok := provedRoot(k, leaves, proved)
		if !ok {
			v.fail(name, 0, nil, "entries 0 to %d are in the bundle but not all are proved in its checkpoint (see %s): the root of size %d cannot be recomputed", k-1, CheckInclusion, k)
			return
		}
		if root != kept.Root {
			v.fail(EntriesName, 0, nil, "entries 0 to %d give root %s for tree size %d, your kept checkpoint (%s) has root %s: %s", k-1, b64(root), k, name, b64(kept.Root), fork)
			return
		}
		res.How = fmt.Sprintf("root of size %d recomputed from the bundle's entries 0 to %d", k, k-1)
	default:
		has := "carries no consistency proof"
		if cons != nil {
			has = fmt.Sprintf("carries a consistency proof from size %d, not %d,", cons.from, k)
		} else if v.has(ConsistencyName) {
			has = "carries a consistency proof that does not verify (see " + CheckConsistency + "),"
		}
		v.fail(name, 0, nil, "cannot be compared with the bundle offline: the bundle (checkpoint size %d) %s and its entries %d to %d do not cover 0 to %d. Export again with `hallmark audit export --consistent-with %s` (or export from index 0)",
			n, has, man.Scope.FirstIndex, man.Scope.LastIndex, k-1, name)
	}
}

// provedRoot returns the root of the tree of size k from the leaf hashes of
// entries 0 to k-1, if every one of them is proved in the checkpoint.
func provedRoot(k uint64, leaves map[uint64]hash, proved map[uint64]bool) (hash, bool) {
	rng := (&compact.RangeFactory{Hash: treeHasher.HashChildren}).NewEmptyRange(0)
	for i := range k {
		l, ok := leaves[i]
		if !ok || !proved[i] {
			return hash{}, false
		}
		if err := rng.Append(l[:], nil); err != nil {
			return hash{}, false
		}
	}
	r, err := rng.GetRootHash(nil)
	if err != nil || len(r) != sha256.Size {
		return hash{}, false
	}
	return hash(r), true
}

// consistencyMarkdown is VERIFY.md's section on proofs/consistency.json,
// present only in bundles that have the file.
func consistencyMarkdown(m *Manifest) string {
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("\n## 7. This checkpoint extends one you kept\n\n")
	p("`%s` is the RFC 6962 consistency proof from the log's tree of size `from_size` (root `from_root`,\n", ConsistencyName)
	p("base64) to this bundle's checkpoint (`to_size`, %d); `hashes` are base64, in RFC 6962 order. It shows that\n", m.Log.CheckpointSize)
	p("the history in this bundle extends that tree, which matters only for a root you obtained yourself:\n\n")
	p("    hallmark audit verify <this bundle> --log-key <key> --previous-checkpoint <the checkpoint you kept>\n\n")
	p("checks that your kept checkpoint is signed by the same log key, names the same log, and that the proof\n")
	p("leads from its root to this checkpoint's. By hand: your checkpoint's size must be `from_size` and its root\n")
	p("`from_root`, and the proof must verify (docs/auditor-guide.md has a short script).\n")
	return b.String()
}
