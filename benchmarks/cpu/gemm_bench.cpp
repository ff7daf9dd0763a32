// The CPU GEMM kernels (cpu/detail/gemm.hpp) next to this CPU's fp32 FMA peak, measured in the
// same run: a benchmark, never a test.
//
//   cpu_gemm_bench [--isa portable|avx2|avx512] [--threads 1,2] [--reps 7]
//
// For each instruction-set path this CPU runs (or the one given) and each thread count, the
// GFLOP/s (an FMA counts 2) of
//   - gemm at M x N x K = 256 x 1024 x 1024, 256 x 1024 x 512 and 2048 x 1024 x 1024;
//   - gemm_batch over 32 experts of 256 rows each (N 1024, K 1024, every expert its own
//     weight), the rows read through a permutation of (token, slot) pairs as the MoE block
//     reads them (1024 tokens, top-8);
// next to the FMA peak of the same path and threads (cpu/detail/fma_peak.hpp) and the fraction of
// it. The best of --reps runs counts (a shared host only ever slows a run down); the peak is
// measured before and after each path's cases and the higher one counts, so the fraction
// errs low. The portable path is far slower (scalar, std::fma): it runs each case once.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "meshplan/cpu/detail/fma_peak.hpp"
#include "meshplan/cpu/detail/gemm.hpp"
#include "meshplan/cpu/isa.hpp"
#include "meshplan/cpu/detail/packed_matrix.hpp"
#include "meshplan/cpu/thread_pool.hpp"

namespace mp = meshplan;
namespace cpu = meshplan::cpu;
using mp::index_t;

namespace {

struct Options {
  std::vector<cpu::Isa> isas = cpu::runnable_isas();
  std::vector<int> threads = {1, 2};
  int reps = 7;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "cpu_gemm_bench: %s\nusage: cpu_gemm_bench [--isa portable|avx2|avx512] [--threads 1,2] [--reps 7]\n",
               why);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (i + 1 >= argc) usage("every option takes a value");
    std::string_view value = argv[++i];
    if (arg == "--isa") {
      try {
        o.isas = {cpu::parse_isa(value)};
      } catch (const mp::RuleViolation& e) {
        usage(e.what());
      }
    } else if (arg == "--threads") {
      o.threads.clear();
      std::string list(value);
      for (std::size_t start = 0; start <= list.size();) {
        std::size_t comma = std::min(list.find(',', start), list.size());
        int t = std::atoi(list.substr(start, comma - start).c_str());
        if (t < 1) usage("--threads takes positive counts, e.g. 1,2");
        o.threads.push_back(t);
        start = comma + 1;
      }
    } else if (arg == "--reps") {
      o.reps = std::max(1, std::atoi(std::string(value).c_str()));
    } else {
      usage("unknown option");
    }
  }
  return o;
}

std::vector<float> random_floats(std::size_t count, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> v(count);
  for (float& x : v) x = uniform(rng);
  return v;
}

// One product of the table: its tasks, and the data they point into.
struct Case {
  std::string name;
  double flops = 0;
  std::vector<float> a, c;
  std::vector<std::int32_t> index;
  std::vector<cpu::PackedMatrix<float>> weights;
  std::vector<cpu::GemmTask<float>> tasks;
};

Case single(index_t m, index_t n, index_t k) {
  Case c;
  c.name = "gemm " + std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k);
  c.flops = 2.0 * static_cast<double>(m * n * k);
  c.a = random_floats(static_cast<std::size_t>(m * k), 1);
  c.c.assign(static_cast<std::size_t>(m * n), 0.0f);
  std::vector<float> b = random_floats(static_cast<std::size_t>(n * k), 2);
  c.weights.push_back(cpu::PackedMatrix<float>::pack(b.data(), n, k));
  c.tasks.push_back({{c.a.data(), k}, m, &c.weights[0], c.c.data(), n});
  return c;
}

Case experts(index_t count, index_t rows, index_t n, index_t k, index_t top_k) {
  Case c;
  c.name = "gemm_batch " + std::to_string(count) + " x " + std::to_string(rows) + " rows, N " + std::to_string(n) +
           ", K " + std::to_string(k);
  const index_t pairs = count * rows, tokens = pairs / top_k;
  c.flops = 2.0 * static_cast<double>(pairs * n * k);
  c.a = random_floats(static_cast<std::size_t>(tokens * k), 3);
  c.c.assign(static_cast<std::size_t>(pairs * n), 0.0f);
  c.index.resize(static_cast<std::size_t>(pairs));
  std::iota(c.index.begin(), c.index.end(), 0);
  std::shuffle(c.index.begin(), c.index.end(), std::mt19937(4));
  c.weights.reserve(static_cast<std::size_t>(count));
  for (index_t e = 0; e < count; ++e) {
    std::vector<float> b = random_floats(static_cast<std::size_t>(n * k), 10 + static_cast<std::uint32_t>(e));
    c.weights.push_back(cpu::PackedMatrix<float>::pack(b.data(), n, k));
  }
  for (index_t e = 0; e < count; ++e)
    c.tasks.push_back({{c.a.data(), k, c.index.data() + e * rows, top_k},
                       rows,
                       &c.weights[static_cast<std::size_t>(e)],
                       c.c.data() + e * rows * n,
                       n});
  return c;
}

// Seconds of the best of `reps` runs, after one untimed run (which faults pages in).
double best_seconds(Case& c, cpu::ThreadPool& pool, cpu::Isa isa, int reps) {
  using clock = std::chrono::steady_clock;
  auto run = [&] {
    auto start = clock::now();
    cpu::gemm_batch(std::span<const cpu::GemmTask<float>>(c.tasks), pool, isa);
    return std::chrono::duration<double>(clock::now() - start).count();
  };
  double best = run();
  if (isa == cpu::Isa::portable) return best;
  best = 1e300;
  for (int r = 0; r < reps; ++r) best = std::min(best, run());
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  Options options = parse(argc, argv);
  std::vector<Case> cases;
  cases.push_back(single(256, 1024, 1024));
  cases.push_back(single(256, 1024, 512));
  cases.push_back(single(2048, 1024, 1024));
  cases.push_back(experts(32, 256, 1024, 1024, 8));

  std::printf(
      "CPU GEMM kernels against this CPU's fp32 FMA peak (best of %d runs; peak: the higher of two\n"
      "measurements around each path's cases)\n\n",
      options.reps);
  std::printf("%-9s %7s  %-40s %9s %9s %8s\n", "isa", "threads", "case", "GFLOP/s", "peak", "of peak");
  for (cpu::Isa isa : options.isas) {
    for (int threads : options.threads) {
      cpu::ThreadPool pool(threads);
      double peak = cpu::measure_fma_peak_gflops(isa, threads);
      std::vector<double> gflops;
      for (Case& c : cases) gflops.push_back(c.flops / best_seconds(c, pool, isa, options.reps) * 1e-9);
      peak = std::max(peak, cpu::measure_fma_peak_gflops(isa, threads));
      for (std::size_t i = 0; i < cases.size(); ++i)
        std::printf("%-9s %7d  %-40s %9.1f %9.1f %7.0f%%\n", std::string(cpu::to_string(isa)).c_str(), threads,
                    cases[i].name.c_str(), gflops[i], peak, 100.0 * gflops[i] / peak);
      std::fflush(stdout);
    }
  }
  return 0;
}
