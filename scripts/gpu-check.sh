#!/bin/sh
# gpu-check.sh: check vramseal's CUDA backend on a machine with an NVIDIA
# GPU and no Go toolchain, and write one JSON report.
#
# Build the test binary on a machine with Go, from the repository root:
#
#   mkdir -p bin/gpu-check
#   CGO_ENABLED=0 go test -c -o bin/gpu-check/cuda.test ./gpu/cuda
#
# The binary has no cgo; it links only the C library and its dynamic
# loader, which it needs to dlopen libcuda.so.1 (a fully static binary
# cannot load the driver). Copy bin/gpu-check/ and this script to the GPU
# machine (or run it in a checkout there) and run:
#
#   scripts/gpu-check.sh [-b BIN_DIR] [-o OUT_DIR] [-s SEAL_GIB] [-d DEVICE]
#
#   -b  directory holding cuda.test (default: bin/gpu-check)
#   -o  output directory (default: $OUT if set, else ./gpu-check-out)
#   -s  GiB to seal and verify in full (default 8)
#   -d  CUDA device ordinal (default 0)
#
# It runs, against the real driver (VRAMSEAL_CUDA=1):
#   cuda.test -test.run '^TestGPU$'       device facts (CUDA and NVML),
#       pointer facts and free-memory drop of real allocations, PTX load,
#       the gputest conformance suite, leaf hashes against seal on random
#       data, a full seal and verify of SEAL_GIB GiB, sampled verify of 16
#       chunks, and the baseline (copy back + CPU SHA-256) in the same run;
#   cuda.test -test.run '^TestGPUVMM$'    a shard in CUDA virtual memory
#       management memory (cuMemCreate, exportable as a POSIX file
#       descriptor): its allocation properties, Protect (read-only
#       access, Write refused), Export before Protect refused, Export to
#       a second process (this binary re-executed) that imports it with
#       cuMemImportFromShareableHandle, maps it read-only, and reads back
#       bytes equal to those sealed; a third process that also tries to
#       write through its read-only mapping, which must fail; and the
#       leaf hashes (the gate) still matching afterwards;
#   cuda.test -test.bench BenchmarkVerify  the same comparison as Go
#       benchmarks.
#
# Output, in OUT_DIR: gpu-check.json (the report: script facts, exit
# codes, benchmark lines and, under "report" and "vmm_report", the
# tests' own JSON), test.log, vmm.log, bench.log, nvidia-smi.txt. The
# exit status is non-zero when the tests or benchmarks fail. Needs only
# POSIX sh, awk and sed.
set -u

BIN=bin/gpu-check
OUTDIR=${OUT:-./gpu-check-out}
SEAL_GIB=8
DEVICE=0
while getopts b:o:s:d: opt; do
	case $opt in
	b) BIN=$OPTARG ;;
	o) OUTDIR=$OPTARG ;;
	s) SEAL_GIB=$OPTARG ;;
	d) DEVICE=$OPTARG ;;
	*) echo "usage: $0 [-b BIN_DIR] [-o OUT_DIR] [-s SEAL_GIB] [-d DEVICE]" >&2; exit 2 ;;
	esac
done

TEST=$BIN/cuda.test
if [ ! -x "$TEST" ]; then
	echo "gpu-check: $TEST not found; build it with:" >&2
	echo "  CGO_ENABLED=0 go test -c -o $TEST ./gpu/cuda" >&2
	exit 2
fi
mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)

# json_string prints its argument as a JSON string.
json_string() {
	printf '%s' "$1" | awk 'BEGIN { printf "\"" }
		{ gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); gsub(/\t/, "\\t"); gsub(/\r/, "");
		  gsub(/[\001-\037]/, ""); if (NR > 1) printf "\\n"; printf "%s", $0 }
		END { printf "\"" }'
}

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
if command -v nvidia-smi >/dev/null 2>&1; then
	nvidia-smi >"$OUTDIR/nvidia-smi.txt" 2>&1
	smi=$(nvidia-smi --query-gpu=index,name,uuid,driver_version,memory.total,memory.used,ecc.mode.current \
		--format=csv,noheader 2>&1)
