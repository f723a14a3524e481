#!/usr/bin/env bash
# GPU checks for a machine with an NVIDIA GPU and no Rust toolchain: runs the GPU tests and the
# gpu_train benchmark from prebuilt binaries.
#
#   scripts/gpu-check.sh BIN_DIR OUT_DIR
#
# BIN_DIR holds `ml-tests` (the millrace-ml integration test binary built with --features cuda)
# and `gpu_train` (benchmarks, --features cuda, release), each optionally .xz-compressed. Build
# them with scripts/gpu-build.sh. Results: OUT_DIR/tests.log, OUT_DIR/bench.jsonl.
set -uo pipefail
bin=${1:?usage: gpu-check.sh BIN_DIR OUT_DIR}
out=${2:?usage: gpu-check.sh BIN_DIR OUT_DIR}
mkdir -p "$out"
for f in "$bin"/*.xz; do [ -e "$f" ] && xz -d -f "$f"; done
chmod +x "$bin"/ml-tests "$bin"/gpu_train
# The CUDA libraries (NVRTC, cuBLASLt); never the toolkit's stubs/.
if [ -d /usr/local/cuda/lib64 ]; then export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}; fi
export MILLRACE_REQUIRE_GPU=1 RUST_LOG=${RUST_LOG:-info}
export MILLRACE_KERNEL_CACHE=$(mktemp -d)/kernels
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/gpu.txt"

echo "== GPU tests"
timeout 300 "$bin"/ml-tests gpu --test-threads=1 2>&1 | tee "$out/tests.log"
echo "tests exit: ${PIPESTATUS[0]}"

echo "== start-up: cold kernel cache, then warm"
timeout 300 "$bin"/gpu_train --start 2>&1 | tee -a "$out/bench.jsonl"
timeout 60 "$bin"/gpu_train --start 2>&1 | tee -a "$out/bench.jsonl"

echo "== step throughput"
timeout 200 "$bin"/gpu_train --seconds ${SECONDS_PER_CONFIG:-2} 2>&1 | tee -a "$out/bench.jsonl"
timeout 60 "$bin"/gpu_train --no-graphs --only small512 --seconds 1 2>&1 | sed 's/"config":"small512"/"config":"small512_no_graphs"/' | tee -a "$out/bench.jsonl"

MILLRACE_GPU_DRELU=1 timeout 60 "$bin"/gpu_train --only large_bf16 --seconds 1 2>&1 | sed 's/"config":"large_bf16"/"config":"large_bf16_drelu_fused"/' | tee -a "$out/bench.jsonl"
MILLRACE_GPU_EPILOGUES=0 timeout 60 "$bin"/gpu_train --only large_bf16 --seconds 1 2>&1 | sed 's/"config":"large_bf16"/"config":"large_bf16_no_epilogues"/' | tee -a "$out/bench.jsonl"

echo "== end to end (etl_to_train, then its model served in-process), on the GPU and on this machine's CPU"
timeout 300 "$bin"/gpu_train --e2e cuda --serve-clients 64 2>&1 | tee -a "$out/bench.jsonl"
timeout 300 "$bin"/gpu_train --e2e cuda --workers 2 2>&1 | tee -a "$out/bench.jsonl"
timeout 300 "$bin"/gpu_train --e2e cpu --workers ${CPU_WORKERS:-8} --serve-clients 64 2>&1 | tee -a "$out/bench.jsonl"
