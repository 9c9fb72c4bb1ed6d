package ledger

import (
	"context"
	"errors"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// refTree is the independent implementation: x/mod/sumdb/tlog over an
// in-memory list of stored hashes.
type refTree struct {
	stored []tlog.Hash
	size   int
}

func (r *refTree) add(entry []byte) {
	hs, err := tlog.StoredHashes(int64(r.n()), entry, r)
	if err != nil {
		panic(err)
	}
	r.stored = append(r.stored, hs...)
	r.size++
}

func (r *refTree) n() int { return r.size }

func (r *refTree) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		out[i] = r.stored[x]
	}
	return out, nil
}

func TestRFC6962Vectors(t *testing.T) {
	// The 8-leaf example that RFC 6962 implementations test against (the
	// same leaves and roots as transparency-dev/merkle/testonly and the
	// certificate-transparency C++ and Go test suites).
	leaves := [][]byte{
		{}, {0x00}, {0x10}, {0x20, 0x21}, {0x30, 0x31},
		{0x40, 0x41, 0x42, 0x43}, {0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57},
		{0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f},
	}
	roots := []string{
		"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
		"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
		"aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
		"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
		"4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
		"76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
		"ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
		"5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
	}
	if got, want := LeafHashOf(nil).String(), "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"; got != want {
		t.Fatalf("leaf hash of empty entry: got %s, want %s", got, want)
	}
	if got, want := emptyRoot.String(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"; got != want {
		t.Fatalf("empty root: got %s, want %s", got, want)
	}
	l, _ := openTest(t, Options{})
	for i, e := range leaves {
		r, err := l.AppendEntry(context.Background(), e)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Root.String(); got != roots[i] {
			t.Errorf("root of size %d: got %s, want %s", i+1, got, roots[i])
		}
	}
}

