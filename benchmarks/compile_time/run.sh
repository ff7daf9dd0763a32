#!/usr/bin/env bash
# Times `g++ -O0 -c` of validate_deepseek_v3.cpp against headers_only.cpp (same headers,
# nothing validated), best of N runs each, and prints JSON. A benchmark: it never fails on
# a figure. Usage: run.sh <compiler> <flags-file> <source-dir> [runs]
set -euo pipefail
shopt -s inherit_errexit
cxx=$1 flags=$2 dir=$3 runs=${4:-5}
mapfile -t args < "$flags"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
best() {
  local best_ns=""
  for _ in $(seq "$runs"); do
    local t0 t1
    t0=$(date +%s%N)
    "$cxx" -std=c++20 -O0 "${args[@]}" -c "$dir/$1" -o "$out/x.o"
    t1=$(date +%s%N)
    local ns=$((t1 - t0))
    if [ -z "$best_ns" ] || [ "$ns" -lt "$best_ns" ]; then best_ns=$ns; fi
  done
  echo "$best_ns"
}
base=$(best headers_only.cpp)
full=$(best validate_deepseek_v3.cpp)
awk -v b="$base" -v f="$full" -v cxx="$("$cxx" --version | head -1)" -v runs="$runs" 'BEGIN {
  printf "{\n  \"benchmark\": \"compile_time\",\n  \"compiler\": \"%s\",\n  \"flags\": \"-std=c++20 -O0 -c\",\n", cxx
  printf "  \"runs\": %d,\n  \"headers_only_s\": %.3f,\n  \"validate_deepseek_v3_s\": %.3f,\n", runs, b/1e9, f/1e9
  printf "  \"validation_adds_s\": %.3f,\n  \"target_s\": 3.0\n}\n", (f-b)/1e9 }'
