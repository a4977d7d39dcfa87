package seal

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// randBytes returns n deterministic pseudo-random bytes.
func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n+7)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n:n]
}

// naiveLeaves is the serial reference for Leaves.
func naiveLeaves(data []byte, chunkSize int) []Hash {
	var out []Hash
	for off := 0; off < len(data); off += chunkSize {
		chunk := data[off:min(off+chunkSize, len(data))]
		out = append(out, sha256.Sum256(append([]byte{0x00}, chunk...)))
	}
	return out
}

// naiveRoot is RFC 6962 section 2.1 MTH, written as the RFC states it.
func naiveRoot(leaves []Hash) Hash {
	switch n := len(leaves); n {
	case 0:
		return sha256.Sum256(nil)
	case 1:
		return leaves[0]
	default:
		k := 1
		for k*2 < n {
			k *= 2
		}
		l, r := naiveRoot(leaves[:k]), naiveRoot(leaves[k:])
		return sha256.Sum256(append(append([]byte{0x01}, l[:]...), r[:]...))
	}
}

// tlogRoot computes the tree root of the chunks of data with
// golang.org/x/mod/sumdb/tlog, from the raw chunks.
func tlogRoot(t *testing.T, data []byte, chunkSize int) Hash {
	t.Helper()
	var stored []tlog.Hash
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = stored[x]
		}
		return out, nil
	})
	n := int64(0)
	for off := 0; off < len(data); off += chunkSize {
		hs, err := tlog.StoredHashes(n, data[off:min(off+chunkSize, len(data))], r)
		if err != nil {
			t.Fatalf("tlog.StoredHashes(%d): %v", n, err)
		}
		stored = append(stored, hs...)
		n++
	}
	if n == 0 {
		return sha256.Sum256(nil)
	}
	h, err := tlog.TreeHash(n, r)
	if err != nil {
		t.Fatalf("tlog.TreeHash(%d): %v", n, err)
	}
	return Hash(h)
}

func TestLeavesAndRoot(t *testing.T) {
	type tc struct{ size, chunk int }
	var tests []tc
	for _, chunk := range []int{1, 7, 64, 4096} {
		for _, nchunks := range []int{0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 100} {
			for _, tail := range []int{0, 1, chunk - 1} {
				if size := nchunks*chunk + tail; size >= 0 && (tail == 0 || tail < chunk) {
					tests = append(tests, tc{size, chunk})
				}
			}
		}
	}
	// Sizes below one chunk, and a shard large enough that Leaves spreads
	// its batches over several workers.
	tests = append(tests, tc{1, DefaultChunkSize}, tc{1000, DefaultChunkSize}, tc{5<<20 + 12345, 4096})
	for _, tt := range tests {
		t.Run(fmt.Sprintf("size=%d/chunk=%d", tt.size, tt.chunk), func(t *testing.T) {
			data := randBytes(uint64(tt.size*31+tt.chunk), tt.size)
			want := naiveLeaves(data, tt.chunk)
			got := Leaves(data, int64(tt.chunk))
			if len(got) != len(want) {
				t.Fatalf("len(Leaves) = %d, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("Leaves()[%d] = %s, want %s", i, got[i], want[i])
				}
			}
			if n := ChunkCount(int64(tt.size), int64(tt.chunk)); n != int64(len(want)) {
				t.Errorf("ChunkCount(%d, %d) = %d, want %d", tt.size, tt.chunk, n, len(want))
			}
			root := Root(got)
			if want := naiveRoot(want); root != want {
				t.Errorf("Root = %s, want naive %s", root, want)
			}
			if len(want) <= 2000 {
				if want := tlogRoot(t, data, tt.chunk); root != want {
					t.Errorf("Root = %s, want tlog %s", root, want)
				}
			}
		})
	}
}

