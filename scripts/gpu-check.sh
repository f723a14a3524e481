#!/usr/bin/env bash
# GPU checks for a machine with an NVIDIA GPU and no Rust toolchain: runs the GPU tests and the
# gpu_train benchmark from prebuilt binaries.
#
#   scripts/gpu-check.sh BIN_DIR OUT_DIR
#
# BIN_DIR holds `ml-tests` (the millrace-ml integration test binary built with --features cuda)
# and `gpu_train` (benchmarks, --features cuda, release), each optionally .xz-compressed. Build
# them with scripts/gpu-build.sh. Results: OUT_DIR/tests.log, OUT_DIR/bench.jsonl.
#
# Every step runs even when one before it failed (so one run gathers every measurement); the
# script then exits 1 and names the failed steps. A step fails when its command exits non-zero
# (a failed test, a timeout, a crash), whatever the commands it is piped into do.
set -euo pipefail
bin=${1:?usage: gpu-check.sh BIN_DIR OUT_DIR}
out=${2:?usage: gpu-check.sh BIN_DIR OUT_DIR}
mkdir -p "$out"
for f in "$bin"/*.xz; do
  if [ -e "$f" ]; then xz -d -f "$f"; fi
done
chmod +x "$bin"/ml-tests "$bin"/gpu_train
# The CUDA libraries (NVRTC, cuBLASLt); never the toolkit's stubs/.
if [ -d /usr/local/cuda/lib64 ]; then export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}; fi
export MILLRACE_REQUIRE_GPU=1 RUST_LOG=${RUST_LOG:-info}
MILLRACE_KERNEL_CACHE=$(mktemp -d)/kernels
export MILLRACE_KERNEL_CACHE

failed=()
# step NAME LOG COMMAND...: runs COMMAND, its output shown and appended to LOG; a non-zero exit
# is recorded under NAME. (`cmd | tee` would report tee's status: PIPESTATUS keeps the command's.)
step() {
  local name=$1 log=$2 status
  shift 2
  set +e
  "$@" 2>&1 | tee -a "$log"
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -ne 0 ]; then
    echo "!! FAILED (exit $status): $name"
    failed+=("$name (exit $status)")
  fi
}
# relabel FROM TO COMMAND...: COMMAND with "config":"FROM" renamed "config":"TO" in its output;
# exits with COMMAND's status.
relabel() {
  local from=$1 to=$2 status
  shift 2
  set +e
  "$@" | sed "s/\"config\":\"$from\"/\"config\":\"$to\"/"
  status=${PIPESTATUS[0]}
  set -e
  return "$status"
}

step "nvidia-smi" "$out/gpu.txt" nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv

echo "== GPU tests"
step "GPU tests" "$out/tests.log" timeout 300 "$bin"/ml-tests gpu --test-threads=1

echo "== start-up: cold kernel cache, then warm"
step "start-up, cold cache" "$out/bench.jsonl" timeout 300 "$bin"/gpu_train --start
step "start-up, warm cache" "$out/bench.jsonl" timeout 60 "$bin"/gpu_train --start

echo "== step throughput"
step "step throughput" "$out/bench.jsonl" timeout 200 "$bin"/gpu_train --seconds "${SECONDS_PER_CONFIG:-2}"
step "small512 without CUDA graphs" "$out/bench.jsonl" \
  relabel small512 small512_no_graphs timeout 60 "$bin"/gpu_train --no-graphs --only small512 --seconds 1
step "large_bf16, DRELU fused" "$out/bench.jsonl" \
  relabel large_bf16 large_bf16_drelu_fused env MILLRACE_GPU_DRELU=1 timeout 60 "$bin"/gpu_train --only large_bf16 --seconds 1
step "large_bf16, no epilogues" "$out/bench.jsonl" \
  relabel large_bf16 large_bf16_no_epilogues env MILLRACE_GPU_EPILOGUES=0 timeout 60 "$bin"/gpu_train --only large_bf16 --seconds 1

echo "== end to end (etl_to_train, then its model served in-process), on the GPU and on this machine's CPU"
step "e2e cuda, 1 worker, served" "$out/bench.jsonl" timeout 300 "$bin"/gpu_train --e2e cuda --serve-clients 64
step "e2e cuda, 2 workers" "$out/bench.jsonl" timeout 300 "$bin"/gpu_train --e2e cuda --workers 2
step "e2e cpu, served" "$out/bench.jsonl" timeout 300 "$bin"/gpu_train --e2e cpu --workers "${CPU_WORKERS:-8}" --serve-clients 64

if [ "${#failed[@]}" -gt 0 ]; then
  echo "gpu-check: ${#failed[@]} step(s) failed:"
  printf '  - %s\n' "${failed[@]}"
  exit 1
fi
echo "gpu-check: every step passed"
