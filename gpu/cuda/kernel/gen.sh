#!/bin/sh
# gen.sh regenerates leafhash.ptx from leafhash.cu with clang's NVPTX
# backend; no CUDA toolkit or headers are needed. CI never runs it: the PTX
# is committed and embedded by gpu/cuda (go:embed).
#
#   apt-get update && apt-get install -y clang   # Debian 12: clang 14
#   gpu/cuda/kernel/gen.sh
#
# sm_80 with clang 14 emits PTX ISA 7.0 (CUDA 11.0 drivers and later); the
# driver JIT-compiles it for the GPU at hand (Ampere, Hopper and newer).
set -eu
cd "$(dirname "$0")"
CLANG=${CLANG:-clang}
"$CLANG" -O3 -x cuda --cuda-device-only --cuda-gpu-arch=sm_80 -nocudainc -nocudalib \
	-S -o leafhash.ptx leafhash.cu
grep -q '^\.version' leafhash.ptx
grep -q '\.entry leafhash' leafhash.ptx
echo "wrote $(pwd)/leafhash.ptx ($(grep '^\.version' leafhash.ptx))"
