#!/usr/bin/env bash
# What needs a GPU, run from the repository root (docs/testing.md, "On a GPU").
#
# On a lent GPU machine, with the kit built here by scripts/gpu-kit.sh and carried (.gpu-kit):
#   scripts/gpu-check.sh all        # one call, under 8 minutes: the gpu tests, compute-sanitizer,
#                                   # the benchmarks, $OUT/figures.json and its plot and tables
# On this machine (no GPU), what `all` relies on:
#   scripts/gpu-check.sh dry-run [BUILD] [--figures-only]
#                                   # the kit (or BUILD's tree): its manifest and every path `all`
#                                   # calls; the tests from it skip (77); the figures pipeline on
#                                   # tests/data/gpu-check against the expected tables
# On a GPU machine with a longer lease and .device-deps carried, building there:
#   scripts/gpu-check.sh build      # configure the device preset (sm_90a) and build everything
#   scripts/gpu-check.sh test       # ctest --preset gpu: kernels, communicators, the block, demo
#   scripts/gpu-check.sh sanitize   # compute-sanitizer memcheck and racecheck on the CUDA suite
#   scripts/gpu-check.sh bench      # the benchmarks: JSON, figures.json and plot into $OUT
#
# `all` exits with the sum of what failed: 1 tests, 2 sanitizer (a finding or a time-out),
# 4 benchmarks, 8 figures, 16 no kit or no GPU. Each phase has a time budget (GPU_CHECK_*_S
# below), so a hang in one leaves the others' results.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=build/device
out=${OUT:-bench-results}
step=${1:-}
kit=${GPU_KIT:-.gpu-kit}

# Seconds per phase of `all`. At worst (every benchmark timing out and falling back to
# --quick) they sum to 465 s, under the 8 minutes one call is given; the dry run checks it.
tests_s=${GPU_CHECK_TESTS_S:-110}
memcheck_s=${GPU_CHECK_MEMCHECK_S:-40}
nan_memcheck_s=${GPU_CHECK_NAN_MEMCHECK_S:-10}
racecheck_s=${GPU_CHECK_RACECHECK_S:-30}
initcheck_s=${GPU_CHECK_INITCHECK_S:-15}
sanitize_s=$((memcheck_s + nan_memcheck_s + racecheck_s + initcheck_s + 5))
permute_s=${GPU_CHECK_PERMUTE_S:-35}
experts_s=${GPU_CHECK_EXPERTS_S:-70}
torch_s=${GPU_CHECK_TORCH_S:-80}
quick_s=${GPU_CHECK_QUICK_S:-20}
figures_s=${GPU_CHECK_FIGURES_S:-10}
worst_s=$((tests_s + sanitize_s + permute_s + experts_s + torch_s + 3 * quick_s + figures_s))
all_limit_s=480

# The benchmarks' binaries, the CUDA suite and the scripts `all` calls, relative to the kit
# or to the repository.
kit_extras=(tests/meshplan_cuda_tests benchmarks/permute_bench benchmarks/experts_bench
            benchmarks/libmeshplan_torch_bridge.so)
repo_scripts=(tools/gpu_check/manifest.py tools/gpu_check/run_tests.py tools/perf/figures_to_tables.py
              benchmarks/cuda/torch_bench.py benchmarks/cuda/plot_permute.py)

# compute-sanitizer on the CUDA suite: memcheck on every kernel (the GPU tests but the long
# MoE sweeps, which the block tests cover with smaller cases: the forward's NaN case, the
# backward's "[backward]" cases), racecheck on the kernels with shared memory (the
# weight-gradient chain's is [chain]), initcheck on the permutation. With a time limit per
# tool when given (`all`); returns the number of tools that failed or ran out of time.
sanitize_suite() {
  local suite=$1 limit=${2:-} failed=0 rc sanitizer
  sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/compute-sanitizer/compute-sanitizer 2>/dev/null | head -n 1)
  if [ -z "$sanitizer" ]; then
    echo "== compute-sanitizer: not found (PATH, /usr/local/cuda*/compute-sanitizer/): nothing checked"
    return 4
  fi
  local -a runs=(
    "memcheck|${memcheck_s}|~[host]~[moe]"
    "memcheck|${nan_memcheck_s}|The GPU block refuses a NaN in the hidden states on every rank"
    "racecheck|${racecheck_s}|[experts],[router],[chain]"
    "initcheck|${initcheck_s}|[permute]")
  for run in "${runs[@]}"; do
    IFS='|' read -r tool seconds spec <<<"$run"
    local -a wrap=()
    if [ -n "$limit" ]; then wrap=(timeout -k 5 "$seconds"); fi
    echo "== compute-sanitizer --tool $tool \"$spec\"${limit:+ (at most $seconds s)}"
    "${wrap[@]}" "$sanitizer" --tool "$tool" --error-exitcode 1 "$suite" "$spec"
    rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
      echo "== $tool \"$spec\": ran out of its $seconds s: not checked to the end"
      failed=$((failed + 1))
    elif [ "$rc" -ne 0 ]; then
      echo "== $tool \"$spec\": FAILED ($rc)"
      failed=$((failed + 1))
    fi
  done
  return "$failed"
}

