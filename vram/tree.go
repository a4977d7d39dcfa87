package vram

import (
	"fmt"
	"math/bits"
	"slices"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/vramseal/vramseal/seal"
)

// leafTree keeps a shard's chunk leaf hashes with every interior node of
// its RFC 6962 tree, in tlog's stored-hash layout. A sampled verification
// then proves the sampled leaves against the signed root with one
// multiproof (about k·log2(n/k) hashes, see proveAll) instead of
// recomputing the root over every leaf: 16 samples of a 1 GiB shard cost
// about 170 hashes, not 16384. It
// holds about 2n hashes (1 MiB per GiB of shard at 64 KiB chunks).
type leafTree struct {
	n      int64
	stored []tlog.Hash
}

func newLeafTree(leaves []seal.Hash) (*leafTree, error) {
	t := &leafTree{stored: make([]tlog.Hash, 0, 2*len(leaves))}
	for _, l := range leaves {
		hs, err := tlog.StoredHashesForRecordHash(t.n, tlog.Hash(l), t)
		if err != nil {
			return nil, fmt.Errorf("vram: build leaf tree: %w", err)
		}
		t.stored = append(t.stored, hs...)
		t.n++
	}
	return t, nil
}

// ReadHashes implements tlog.HashReader over the stored hashes.
func (t *leafTree) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(t.stored)) {
			return nil, fmt.Errorf("vram: leaf tree has no stored hash %d", x)
		}
		out[i] = t.stored[x]
	}
	return out, nil
}

// leaf returns the sealed leaf hash of chunk i.
func (t *leafTree) leaf(i int64) seal.Hash {
	return seal.Hash(t.stored[tlog.StoredHashIndex(0, i)])
}

// leaves returns every sealed leaf hash.
func (t *leafTree) leaves() []seal.Hash {
	out := make([]seal.Hash, t.n)
	for i := range out {
		out[i] = t.leaf(int64(i))
	}
	return out
}

// proveAll checks that the stored leaves of the given chunks belong to
// the tree with the given root: one multiproof for all of them. It
// recomputes, with the RFC 6962 tree hash (MTH), every node on the paths
// from those leaves to the root, and takes every other node from the
// stored hashes, as the siblings of single inclusion proofs are: a
// changed stored hash on or beside any of the paths changes the root.
// Shared upper paths are hashed once, and only a sorted copy of chunks is
// allocated: 16
// samples of a 1024-chunk shard cost about 130 node hashes.
func (t *leafTree) proveAll(chunks []int64, root seal.Hash) error {
	sorted := slices.Clone(chunks)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	if len(sorted) == 0 {
		return nil
	}
	if sorted[0] < 0 || sorted[len(sorted)-1] >= t.n {
		return fmt.Errorf("vram: chunk out of range of the %d-leaf tree", t.n)
	}
	if got := t.mth(0, t.n, sorted); got != tlog.Hash(root) {
		return errLeavesAltered
	}
	return nil
}

// mth is the tree hash of leaves [lo, hi): recomputed from its halves
// when it holds one of the sorted chunks in sampled, else read from the
// stored hash of the complete subtree (or, on the tree's right edge, from
// the complete subtrees it is made of).
func (t *leafTree) mth(lo, hi int64, sampled []int64) tlog.Hash {
	size := hi - lo
	if len(sampled) == 0 && size&(size-1) == 0 {
		// A complete subtree, aligned as every one MTH splits off is.
		level := bits.TrailingZeros64(uint64(size))
		return t.stored[tlog.StoredHashIndex(level, lo>>level)]
	}
	if size == 1 {
		return t.stored[tlog.StoredHashIndex(0, lo)]
	}
	// RFC 6962: split at the largest power of two below size.
	k := int64(1) << (bits.Len64(uint64(size-1)) - 1)
	i, _ := slices.BinarySearch(sampled, lo+k)
	return tlog.NodeHash(t.mth(lo, lo+k, sampled[:i]), t.mth(lo+k, hi, sampled[i:]))
}
