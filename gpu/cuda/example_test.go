package cuda_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/gpu/cuda"
)

// Open the system's CUDA driver, or say why not so that the caller can
// fall back to the simulated device. (No output is checked: it depends on
// the machine.)
func ExampleOpen() {
	ctx := context.Background()
	drv, err := cuda.Open(cuda.Options{})
	if errors.Is(err, cuda.ErrUnavailable) {
		fmt.Println("using the simulated device:", err)
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	defer drv.Close()
	for _, d := range drv.Devices() {
		in, err := d.Info(ctx)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s %s: %d of %d bytes free, on-device hashing %v\n",
			in.Name, in.UUID, in.FreeBytes, in.TotalBytes, in.CanHash)
	}
}

// Allocate device memory for a shard and check the VRAM-only policy: a
// violation is fatal, a full device is retryable.
func ExampleDevice_Alloc() {
	drv, err := cuda.Open(cuda.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer drv.Close()
	d := drv.Devices()[0]
	b, err := d.Alloc(context.Background(), 1<<30)
	switch {
	case errors.Is(err, gpu.ErrOutOfMemory):
		fmt.Println("device full; try later")
		return
	case err != nil:
		log.Fatal(err)
	}
	rep, err := d.AllocReport(b)
	if err != nil {
		log.Fatal(err)
	}
	if len(rep.Violations) > 0 {
		log.Fatalf("refusing to run: %v breaks the VRAM-only policy: %q", b, rep.Violations)
	}
	fmt.Printf("%v: free memory dropped by %d bytes, facts %+v\n", b, rep.FreeDrop(), rep.Facts)
}