# The CUDA libraries: the machine's toolkit, else PyTorch's wheels, else the kit's cudart.
cuda_library_path() {
  local dirs=() d
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && dirs+=("$d")
  done
  while IFS= read -r d; do dirs+=("$d"); done < <(python3 - <<'EOF' 2>/dev/null
import glob, os, site
for base in site.getsitepackages() + [site.getusersitepackages()]:
    for lib in sorted(glob.glob(os.path.join(base, "nvidia", "*", "lib"))):
        if glob.glob(os.path.join(lib, "libcublas*.so*")) or glob.glob(os.path.join(lib, "libcudart*.so*")):
            print(lib)
EOF
)
  [ -d "$kit/lib" ] && dirs+=("$(realpath "$kit/lib")")
  local IFS=:
  echo "${dirs[*]}"
}

# `all`'s phases: phase NAME BUDGET BIT COMMAND... runs the command under its budget, its
# output into the log, and records the outcome (phases.jsonl, a line on stdout).
phase() {
  local name=$1 budget=$2 bit=$3 rc start seconds verdict
  shift 3
  start=$(date +%s)
  echo "===== $name (at most $budget s): $*" >>"$log"
  timeout -k 10 "$budget" "$@" >>"$log" 2>&1
  rc=$?
  seconds=$(($(date +%s) - start))
  case $rc in
    0) verdict=ok ;;
    124 | 137) verdict="timed out" ;;
    *) verdict="failed ($rc)" ;;
  esac
  [ "$rc" -ne 0 ] && status=$((status | bit))
  echo "===== $name: $verdict in $seconds s" >>"$log"
  printf '%-10s %-14s %4s s of %4s s\n' "$name" "$verdict" "$seconds" "$budget"
  printf '{"phase": "%s", "status": "%s", "seconds": %s, "budget": %s}\n' "$name" "$verdict" "$seconds" "$budget" \
    >>"$work/phases.jsonl"
  return "$rc"
}

