#pragma once
// The fp32 fused multiply-add peak of this CPU, measured: the baseline a benchmark prints
// next to a kernel's GFLOP/s, from the same run and the same clock (turbo, a noisy host and
// a VM's share of a core all move both figures together).
//
// Each thread runs many independent FMA chains held in registers: more chains than the
// FMA latency times the FMA ports, so that only throughput limits them. Nothing is loaded
// or stored inside the loop.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <chrono>
#include <cmath>
#include <cstdint>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "meshplan/core/detail/macros.hpp"
#include "meshplan/cpu/isa.hpp"
#include "meshplan/cpu/thread_pool.hpp"

namespace meshplan::cpu {

namespace fma_peak_detail {

inline constexpr int chains = 16;  // >= 4-cycle latency x 2 ports on current x86, with room

// Returns a value that depends on every chain, so that none can be removed.
inline float portable_chains(std::int64_t iterations, float seed) {
  float acc[chains];
  for (int c = 0; c < chains; ++c) acc[c] = seed + static_cast<float>(c);
  const float a = 0.999999f, b = 1e-7f;
  for (std::int64_t it = 0; it < iterations; ++it)
  MESHPLAN_UNROLL(16)
    for (int c = 0; c < chains; ++c) acc[c] = std::fma(acc[c], a, b);
  float sum = 0.0f;
  for (int c = 0; c < chains; ++c) sum += acc[c];
  return sum;
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) inline float avx2_chains(std::int64_t iterations, float seed) {
  __m256 acc[chains];
  for (int c = 0; c < chains - 2; ++c) acc[c] = _mm256_set1_ps(seed + static_cast<float>(c));
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  // 14 chains: with a and b, 16 ymm registers. The unrolled loop keeps every chain in a register.
  for (std::int64_t it = 0; it < iterations; ++it)
  MESHPLAN_UNROLL(16)
    for (int c = 0; c < chains - 2; ++c) acc[c] = _mm256_fmadd_ps(acc[c], a, b);
  __m256 sum = _mm256_setzero_ps();
  for (int c = 0; c < chains - 2; ++c) sum = _mm256_add_ps(sum, acc[c]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum);
  return lanes[0] + lanes[7];
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma"))) inline float avx512_chains(std::int64_t iterations,
                                                                                             float seed) {
  __m512 acc[chains];
  for (int c = 0; c < chains; ++c) acc[c] = _mm512_set1_ps(seed + static_cast<float>(c));
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (std::int64_t it = 0; it < iterations; ++it)
  MESHPLAN_UNROLL(16)
    for (int c = 0; c < chains; ++c) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
  __m512 sum = _mm512_setzero_ps();
  for (int c = 0; c < chains; ++c) sum = _mm512_add_ps(sum, acc[c]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, sum);
  return lanes[0] + lanes[15];
}
#endif

// Floating-point operations per iteration of the path's loop (an FMA is 2).
inline double flops_per_iteration(Isa isa) noexcept {
  switch (isa) {
    case Isa::avx512:
      return 2.0 * 16 * chains;
    case Isa::avx2:
      return 2.0 * 8 * (chains - 2);
    case Isa::portable:
      break;
  }
  return 2.0 * chains;
}

inline float run_chains(Isa isa, std::int64_t iterations, float seed) {
#if defined(__x86_64__)
  if (isa == Isa::avx512) return avx512_chains(iterations, seed);
  if (isa == Isa::avx2) return avx2_chains(iterations, seed);
#endif
  (void)isa;
  return portable_chains(iterations, seed);
}

}  // namespace fma_peak_detail

/// GFLOP/s of fp32 FMAs on `threads` threads with the vectors of `isa` (an FMA counts 2).
/// Takes about `seconds` (the best of three timed rounds after a warm-up is returned).
inline double measure_fma_peak_gflops(Isa isa, int threads, double seconds = 0.3) {
  using clock = std::chrono::steady_clock;
  namespace d = fma_peak_detail;
  enforce(isa_runnable(isa)
              ? Message{}
              : Message::rule("cpu_isa") << "cannot measure the " << to_string(isa) << " FMA peak on this CPU");
  ThreadPool pool(threads);
  std::vector<float> sink(static_cast<std::size_t>(threads));
  volatile float seed = 1.0f;  // unknown to the compiler: the chains cannot be folded
  auto round = [&](std::int64_t iterations) {
    auto start = clock::now();
    pool.parallel_for(threads, [&](index_t t) {
      sink[static_cast<std::size_t>(t)] = d::run_chains(isa, iterations, seed + static_cast<float>(t));
    });
    return std::chrono::duration<double>(clock::now() - start).count();
  };
  // Calibrate the iteration count to about seconds / 4 per round.
  std::int64_t iterations = 1 << 16;
  double took = round(iterations);
  while (took < seconds / 16) {
    iterations *= 2;
    took = round(iterations);
  }
  iterations = static_cast<std::int64_t>(static_cast<double>(iterations) * (seconds / 4) / took) + 1;
  double best = 1e300;
  for (int r = 0; r < 3; ++r) best = std::min(best, round(iterations));
  volatile float keep = sink[0];
  (void)keep;
  return d::flops_per_iteration(isa) * static_cast<double>(iterations) * threads / best * 1e-9;
}

}  // namespace meshplan::cpu
