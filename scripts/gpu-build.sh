#!/usr/bin/env bash
# Builds the binaries scripts/gpu-check.sh runs (no CUDA needed here), stripped and
# xz-compressed into DIR (default .gpu/), small enough to copy to a GPU machine.
set -euo pipefail
dir=${1:-.gpu}
mkdir -p "$dir"
cargo build --release -p millrace-benchmarks --features cuda --bin gpu_train
tests=$(cargo test --release -p millrace-ml --features cuda --test integration --no-run --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
cp target/release/gpu_train "$dir/gpu_train"
cp "$tests" "$dir/ml-tests"
strip "$dir/gpu_train" "$dir/ml-tests"
xz -T0 -6 -f "$dir/gpu_train" "$dir/ml-tests"
ls -la "$dir"
