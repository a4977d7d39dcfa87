package seal_test

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/vramseal/vramseal/seal"
)

func ExampleDeriveKey() {
	key, err := seal.DeriveKey([]byte("an example worker secret of 32+ bytes"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(key.ID())
	fmt.Printf("%v\n", key) // the key itself never prints

	_, err = seal.DeriveKey([]byte("too short"))
	fmt.Println(err)
	// Output:
	// k1:5d2cc5f2935dec51
	// [REDACTED key k1:5d2cc5f2935dec51]
	// seal: secret is 9 bytes, need at least 32 (for example 32 random bytes from a CSPRNG, hex- or base64-encoded)
}

func ExampleKey_Sign() {
	key, _ := seal.DeriveKey([]byte("an example worker secret of 32+ bytes"))
	data := bytes.Repeat([]byte("weights "), 20000) // 160000 bytes

	h := seal.NewHasher(seal.DefaultChunkSize)
	h.Write(data)
	digest, leaves, size := h.Sum()

	s := seal.Seal{
		ShardID:    "shard-0",
		ModelRef:   "example/model",
		ShardCount: 1,
		DeviceUUID: "GPU-00000000-0000-0000-0000-000000000000",
		Size:       size,
		ChunkSize:  seal.DefaultChunkSize,
		Digest:     digest,
		Root:       seal.Root(leaves),
		SealedAt:   time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC),
		WorkerID:   "worker-1",
	}
	if err := key.Sign(&s); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(leaves), "chunks, verify:", key.Verify(&s))

	s.Size-- // any change breaks the signature
	err := key.Verify(&s)
	fmt.Println(errors.Is(err, seal.ErrSignatureInvalid))
	// Output:
	// 3 chunks, verify: <nil>
	// true
}

func ExampleRoot() {
	data := []byte("0123456789")
	leaves := seal.Leaves(data, 4) // chunks "0123", "4567", "89"
	fmt.Println(len(leaves))
	fmt.Println(seal.Root(leaves))
	fmt.Println(seal.Root(nil)) // SHA-256 of the empty string
	// Output:
	// 3
	// bc1044a40ff355812e6d1c6c23ac4b1189840cee880dcb44d5334e72762369bf
	// e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
}

func ExampleChunkRange() {
	for i := range seal.ChunkCount(10, 4) {
		off, n := seal.ChunkRange(i, 10, 4)
		fmt.Println(i, off, n)
	}
	// Output:
	// 0 0 4
	// 1 4 4
	// 2 8 2
}

func ExampleParseHash() {
	h, err := seal.ParseHash("E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855")
	fmt.Println(h, err)
	_, err = seal.ParseHash("e3b0")
	fmt.Println(err)
	// Output:
	// e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 <nil>
	// seal: hash is 4 characters, want 64 hexadecimal digits
}
