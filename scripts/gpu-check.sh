#!/usr/bin/env bash
# What still needs a GPU, in steps that fit the device tool's 10-minute calls. Run from the
# repository root on the GPU machine, with .device-deps carried (docs/testing.md, "On a GPU"):
#
#   scripts/gpu-check.sh build      # configure the device preset (sm_90a) and build everything
#   scripts/gpu-check.sh test       # ctest --preset gpu: kernels, communicators, the block, demo
#   scripts/gpu-check.sh sanitize   # compute-sanitizer memcheck and racecheck on the CUDA suite
#   scripts/gpu-check.sh bench      # the benchmarks: JSON (and plots) into ${OUT:-bench-results}
#
# Each step prints what it ran; the exit status is the step's.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build/device
out=${OUT:-bench-results}
step=${1:-}

case "$step" in
  build)
    cmake --preset device -DCMAKE_CUDA_ARCHITECTURES=90a
    cmake --build --preset device -j "$(nproc)"
    ;;
  test)
    ctest --preset gpu --output-on-failure -j 1
    ;;
  sanitize)
    suite=$build/tests/meshplan_cuda_tests
    # memcheck on every GPU test but the long MoE sweeps (the block tests check what they run
    # with smaller cases: the forward's NaN case below, the backward's "[backward]" cases);
    # racecheck on the kernels with shared memory (the weight-gradient chain's is [chain]).
    compute-sanitizer --tool memcheck --error-exitcode 1 "$suite" "~[host]~[moe]"
    compute-sanitizer --tool memcheck --error-exitcode 1 "$suite" "The GPU block refuses a NaN in the hidden states on every rank"
    compute-sanitizer --tool racecheck --error-exitcode 1 "$suite" "[experts],[router],[chain]"
    compute-sanitizer --tool initcheck --error-exitcode 1 "$suite" "[permute]"
    ;;
  bench)
    mkdir -p "$out"
    "$build/benchmarks/permute_bench" --out "$out/permute.json"
    "$build/benchmarks/experts_bench" --out "$out/experts.json"
    python3 benchmarks/cuda/torch_bench.py --bridge "$build/benchmarks/libmeshplan_torch_bridge.so" \
      --out "$out/torch.json"
    if python3 -c "import matplotlib" 2>/dev/null; then
      python3 benchmarks/cuda/plot_permute.py "$out/permute.json" "$out/permute_bandwidth.png"
    fi
    ;;
  *)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
