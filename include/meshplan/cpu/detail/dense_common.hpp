#pragma once
// What the fp32 dense kernels (cpu/detail/rms_norm.hpp, cpu/detail/rotary.hpp, cpu/detail/attention.hpp,
// cpu/detail/cross_entropy.hpp) share: each kernel's fma clone and the choice between the clones,
// loops in blocks of a fixed count, the fixed-order double sum, and the row maximum.
//
// The fma clone. A kernel's body is one always-inline function (a `run` member template,
// `template <bool Fma> static void run(...)`) that run_clone compiles twice: as is, for
// baseline x86-64 (the portable path), and inside a function with the target
// "avx2,fma" (every other path, AVX-512 included: these kernels have no 512-bit code).
// There std::fma is the fma instruction inline, where baseline x86-64 calls the library for
// it, and g++ vectorizes with 256-bit registers. Every multiply-add in the kernels is an
// explicit fma (cpu/detail/fast_math.hpp says why) and fma is exact either way, so both clones give
// the same bits. Fma tells the body which clone it is in (attention's AVX2 intrinsics
// exist in the fma clone only). MESHPLAN_DENSE_FMA_CLONE is defined where the clone exists
// (x86-64 under g++ or clang); elsewhere every isa runs the portable body.
//
// Blocks. Loops over columns advance in blocks of `block` (16 floats: whole vectors at
// either width) with a fixed inner count, which g++ vectorizes at -O2, where it leaves loops
// of unknown count scalar. The blocks' end is computed before the loops, so that g++ -O3
// sees the tail loop's bounds (it warns of undefined behaviour in a tail it cannot bound,
// -Waggressive-loop-optimizations).
//
// The lane sum: sum_j term(j) in double, in 8 lanes (lane l takes the j with j % 8 == l, in
// increasing j), then ((lane0 + lane1) + lane2) + ... + lane7, rounded to fp32 once. It is
// RMSNorm's sum of squares and of g * xhat, and the softmax sums of attention and cross
// entropy. Why double: torch sums these with vectorized or cascaded sums accurate to about
// one fp32 rounding; a single fp32 chain over n terms drifts by ~sqrt(n) roundings (a few
// 1e-6 over a hidden size of 4096-7168, ~2e-5 over a vocabulary of 150k), more than the 1e-6
// these kernels promise against transformers. The double sum, rounded once, is within an
// ulp or so of the exact sum, and so of torch's. Why this order: it is fixed, so the bits
// depend neither on threads, nor on the rank that computes a row, nor on the instruction
// set path, while the 8 independent accumulators still vectorize.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <algorithm>
#include <limits>
#include <utility>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/cpu/isa.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MESHPLAN_DENSE_FMA_CLONE 1
#define MESHPLAN_DENSE_FMA_TARGET __attribute__((target("avx2,fma")))
#endif
#define MESHPLAN_DENSE_INLINE __attribute__((always_inline)) inline

namespace meshplan::cpu::dense_detail {

inline constexpr index_t lanes = 8;
inline constexpr index_t block = 16;

/// Throws cpu_isa unless this CPU runs `isa`.
inline void check_isa(Isa isa) {
  enforce(isa_runnable(isa) ? Message{}
                            : Message::rule("cpu_isa") << "the " << to_string(isa) << " path cannot run on this CPU");
}

/// Whether `isa` runs the fma clone: every path but portable, where the clone exists.
constexpr bool use_fma_clone(Isa isa) noexcept {
#if defined(MESHPLAN_DENSE_FMA_CLONE)
  return isa != Isa::portable;
#else
  (void)isa;
  return false;
#endif
}

template <class Kernel, class... Args>
inline void run_portable(Args&&... args) {
  Kernel::template run<false>(std::forward<Args>(args)...);
}

#if defined(MESHPLAN_DENSE_FMA_CLONE)
template <class Kernel, class... Args>
MESHPLAN_DENSE_FMA_TARGET inline void run_fma(Args&&... args) {
  Kernel::template run<true>(std::forward<Args>(args)...);
}
#endif

/// Kernel::run<Fma>(args...) in the fma clone if `fma` (use_fma_clone's answer), else in the
/// portable one.
template <class Kernel, class... Args>
inline void run_clone(bool fma, Args&&... args) {
#if defined(MESHPLAN_DENSE_FMA_CLONE)
  if (fma) return run_fma<Kernel>(std::forward<Args>(args)...);
#endif
  (void)fma;
  run_portable<Kernel>(std::forward<Args>(args)...);
}

/// f(j) for j < n in increasing order: blocks of `block` with a fixed inner count, then the
/// tail. f's pointers reach the loop through the lambda's captures, where g++ no longer
/// sees their __restrict: a loop that stores through one pointer and loads through another
/// then stays scalar (it would need a run-time alias check, which g++ does not add to a
/// loop of 16), so such a loop that should vectorize is written out (rms_norm's scale_row).
template <class F>
MESHPLAN_DENSE_INLINE void for_blocks(index_t n, F&& f) {
  const index_t whole = n - n % block;
  for (index_t j = 0; j < whole; j += block)
    for (index_t l = 0; l < block; ++l) f(j + l);
  for (index_t j = whole; j < n; ++j) f(j);
}

/// acc[j % lanes] += term(j) for j < n, j increasing within each lane: the lane sum's
/// accumulation (acc holds `lanes` doubles). A sum taken in pieces that each start at a
/// multiple of lanes passes the same acc to every piece.
template <class Term>
MESHPLAN_DENSE_INLINE void lane_accumulate(double* acc, index_t n, Term&& term) {
  const index_t whole = n - n % lanes;
  for (index_t j = 0; j < whole; j += lanes)
    for (index_t l = 0; l < lanes; ++l) acc[l] += term(j + l);
  for (index_t j = whole; j < n; ++j) acc[j - whole] += term(j);
}

/// The lanes added in lane order, rounded to fp32 once.
MESHPLAN_DENSE_INLINE float lane_total(const double* acc) {
  double total = acc[0];
  for (index_t l = 1; l < lanes; ++l) total += acc[l];
  return static_cast<float>(total);
}

/// The lane sum of term(j) (a double) over j < n.
template <class Term>
MESHPLAN_DENSE_INLINE float lane_sum(index_t n, Term&& term) {
  double acc[lanes] = {};
  lane_accumulate(acc, n, term);
  return lane_total(acc);
}

/// max_j x[j] from -inf (-inf for n = 0), in increasing j.
MESHPLAN_DENSE_INLINE float row_max(const float* x, index_t n) {
  float m = -std::numeric_limits<float>::infinity();
  for (index_t j = 0; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

}  // namespace meshplan::cpu::dense_detail