else
	smi="nvidia-smi not found"
	echo "$smi" >"$OUTDIR/nvidia-smi.txt"
fi

export VRAMSEAL_CUDA=1 VRAMSEAL_CUDA_DEVICE="$DEVICE" VRAMSEAL_CUDA_SEAL_GIB="$SEAL_GIB"
export VRAMSEAL_CUDA_REPORT="$OUTDIR/test-report.json"
export VRAMSEAL_CUDA_VMM_REPORT="$OUTDIR/vmm-report.json"
rm -f "$VRAMSEAL_CUDA_REPORT" "$VRAMSEAL_CUDA_VMM_REPORT"

echo "gpu-check: TestGPU (seal $SEAL_GIB GiB on device $DEVICE)..."
"$TEST" -test.run '^TestGPU$' -test.v -test.timeout 30m >"$OUTDIR/test.log" 2>&1
test_rc=$?
grep -E '^(--- |ok|FAIL|PASS)|gpu_test.go' "$OUTDIR/test.log" | tail -n 40

echo "gpu-check: TestGPUVMM (export to and import in a second process, read-only)..."
"$TEST" -test.run '^TestGPUVMM$' -test.v -test.timeout 10m >"$OUTDIR/vmm.log" 2>&1
vmm_rc=$?
grep -E '^(--- |ok|FAIL|PASS)|vmm_test.go' "$OUTDIR/vmm.log" | tail -n 40

echo "gpu-check: BenchmarkVerify..."
"$TEST" -test.run '^$' -test.bench '^BenchmarkVerify$' -test.benchtime 5x -test.timeout 20m \
	>"$OUTDIR/bench.log" 2>&1
bench_rc=$?
grep -E '^(Benchmark|ok|FAIL|PASS)' "$OUTDIR/bench.log"

# Benchmark lines: name, iterations, ns/op and, when reported, MB/s.
benchmarks=$(awk '/^Benchmark/ {
		mbs = "null"; for (i = 3; i <= NF; i++) if ($(i+1) == "MB/s") mbs = $i
		printf "%s{\"name\": \"%s\", \"iterations\": %s, \"ns_per_op\": %s, \"mb_per_s\": %s}", sep, $1, $2, $3, mbs
		sep = ",\n    "
	}' "$OUTDIR/bench.log")

if [ -s "$VRAMSEAL_CUDA_REPORT" ]; then
	report=$(cat "$VRAMSEAL_CUDA_REPORT")
else
	report=null
fi
if [ -s "$VRAMSEAL_CUDA_VMM_REPORT" ]; then
	vmm_report=$(cat "$VRAMSEAL_CUDA_VMM_REPORT")
else
	vmm_report=null
fi

{
	printf '{\n'
	printf '  "schema": "vramseal-gpu-check-run/1",\n'
	printf '  "started": "%s",\n' "$started"
	printf '  "finished": "%s",\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	printf '  "host": %s,\n' "$(json_string "$(uname -a)")"
	printf '  "nvidia_smi": %s,\n' "$(json_string "$smi")"
	printf '  "device": %s,\n' "$DEVICE"
	printf '  "seal_gib": %s,\n' "$SEAL_GIB"
	printf '  "test_exit_code": %s,\n' "$test_rc"
	printf '  "vmm_exit_code": %s,\n' "$vmm_rc"
	printf '  "bench_exit_code": %s,\n' "$bench_rc"
	printf '  "test_log_tail": %s,\n' "$(json_string "$(tail -n 60 "$OUTDIR/test.log")")"
	printf '  "vmm_log_tail": %s,\n' "$(json_string "$(tail -n 40 "$OUTDIR/vmm.log")")"
	printf '  "benchmarks": [\n    %s\n  ],\n' "$benchmarks"
	printf '  "report": %s,\n' "$report"
	printf '  "vmm_report": %s\n' "$vmm_report"
	printf '}\n'
} >"$OUTDIR/gpu-check.json"

echo "gpu-check: wrote $OUTDIR/gpu-check.json (tests exit $test_rc, VMM tests exit $vmm_rc, benchmarks exit $bench_rc)"
[ "$test_rc" -eq 0 ] && [ "$vmm_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
