#!/usr/bin/env bash
# Builds what the GPU machine runs, here (it has no Boost, Catch2 or Open MPI, and its time
# is short), and stages it into .gpu-kit/, the folder the device call carries with the
# repository (docs/testing.md, "On a GPU"):
#
#   scripts/gpu-kit.sh            # build (sm_90a) in build/kit, strip, manifest, stage, size
#
# The kit holds the programs of the gpu-labelled tests (the CUDA suite, the toolchain check,
# the GPU demo, the runner and safetensors_compare), the benchmarks and the torch bridge,
# stripped, at their paths relative to the build directory; libcudart as a fallback for a
# machine whose CUDA lacks it; and manifest.json, the gpu tests' commands with this
# machine's paths made kit- and repository-relative (tools/gpu_check/manifest.py). Test
# data stays in the repository, which travels anyway. GPU_KIT_BUILD and GPU_KIT_JOBS change
# the build directory (default build/kit) and the build's parallelism (default 2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${GPU_KIT_BUILD:-build/kit}
kit=.gpu-kit
limit_mib=50  # the device call carries 64 MiB in all, the repository's files included
targets=(cuda_toolchain meshplan_cuda_tests moe_gpu_demo meshplan-moe safetensors_compare
         permute_bench experts_bench meshplan_torch_bridge)
extras=(tests/meshplan_cuda_tests benchmarks/permute_bench benchmarks/experts_bench
        benchmarks/libmeshplan_torch_bridge.so)

export PATH="/usr/local/cuda/bin:$PATH"
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake --preset default -B "$build" -DCMAKE_CUDA_ARCHITECTURES=90a >/dev/null
fi
if ! grep -q "^CMAKE_CUDA_ARCHITECTURES:.*=90a$" "$build/CMakeCache.txt"; then
  echo "gpu-kit: $build is not an sm_90a build (CMAKE_CUDA_ARCHITECTURES); the GPU machine has an H100 or H200" >&2
  exit 1
fi
cmake --build "$build" -j "${GPU_KIT_JOBS:-2}" --target "${targets[@]}"

ctest --test-dir "$build" -L gpu --show-only=json-v1 >"$build/gpu-tests.json"
rm -rf "$kit.new"
args=()
for e in "${extras[@]}"; do args+=(--extra "$build/$e"); done
python3 tools/gpu_check/manifest.py stage --ctest-json "$build/gpu-tests.json" --build "$build" --source . \
  --kit "$kit.new" --strip "${args[@]}"
cudart=$(ldd "$kit.new/tests/meshplan_cuda_tests" | awk '/libcudart\.so/ {print $3}')
if [ -n "$cudart" ]; then
  mkdir -p "$kit.new/lib"
  cp -L "$cudart" "$kit.new/lib/"
fi
rm -rf "$kit"
mv "$kit.new" "$kit"
python3 tools/gpu_check/manifest.py check --kit "$kit" --source .

kib=$(du -sk "$kit" | cut -f1)
tree_kib=$(git ls-files -co --exclude-standard -z | du -ck --files0-from=- 2>/dev/null | tail -n 1 | cut -f1)
echo "gpu-kit: $kit is $((kib / 1024)) MiB ($kib KiB); with the repository's files $(((kib + tree_kib) / 1024)) MiB of the 64 MiB a call carries"
du -sh "$kit"/* | sort -h
if [ "$kib" -gt $((limit_mib * 1024)) ]; then
  echo "gpu-kit: over $limit_mib MiB" >&2
  exit 1
fi
echo "gpu-kit: carry it: run(command=\"scripts/gpu-check.sh all\", carry=[\"$kit\"], timeout_s=540)"
