package vram

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/vramseal/vramseal/seal"
)

func tlogStoredIndex(level int, n int64) int64 { return tlog.StoredHashIndex(level, n) }

func testLeaves(n int64) []seal.Hash {
	out := make([]seal.Hash, n)
	for i := range out {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], uint64(i))
		out[i] = sha256.Sum256(b[:])
	}
	return out
}

// The multiproof passes on intact trees of every shape, fails whenever a
// sampled leaf's stored hash changed, and fails no check that one tlog
// inclusion proof per leaf would pass (it reads only nodes those proofs
// read; it recomputes the interior nodes on the sampled paths instead of
// reading them).
func TestProveAllAgainstInclusionProofs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int64{1, 2, 3, 5, 7, 8, 13, 64, 100, 1000, 1024, 1025} {
		leaves := testLeaves(n)
		tree, err := newLeafTree(leaves)
		if err != nil {
			t.Fatal(err)
		}
		root := seal.Root(leaves)
		for trial := range 20 {
			k := 1 + rng.IntN(int(min(n, 16)))
			chunks := make([]int64, k)
			for i := range chunks {
				chunks[i] = rng.Int64N(n)
			}
			if err := tree.proveAll(chunks, root); err != nil {
				t.Fatalf("n=%d chunks %v: proveAll of an intact tree = %v", n, chunks, err)
			}
			// Change one stored hash: the multiproof must fail exactly
			// when some single inclusion proof fails.
			x := rng.IntN(len(tree.stored))
			if trial%2 == 0 {
				x = int(tlogStoredIndex(0, chunks[rng.IntN(k)])) // a sampled leaf
			}
			saved := tree.stored[x]
			tree.stored[x][trial%32] ^= 1
			single, sampledLeaf := false, false
			for _, c := range chunks {
				if tree.prove(c, root) != nil {
					single = true
				}
				if int64(x) == tlogStoredIndex(0, c) {
					sampledLeaf = true
				}
			}
			multi := tree.proveAll(chunks, root) != nil
			if sampledLeaf && !multi {
				t.Errorf("n=%d chunks %v: sampled leaf (stored hash %d) changed, the multiproof passes", n, chunks, x)
			}
			if !single && multi {
				t.Errorf("n=%d chunks %v, stored hash %d changed: the single proofs pass, the multiproof fails", n, chunks, x)
			}
			tree.stored[x] = saved
		}
		if err := tree.proveAll([]int64{n}, root); err == nil {
			t.Errorf("n=%d: a chunk past the end passed", n)
		}
		if err := tree.proveAll([]int64{0}, seal.Hash{1}); !errors.Is(err, errLeavesAltered) {
			t.Errorf("n=%d: wrong root = %v", n, err)
		}
	}
}

func BenchmarkProve16(b *testing.B) {
	leaves := testLeaves(1024)
	tree, _ := newLeafTree(leaves)
	root := seal.Root(leaves)
	chunks := []int64{3, 77, 150, 200, 333, 400, 512, 513, 600, 701, 800, 850, 900, 950, 1000, 1023}
	b.Run("single proofs", func(b *testing.B) {
		for b.Loop() {
			for _, c := range chunks {
				if err := tree.prove(c, root); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("multiproof", func(b *testing.B) {
		for b.Loop() {
			if err := tree.proveAll(chunks, root); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// prove checks with one tlog inclusion proof, the reference the multiproof
// is tested against, that the stored leaf of chunk i
// belongs to the tree with the given root.
func (t *leafTree) prove(i int64, root seal.Hash) error {
	p, err := tlog.ProveRecord(t.n, i, t)
	if err != nil {
		return err
	}
	return tlog.CheckRecord(p, t.n, tlog.Hash(root), i, tlog.Hash(t.leaf(i)))
}

func TestKeyedRandRekeys(t *testing.T) {
	var k keyedRand
	a := make([]byte, rekeyAfter+100)
	if n, err := k.Read(a); n != len(a) || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	if k.left != rekeyAfter-100 {
		t.Errorf("left = %d after one rekey, want %d", k.left, rekeyAfter-100)
	}
	b := make([]byte, 64)
	k.Read(b)
	var zero [64]byte
	if string(b) == string(zero[:]) || string(b) == string(a[:64]) {
		t.Error("keyedRand repeats or yields zeros")
	}
}