# A benchmark under its budget, into $work/NAME.json; if the full sweep runs out of time,
# the --quick one (4096 tokens) in $quick_s s more, so its figures are not all lost.
bench_phase() {
  local name=$1 budget=$2
  shift 2
  phase "$name" "$budget" 4 "$@" --out "$work/$name.json"
  local rc=$?
  if { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && [ ! -s "$work/$name.json" ]; then
    phase "$name-quick" "$quick_s" 4 "$@" --quick --out "$work/$name.json"
  fi
}

all() {
  out=${OUT:-gpu-check-results}
  mkdir -p "$out"
  log=$out/gpu-check.log
  work=$(mktemp -d)
  status=0
  : >"$log"
  echo "gpu-check all: $(date -u '+%Y-%m-%d %H:%M UTC'), at most $worst_s s, log $log" | tee -a "$log"
  if [ ! -f "$kit/manifest.json" ]; then
    echo "no $kit/manifest.json: build the kit with scripts/gpu-kit.sh and carry $kit" | tee -a "$log"
    exit 16
  fi
  # The programs stay executable whatever the copy did to their modes.
  find "$kit/tests" "$kit/examples" "$kit/benchmarks" -maxdepth 1 -type f -exec chmod +x {} + 2>/dev/null
  export PATH="/usr/local/cuda/bin:$PATH"
  # The kit's programs look in the CUDA folders first; PyTorch keeps its own libraries first
  # (the torch phase), the bridge finding what torch has not loaded after them.
  local given=${LD_LIBRARY_PATH:-} cuda_dirs
  cuda_dirs=$(cuda_library_path)
  export LD_LIBRARY_PATH="$cuda_dirs${given:+:$given}"
  device=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>>"$log" | head -n 1)
  { nvidia-smi 2>&1 | head -n 15; echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; } >>"$log"
  echo "device: ${device:-none visible}" | tee -a "$log"
  # What the kit's programs cannot load here (ldd's "not found"): said at once, not per test.
  missing=$(for f in "$kit"/tests/* "$kit"/examples/* "$kit"/benchmarks/*; do
              [ -f "$f" ] && ldd "$f" 2>/dev/null | grep "not found" | sed "s|^|$f: |"
            done | sort -u)
  if [ -n "$missing" ]; then echo "libraries not found:"$'\n'"$missing" | tee -a "$log"; fi
  if [ -z "$device" ]; then status=$((status | 16)); fi

  phase tests "$tests_s" 1 python3 tools/gpu_check/run_tests.py --kit "$kit" --source . --jobs "${GPU_CHECK_JOBS:-4}" \
    --budget $((tests_s - 10)) --log "$log" --results "$out/tests.json"
  grep -a "^tests: \|^  - " "$log" | tail -n 40
  phase sanitize "$sanitize_s" 2 bash scripts/gpu-check.sh sanitize "$kit/tests/meshplan_cuda_tests" limited
  grep -a "^== .*\(FAILED\|ran out\|not found\)" "$log" | tail -n 4
  bench_phase permute "$permute_s" "$kit/benchmarks/permute_bench"
  bench_phase experts "$experts_s" "$kit/benchmarks/experts_bench"
  bench_phase torch "$torch_s" env LD_LIBRARY_PATH="${given:+$given:}$cuda_dirs" \
    python3 benchmarks/cuda/torch_bench.py --bridge "$kit/benchmarks/libmeshplan_torch_bridge.so"
  phase figures "$figures_s" 8 bash -c "
    python3 tools/perf/figures_to_tables.py collect --permute '$work/permute.json' --experts '$work/experts.json' \
      --torch '$work/torch.json' --device '$device' --phases '$work/phases.jsonl' --out '$out/figures.json' &&
    python3 tools/perf/figures_to_tables.py tables '$out/figures.json' > '$out/performance-tables.md' &&
    if python3 -c 'import matplotlib' 2>/dev/null; then
      python3 benchmarks/cuda/plot_permute.py '$out/figures.json' '$out/figures.png'
    else echo 'no matplotlib here: no plot'; fi"
  rm -rf "$work"
  echo "gpu-check all: exit status $status (1 tests, 2 sanitizer, 4 benchmarks, 8 figures, 16 no GPU); files in $out:" \
    | tee -a "$log"
  ls -la "$out"
  exit "$status"
}

dry_run() {
  local build="" figures_only=0 failed=0 tmp arg
  for arg in "$@"; do
    case $arg in
      --figures-only) figures_only=1 ;;
      *) build=$arg ;;
    esac
  done
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  fail() { echo "dry-run: FAILED: $*"; failed=1; }

  for f in "${repo_scripts[@]}" tests/data/gpu-check/expected_tables.md; do
    [ -f "$f" ] || fail "no $f in the repository"
  done
  [ "$worst_s" -le "$all_limit_s" ] || fail "the phases' budgets sum to $worst_s s at worst, over $all_limit_s s"

  if [ "$figures_only" -eq 0 ]; then
    # The kit (staged by gpu-kit.sh), or the build tree as one: the manifest, every path.
    local where manifest
    if [ -z "$build" ] && [ -f "$kit/manifest.json" ]; then
      where=$kit manifest=$kit/manifest.json
    else
      where=${build:-build/kit} manifest=$tmp/manifest.json
      local -a extras=()
      for e in "${kit_extras[@]}"; do extras+=(--extra "$where/$e"); done
      "${CTEST:-ctest}" --test-dir "$where" -L gpu --show-only=json-v1 >"$tmp/tests.json" 2>"$tmp/ctest.err" \
        || fail "ctest could not list $where's gpu tests: $(cat "$tmp/ctest.err")"
      python3 tools/gpu_check/manifest.py stage --ctest-json "$tmp/tests.json" --build "$where" --source . \
        --kit "$where" --no-copy --manifest-out "$manifest" "${extras[@]}" || fail "no manifest from $where"
    fi
    echo "dry-run: the kit: $where"
    python3 tools/gpu_check/manifest.py check --kit "$where" --source . --manifest "$manifest" \
      $(printf -- '--extra @KIT@/%s ' "${kit_extras[@]}") || fail "the kit misses what 'all' calls"
    if nvidia-smi -L >/dev/null 2>&1; then
      echo "dry-run: a GPU is visible: the tests are not run here (scripts/gpu-check.sh all does)"
    else
      python3 tools/gpu_check/run_tests.py --kit "$where" --source . --manifest "$manifest" --jobs 2 --budget 240 \
        --expect-skip --log "$tmp/tests.log" || { cat "$tmp/tests.log"; fail "a test of the kit did not skip as it must without a GPU"; }
    fi
  fi

  # The runner's verdicts against CTest's rules, on tests whose outcome is known.
  local judge=tests/data/gpu-check/judge_manifest.json
  python3 tools/gpu_check/run_tests.py --kit "$tmp/judge-kit" --source . --manifest "$judge" --jobs 4 --budget 60 \
    --log "$tmp/judge.log" --results "$tmp/judge.json" >/dev/null
  python3 - "$judge" "$tmp/judge.json" <<'EOF' || { cat "$tmp/judge.log"; fail "run_tests.py judges a test as CTest would not"; }
import json, sys
tests, results = (json.load(open(p))["tests"] for p in sys.argv[1:])
got = {r["name"]: r["status"] for r in results}
wrong = [f"{t['name']}: {got.get(t['name'])}, not {t['expect']}" for t in tests if got.get(t["name"]) != t["expect"]]
print("\n".join(wrong) or f"dry-run: run_tests.py judges {len(tests)} known cases as CTest does")
sys.exit(1 if wrong else 0)
EOF

  # The figures pipeline on the sample benchmark files, against the expected tables.
  local data=tests/data/gpu-check
  python3 tools/perf/figures_to_tables.py collect --permute "$data/permute.json" --experts "$data/experts.json" \
    --torch "$data/torch.json" --device "NVIDIA H100 80GB HBM3" --out "$tmp/figures.json" || fail "collect"
  python3 tools/perf/figures_to_tables.py tables "$tmp/figures.json" >"$tmp/tables.md" || fail "tables"
  diff -u "$data/expected_tables.md" "$tmp/tables.md" || fail "the tables differ from $data/expected_tables.md"
  # docs/performance.md updated in place: its marked sections become the tables, the rest stays.
  cp docs/performance.md "$tmp/performance.md"
  if python3 tools/perf/figures_to_tables.py update "$tmp/figures.json" "$tmp/performance.md"; then
    python3 - "$tmp/performance.md" "$tmp/tables.md" docs/performance.md <<'EOF' || fail "update"
import re, sys
updated, tables, original = (open(p).read() for p in sys.argv[1:])
marked = re.compile(r"<!-- gpu-figures:(\w+) -->\n.*?<!-- /gpu-figures:\1 -->", re.S)
sections = lambda text: {m.group(1): m.group(0) for m in marked.finditer(text)}
assert marked.sub("", updated) == marked.sub("", original), "text outside the markers changed"
assert sections(updated) == sections(tables), "the marked sections are not the tables"
print("dry-run: docs/performance.md's marked sections take the tables, the rest unchanged")
EOF
  else
    fail "docs/performance.md has no markers for the figures"
  fi
  if python3 -c "import matplotlib" 2>/dev/null; then
    python3 benchmarks/cuda/plot_permute.py "$tmp/figures.json" "$tmp/figures.png" && [ -s "$tmp/figures.png" ] \
      || fail "the plot"
  else
    echo "dry-run: no matplotlib here: the plot is not drawn"
  fi
  bash -n "$0" || fail "this script does not parse"
  if [ "$failed" -eq 0 ]; then echo "dry-run: ok"; else echo "dry-run: FAILED"; fi
  return "$failed"
}

case "$step" in
  all) all ;;
  dry-run) shift; dry_run "$@"; exit $? ;;
  build)
    set -e
    cmake --preset device -DCMAKE_CUDA_ARCHITECTURES=90a
    cmake --build --preset device -j "$(nproc)"
    ;;
  test)
    ctest --preset gpu --output-on-failure -j 1
    ;;
  sanitize)  # [SUITE [limited]]: `all` names the kit's suite, each tool under its budget
    sanitize_suite "${2:-$build/tests/meshplan_cuda_tests}" "${3:-}"
    ;;
  bench)
    set -e
    mkdir -p "$out"
    "$build/benchmarks/permute_bench" --out "$out/permute.json"
    "$build/benchmarks/experts_bench" --out "$out/experts.json"
    python3 benchmarks/cuda/torch_bench.py --bridge "$build/benchmarks/libmeshplan_torch_bridge.so" \
      --out "$out/torch.json"
    python3 tools/perf/figures_to_tables.py collect --permute "$out/permute.json" --experts "$out/experts.json" \
      --torch "$out/torch.json" --out "$out/figures.json"
    python3 tools/perf/figures_to_tables.py tables "$out/figures.json" >"$out/performance-tables.md"
    if python3 -c "import matplotlib" 2>/dev/null; then
      python3 benchmarks/cuda/plot_permute.py "$out/figures.json" "$out/figures.png"
    fi
    ;;
  *)
    sed -n '2,22p' "$0"
    exit 2
    ;;
esac
