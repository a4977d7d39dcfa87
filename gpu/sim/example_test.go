package sim_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log"

	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/gpu/sim"
)

func Example() {
	ctx := context.Background()
	devs, err := sim.New(sim.Options{Capacity: 1 << 30})
	if err != nil {
		log.Fatal(err)
	}
	d := devs[0]

	b, err := d.Alloc(ctx, 6)
	if err != nil {
		log.Fatal(err)
	}
	defer d.Free(ctx, b)
	if err := d.Write(ctx, b, 0, []byte("weight")); err != nil {
		log.Fatal(err)
	}
	out := make([][gpu.HashSize]byte, 2)
	if err := d.LeafHashes(ctx, b, 4, []int64{0, 1}, out); err != nil {
		log.Fatal(err)
	}
	fmt.Println(b)
	fmt.Println(out[1] == sha256.Sum256([]byte("\x00ht")))

	d.FlipBits(b, 5, 0x01) // "weighu"
	d.LeafHashes(ctx, b, 4, []int64{0, 1}, out)
	fmt.Println(out[1] == sha256.Sum256([]byte("\x00ht")))

	info, _ := d.Info(ctx)
	fmt.Println(info.Name, info.TotalBytes-info.FreeBytes)
	// Output:
	// sim buffer #1 (6 bytes on GPU 0)
	// true
	// false
	// vramseal simulated GPU 6
}

func ExampleDevice_FailNextAlloc() {
	ctx := context.Background()
	devs, _ := sim.New(sim.Options{})
	devs[0].FailNextAlloc(nil)
	_, err := devs[0].Alloc(ctx, 4096)
	fmt.Println(err)
	// Output:
	// sim: alloc 4096 bytes on GPU 0: injected fault: gpu: out of device memory
}