func TestRootMatchesTlogTreeHash(t *testing.T) {
	// Every tree size up to 600 against tlog, from leaf hashes directly.
	leaves := make([]Hash, 600)
	var stored []tlog.Hash
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = stored[x]
		}
		return out, nil
	})
	for i := range leaves {
		leaves[i] = LeafHash([]byte(fmt.Sprintf("record %d", i)))
		if tlog.RecordHash([]byte(fmt.Sprintf("record %d", i))) != tlog.Hash(leaves[i]) {
			t.Fatalf("LeafHash(record %d) differs from tlog.RecordHash", i)
		}
		hs, err := tlog.StoredHashesForRecordHash(int64(i), tlog.Hash(leaves[i]), r)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, hs...)
		want, err := tlog.TreeHash(int64(i+1), r)
		if err != nil {
			t.Fatal(err)
		}
		if got := Root(leaves[:i+1]); got != Hash(want) {
			t.Fatalf("Root(%d leaves) = %s, want %s", i+1, got, Hash(want))
		}
	}
}

func TestLeavesDefaultChunkSize(t *testing.T) {
	data := randBytes(1, DefaultChunkSize+1)
	for _, cs := range []int64{0, -1} {
		if got := Leaves(data, cs); len(got) != 2 || got[1] != LeafHash(data[DefaultChunkSize:]) {
			t.Errorf("Leaves(data, %d) did not use DefaultChunkSize", cs)
		}
	}
	if got := Leaves(nil, 4); got != nil {
		t.Errorf("Leaves(nil, 4) = %v, want nil", got)
	}
}

func TestRootKnownAnswers(t *testing.T) {
	a, b := LeafHash([]byte("a")), LeafHash([]byte("b"))
	tests := []struct {
		name   string
		leaves []Hash
		want   Hash
	}{
		{"empty", nil, sha256.Sum256(nil)},
		{"one", []Hash{a}, a},
		{"two", []Hash{a, b}, nodeHash(a, b)},
		{"three", []Hash{a, b, a}, nodeHash(nodeHash(a, b), a)},
	}
	for _, tt := range tests {
		if got := Root(tt.leaves); got != tt.want {
			t.Errorf("Root(%s) = %s, want %s", tt.name, got, tt.want)
		}
	}
	// The SHA-256 of the empty string, as RFC 6962 defines the empty tree.
	if got := Root(nil).String(); got != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Errorf("Root(nil) = %s", got)
	}
}

func TestChunkRange(t *testing.T) {
	tests := []struct {
		i, size, chunk int64
		off, n         int64
	}{
		{0, 10, 4, 0, 4},
		{1, 10, 4, 4, 4},
		{2, 10, 4, 8, 2},
		{3, 10, 4, 0, 0},
		{-1, 10, 4, 0, 0},
		{0, 3, 4, 0, 3},
		{0, 0, 4, 0, 0},
		{0, 10, 0, 0, 0},
		{0, 10, -4, 0, 0},
		{0, -10, 4, 0, 0},
		{math.MaxInt64 / 2, math.MaxInt64, 2, math.MaxInt64 - 1, 1},
		{math.MaxInt64, math.MaxInt64, math.MaxInt64, 0, 0},
		{0, math.MaxInt64, math.MaxInt64, 0, math.MaxInt64},
	}
	for _, tt := range tests {
		off, n := ChunkRange(tt.i, tt.size, tt.chunk)
		if off != tt.off || n != tt.n {
			t.Errorf("ChunkRange(%d, %d, %d) = (%d, %d), want (%d, %d)", tt.i, tt.size, tt.chunk, off, n, tt.off, tt.n)
		}
	}
}

func TestParseHash(t *testing.T) {
	lower := strings.Repeat("0123456789abcdef", 4)
	tests := []struct {
		in      string
		wantErr bool
	}{
		{lower, false},
		{strings.ToUpper(lower), false},
		{lower[:63], true},
		{lower + "0", true},
		{"", true},
		{lower[:62] + "zz", true},
		{lower[:62] + " 0", true},
		{"0x" + lower[:62], true},
	}
	for _, tt := range tests {
		h, err := ParseHash(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseHash(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && h.String() != lower {
			t.Errorf("ParseHash(%q).String() = %q, want %q", tt.in, h.String(), lower)
		}
	}
	var h Hash
	h[0] = 1
	before := h
	if err := h.UnmarshalText([]byte("zz")); err == nil || h != before {
		t.Errorf("UnmarshalText(zz) = %v and changed the hash", err)
	}
	if txt, _ := h.MarshalText(); string(txt) != h.String() {
		t.Errorf("MarshalText = %s, want %s", txt, h.String())
	}
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }
