package vram

import (
	"fmt"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/vramseal/vramseal/seal"
)

// leafTree keeps a shard's chunk leaf hashes with every interior node of
// its RFC 6962 tree, in tlog's stored-hash layout. A sampled verification
// then proves each sampled leaf against the signed root with an inclusion
// proof (about log2(n) hashes) instead of recomputing the root over every
// leaf: 16 samples of a 1 GiB shard cost about 250 hashes, not 16384. It
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

// prove checks with an inclusion proof that the stored leaf of chunk i
// belongs to the tree with the given root.
func (t *leafTree) prove(i int64, root seal.Hash) error {
	p, err := tlog.ProveRecord(t.n, i, t)
	if err != nil {
		return err
	}
	return tlog.CheckRecord(p, t.n, tlog.Hash(root), i, tlog.Hash(t.leaf(i)))
}
