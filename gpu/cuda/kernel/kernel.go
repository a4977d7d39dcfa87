// Package kernel holds gpu/cuda's leaf-hash kernel: its CUDA C source
// (leafhash.cu) and the PTX that gen.sh generates from it with clang's
// NVPTX backend. gpu/cuda loads the PTX into the driver; the fake driver
// of gpu/cuda/cudatest compiles the source as C for the host.
package kernel

import _ "embed"

//go:embed leafhash.cu
var source string

//go:embed leafhash.ptx
var ptx string

// Source returns leafhash.cu, the kernel's source.
func Source() string { return source }

// PTX returns leafhash.ptx, generated from [Source] by gen.sh.
func PTX() string { return ptx }
