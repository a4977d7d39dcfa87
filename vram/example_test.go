package vram_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/gpu/sim"
	"github.com/vramseal/vramseal/seal"
	"github.com/vramseal/vramseal/vram"
)

// A shard is sealed into (simulated) VRAM, verified from device memory,
// found corrupted, and the worker stops until an operator resets it.
func Example() {
	ctx := context.Background()
	devs, _ := sim.New(sim.Options{Capacity: 64 << 20})
	key, _ := seal.DeriveKey([]byte("an example worker secret of 32+ bytes"))
	m, err := vram.New(ctx, vram.Options{Devices: []gpu.Device{devs[0]}, Key: key, WorkerID: "worker-0", Environ: []string{}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close(ctx)

	weights := bytes.Repeat([]byte("weights!"), 40<<10) // 320 KiB: 5 chunks of 64 KiB
	sh, err := m.Seal(ctx, vram.SealRequest{ShardID: "llama-tp0", ModelRef: "org/llama", Size: int64(len(weights)), Data: bytes.NewReader(weights)})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("sealed", sh.Seal.ShardID, "chunks:", sh.Chunks)

	res, err := m.Verify(ctx, "llama-tp0", vram.Full)
	fmt.Println("verify:", res.Mode, res.ChunksChecked, err)

	buf, dev, _ := m.Buffer("llama-tp0")
	devs[dev].FlipBits(buf, 200_000, 0x01) // a bit flips in chunk 3
	_, err = m.Verify(ctx, "llama-tp0", vram.Full)
	var ie *vram.IntegrityError
	if errors.As(err, &ie) {
		fmt.Println("failed:", ie.Reason, ie.Changed[0])
	}
	_, err = m.Verify(ctx, "llama-tp0", vram.Sampled(2))
	fmt.Println("gate open:", !errors.Is(err, vram.ErrStopped))
	// Output:
	// sealed llama-tp0 chunks: 5
	// verify: full 5 <nil>
	// failed: digest_mismatch chunk 3 (bytes 196608-262143)
	// gate open: false
}

// Capacity errors carry the numbers and are retryable.
func ExampleCapacityError() {
	ctx := context.Background()
	devs, _ := sim.New(sim.Options{Capacity: 1 << 20})
	m, _ := vram.New(ctx, vram.Options{Devices: []gpu.Device{devs[0]}, Environ: []string{}})
	defer m.Close(ctx)
	_, err := m.Seal(ctx, vram.SealRequest{ShardID: "big", ModelRef: "m", Size: 2 << 20, Data: bytes.NewReader(make([]byte, 2<<20))})
	var ce *vram.CapacityError
	if errors.As(err, &ce) {
		fmt.Println(ce.Requested, ce.Available, vram.Retryable(err))
	}
	// Output: 2097152 1048576 true
}