// checkAgainstRef cross-checks roots, inclusion and consistency proofs of l
// at size n against the reference, including corrupted proofs.
func checkAgainstRef(t *testing.T, l *Log, ref *refTree, n uint64, probe []uint64) {
	t.Helper()
	th, err := tlog.TreeHash(int64(n), ref)
	if err != nil {
		t.Fatal(err)
	}
	root, err := l.RootAt(n)
	if err != nil {
		t.Fatalf("RootAt(%d): %v", n, err)
	}
	if root != Hash(th) {
		t.Fatalf("root at %d: got %s, want %s", n, root, Hash(th))
	}
	for _, i := range probe {
		if i >= n {
			continue
		}
		p, err := l.InclusionProof(i, n)
		if err != nil {
			t.Fatalf("InclusionProof(%d, %d): %v", i, n, err)
		}
		rp, err := tlog.ProveRecord(int64(n), int64(i), ref)
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != len(rp) {
			t.Fatalf("inclusion %d in %d: got %d hashes, want %d", i, n, len(p), len(rp))
		}
		for j := range p {
			if p[j] != Hash(rp[j]) {
				t.Fatalf("inclusion %d in %d: hash %d differs from tlog", i, n, j)
			}
		}
		leaf := LeafHashOf(testEntry(i))
		if err := VerifyInclusion(i, n, leaf, p, root); err != nil {
			t.Fatalf("VerifyInclusion(%d, %d): %v", i, n, err)
		}
		if err := tlog.CheckRecord(rp, int64(n), th, int64(i), tlog.Hash(leaf)); err != nil {
			t.Fatalf("tlog.CheckRecord(%d, %d): %v", i, n, err)
		}
		if len(p) > 0 {
			bad := append([]Hash(nil), p...)
			bad[len(bad)/2][3] ^= 1
			if err := VerifyInclusion(i, n, leaf, bad, root); !errors.Is(err, ErrInvalidProof) {
				t.Fatalf("corrupted inclusion %d in %d: got %v, want ErrInvalidProof", i, n, err)
			}
			if err := VerifyInclusion(i, n, leaf, p[:len(p)-1], root); !errors.Is(err, ErrInvalidProof) {
				t.Fatalf("short inclusion %d in %d: got %v, want ErrInvalidProof", i, n, err)
			}
		}
		if err := VerifyInclusion(i, n, LeafHashOf([]byte("other")), p, root); !errors.Is(err, ErrInvalidProof) {
			t.Fatalf("wrong leaf %d in %d: got %v, want ErrInvalidProof", i, n, err)
		}
		// Consistency from m = i+1 to n.
		m := i + 1
		cp, err := l.ConsistencyProof(m, n)
		if err != nil {
			t.Fatalf("ConsistencyProof(%d, %d): %v", m, n, err)
		}
		rtp, err := tlog.ProveTree(int64(n), int64(m), ref)
		if err != nil {
			t.Fatal(err)
		}
		if len(cp) != len(rtp) {
			t.Fatalf("consistency %d to %d: got %d hashes, want %d", m, n, len(cp), len(rtp))
		}
		for j := range cp {
			if cp[j] != Hash(rtp[j]) {
				t.Fatalf("consistency %d to %d: hash %d differs from tlog", m, n, j)
			}
		}
		r1, err := l.RootAt(m)
		if err != nil {
			t.Fatal(err)
		}
		th1, _ := tlog.TreeHash(int64(m), ref)
		if r1 != Hash(th1) {
			t.Fatalf("root at %d: got %s, want %s", m, r1, Hash(th1))
		}
		if err := VerifyConsistency(m, n, cp, r1, root); err != nil {
			t.Fatalf("VerifyConsistency(%d, %d): %v", m, n, err)
		}
		if err := tlog.CheckTree(rtp, int64(n), th, int64(m), th1); err != nil {
			t.Fatalf("tlog.CheckTree(%d, %d): %v", m, n, err)
		}
		if len(cp) > 0 {
			bad := append([]Hash(nil), cp...)
			bad[0][0] ^= 0x80
			if err := VerifyConsistency(m, n, bad, r1, root); !errors.Is(err, ErrInvalidProof) {
				t.Fatalf("corrupted consistency %d to %d: got %v, want ErrInvalidProof", m, n, err)
			}
		}
		if m < n {
			if err := VerifyConsistency(m, n, cp, root, root); !errors.Is(err, ErrInvalidProof) {
				t.Fatalf("consistency %d to %d with wrong old root: got %v, want ErrInvalidProof", m, n, err)
			}
		}
	}
}

func TestProofsAgainstTlog(t *testing.T) {
	l, _ := openTest(t, Options{})
	ref := &refTree{}
	// Every size 1..300, appended one batch at a time with varying batch
	// sizes so tiles are written partial then full.
	for n := uint64(1); n <= 300; n++ {
		appendN(t, l, 1, 1)
		ref.add(testEntry(n - 1))
		checkAgainstRef(t, l, ref, n, []uint64{0, n / 2, n - 1, n - 2, 254, 255, 256})
		// Older sizes stay provable as the tree grows.
		if n > 7 {
			checkAgainstRef(t, l, ref, n-7, []uint64{0, (n - 7) / 3})
		}
	}
}

func TestProofsLargeSizes(t *testing.T) {
	if testing.Short() {
		t.Skip("large tree")
	}
	l, _ := openTest(t, Options{})
	ref := &refTree{}
	sizes := []uint64{511, 512, 513, 65535, 65536, 65537, 70001}
	var n uint64
	for _, s := range sizes {
		for n < s {
			k := min(s-n, 4000)
			appendN(t, l, int(k), int(k))
			for i := n; i < n+k; i++ {
				ref.add(testEntry(i))
			}
			n += k
		}
		checkAgainstRef(t, l, ref, s, []uint64{0, 1, 255, 256, 257, s / 2, 65535, 65536, s - 2, s - 1})
	}
}
