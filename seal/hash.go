package seal

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"runtime"
	"sync"
	"sync/atomic"
)

// DefaultChunkSize is the chunk size of the Merkle tree when none is given:
// 64 KiB, small enough to name a changed byte range precisely and large
// enough that the leaf hashes are 1/2048 of the shard.
const DefaultChunkSize = 64 << 10

// MaxChunkSize is the largest chunk size a [Seal] may record (1 GiB).
const MaxChunkSize = 1 << 30

// MaxChunkCount is the largest number of chunks (leaves) a [Seal] may cover.
// It bounds the memory a verifier spends on leaf hashes (at most 8 GiB).
const MaxChunkCount = 1 << 28

// Hash is a SHA-256 value: a flat digest, a leaf hash, a tree root or a
// signature. Its text form is 64 lowercase hexadecimal digits.
type Hash [sha256.Size]byte

// String returns h as 64 lowercase hexadecimal digits.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// IsZero reports whether every byte of h is zero, which no real digest is;
// it marks an unset field.
func (h Hash) IsZero() bool { return h == Hash{} }

// MarshalText returns h as 64 lowercase hexadecimal digits.
func (h Hash) MarshalText() ([]byte, error) {
	b := make([]byte, 2*len(h))
	hex.Encode(b, h[:])
	return b, nil
}

// UnmarshalText sets h from exactly 64 hexadecimal digits (either case);
// anything else is an error and leaves h unchanged.
func (h *Hash) UnmarshalText(text []byte) error {
	if len(text) != 2*len(h) {
		return fmt.Errorf("seal: hash is %d characters, want %d hexadecimal digits", len(text), 2*len(h))
	}
	var v Hash
	if _, err := hex.Decode(v[:], text); err != nil {
		return fmt.Errorf("seal: hash is not hexadecimal: %w", err)
	}
	*h = v
	return nil
}

// ParseHash parses exactly 64 hexadecimal digits (either case) into a Hash.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if err := h.UnmarshalText([]byte(s)); err != nil {
		return Hash{}, err
	}
	return h, nil
}

// LeafHash returns the RFC 6962 leaf hash of chunk: SHA-256(0x00 || chunk).
func LeafHash(chunk []byte) Hash {
	return newLeafHasher().sum(chunk)
}

// leafPrefix is the RFC 6962 domain separator of leaves.
var leafPrefix = []byte{0x00}

// leafHasher hashes many leaves with one digest and one output buffer, so
// that hashing a chunk allocates nothing. It is not safe for concurrent use.
type leafHasher struct {
	d   hash.Hash
	out []byte
}

func newLeafHasher() *leafHasher {
	return &leafHasher{d: sha256.New(), out: make([]byte, 0, sha256.Size)}
}

// sum returns SHA-256(0x00 || chunk).
func (l *leafHasher) sum(chunk []byte) Hash {
	l.d.Reset()
	l.d.Write(leafPrefix)
	l.d.Write(chunk)
	l.out = l.d.Sum(l.out[:0])
	return Hash(l.out)
}

// nodeHash returns the RFC 6962 interior node hash:
// SHA-256(0x01 || left || right).
func nodeHash(left, right Hash) Hash {
	var buf [1 + 2*sha256.Size]byte
	buf[0] = 0x01
	copy(buf[1:], left[:])
	copy(buf[1+sha256.Size:], right[:])
	return sha256.Sum256(buf[:])
}

// Root returns the RFC 6962 Merkle tree hash (section 2.1) of leaves, the
// same value golang.org/x/mod/sumdb/tlog computes with TreeHash. The root
// of no leaves is SHA-256 of the empty string.
//
// It pairs nodes level by level and promotes an unpaired last node
// unchanged, which yields the RFC's left-complete tree (split at the
// largest power of two below n).
func Root(leaves []Hash) Hash {
	switch len(leaves) {
	case 0:
		return sha256.Sum256(nil)
	case 1:
		return leaves[0]
	}
	level := make([]Hash, (len(leaves)+1)/2)
	src := leaves
	for {
		n := len(src)
		for i := 0; i+1 < n; i += 2 {
			level[i/2] = nodeHash(src[i], src[i+1])
		}
		if n%2 == 1 {
			level[n/2] = src[n-1]
		}
		n = (n + 1) / 2
		if n == 1 {
			return level[0]
		}
		src = level[:n]
	}
}

// ChunkCount returns the number of chunks of chunkSize bytes that cover
// size bytes (the last one may be short), or 0 when size or chunkSize is
// not positive.
func ChunkCount(size, chunkSize int64) int64 {
	if size <= 0 || chunkSize <= 0 {
		return 0
	}
	return (size-1)/chunkSize + 1
}

// ChunkRange returns the byte offset and length of chunk i of a shard of
// size bytes cut into chunks of chunkSize bytes. Only the last chunk may be
// shorter than chunkSize. An index outside [0, ChunkCount(size, chunkSize))
// or a non-positive size or chunkSize yields (0, 0).
func ChunkRange(i, size, chunkSize int64) (off, n int64) {
	if i < 0 || i >= ChunkCount(size, chunkSize) {
		return 0, 0
	}
	off = i * chunkSize // cannot overflow: i*chunkSize < size
	return off, min(chunkSize, size-off)
}

// leavesBatch is the number of bytes a Leaves worker claims at a time:
// large enough to make the atomic claim negligible, small enough to
// balance the load across cores.
const leavesBatch = 1 << 20

// Leaves returns the RFC 6962 leaf hash of every chunkSize-byte chunk of
// data (the last chunk may be short), hashed on runtime.GOMAXPROCS(0)
// goroutines. A chunkSize of zero or less means [DefaultChunkSize]. Empty
// data has no leaves.
func Leaves(data []byte, chunkSize int64) []Hash {
	if chunkSize <= 0 {
		chunkSize = DefaultChunkSize
	}
	size := int64(len(data))
	n := ChunkCount(size, chunkSize)
	if n == 0 {
		return nil
	}
	leaves := make([]Hash, n)
	step := max(leavesBatch/chunkSize, 1)
	workers := int(min(int64(runtime.GOMAXPROCS(0)), (n+step-1)/step))
	var next atomic.Int64
	work := func() {
		lh := newLeafHasher()
		for {
			start := next.Add(step) - step
			if start >= n {
				return
			}
			for i := start; i < min(start+step, n); i++ {
				off, l := ChunkRange(i, size, chunkSize)
				leaves[i] = lh.sum(data[off : off+l])
			}
		}
	}
	var wg sync.WaitGroup
	for range workers - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
	return leaves
}
