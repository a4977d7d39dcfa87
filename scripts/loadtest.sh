#!/usr/bin/env bash
# Measures the daemon's execute-gate throughput: sampled verify requests per
# second and latency percentiles, from a local wrk load generator.
#
#   scripts/loadtest.sh [SHARD_MIB] [SAMPLES] [CHUNK_SIZE] [DURATION]
#
# Defaults: a 256 MiB shard, 16 samples, 64 KiB chunks, 15 s. Needs wrk
# (apt-get install wrk). Builds the binary, starts a daemon on the simulated
# device in a temp dir, seals one shard, runs wrk (WRK_ARGS, default
# "-t1 -c4": on a 2-core machine more connections only queue behind the
# CPU-bound hashing) and prints wrk's report with its latency distribution.
#
# Each sampled verification hashes SAMPLES chunks on the (simulated)
# device: with 64 KiB chunks that is 1 MiB of SHA-256 per request on the
# host CPU, which bounds the rate; a real GPU hashes on the device.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-256}
samples=${2:-16}
chunk=${3:-64KiB}
duration=${4:-15s}
command -v wrk >/dev/null || { echo "loadtest: wrk not found (apt-get install wrk)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
go build -o "$tmp/vramseal" ./cmd/vramseal
"$tmp/vramseal" serve --listen 127.0.0.1:0 --device sim --sim-capacity 4GiB --chunk-size "$chunk" \
	--data-dir "$tmp/data" --log-level warn 2>"$tmp/serve.log" &
pid=$!
for _ in $(seq 100); do
	addr=$(grep -o 'serving on http://[0-9.:]*' "$tmp/serve.log" | sed 's#serving on ##') && [ -n "$addr" ] && break
	sleep 0.1
done
head -c "$((size_mib << 20))" /dev/urandom >"$tmp/model.bin"
"$tmp/vramseal" shard add "$tmp/model.bin" --shard-id load --addr "$addr" >/dev/null
# Warm up, then measure.
wrk_args=${WRK_ARGS:--t1 -c4}
# shellcheck disable=SC2086
wrk $wrk_args -d3s -s scripts/verify-load.lua "$addr" -- load "$samples" >/dev/null
echo "shard $size_mib MiB, $samples samples of $chunk chunks"
# shellcheck disable=SC2086
wrk $wrk_args -d"$duration" --latency -s scripts/verify-load.lua "$addr" -- load "$samples"
