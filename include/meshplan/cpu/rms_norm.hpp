#pragma once
// RMSNorm in fp32, forward and backward: transformers' Qwen3RMSNorm, MixtralRMSNorm and
// DeepseekV3RMSNorm on fp32 inputs, row by row (also the per-head q/k norms: rows =
// tokens * heads, width = head_dim).
//
// Forward, per row r of x [rows, width]:
//   s          = sum_j x[r,j]^2      each square rounded to fp32 (torch's pow(2)), summed in
//                                    double (order below), rounded to fp32 once
//   inv_rms[r] = 1.0f / std::sqrt(s / width + eps)        fp32 division, add, sqrt, division
//   y[r,j]     = weight[j] * (x[r,j] * inv_rms[r])         two fp32 products, in that order
// which is torch's variance = h.pow(2).mean(-1); h * rsqrt(variance + eps); weight * h with
// torch's rsqrt on the CPU being 1 / sqrt. Why the sum is in double: torch sums the squares
// with a cascade that is accurate to about one fp32 rounding; a single fp32 chain over
// 4096-7168 terms drifts by ~sqrt(width) roundings (a few 1e-6), more than the 1e-6 these
// kernels promise against transformers. The double sum, rounded once, is within an ulp or
// so of torch's.
//
// Backward, with xhat[r,j] = x[r,j] * inv_rms[r] (the forward's fp32 product) and
// g[r,j] = dy[r,j] * weight[j]:
//   c[r]    = (sum_j g[r,j] * xhat[r,j]) / width   products exact in double, summed in
//                                                  double (order below), rounded to fp32, / width in fp32
//   dx[r,j] = inv_rms[r] * fma(-xhat[r,j], c[r], g[r,j])
// the derivative of y = weight * x * (mean(x^2) + eps)^-1/2 (d inv / d x_k = -inv^3 x_k / width).
//   dweight[j] = (fresh ? +0 : dweight[j]), then for r = 0, 1, ... in row order
//                dweight[j] = fma(dy[r,j], xhat[r,j], dweight[j])
// one fma chain per column in row order: a sum over rows split into segments (calls, or
// ranks in row order) continues the one chain when each segment after the first passes
// fresh = false, so the split gives the bits of one call.
//
// Order of the double sums (forward s, backward c): 8 lanes, lane l takes the columns j with
// j % 8 == l in increasing j; then ((lane0 + lane1) + lane2) + ... + lane7. Fixed, so the
// bits depend neither on threads nor on the rank that computes a row, and every instruction
// set path gives the same bits (every multiply-add is an explicit fma: see
// cpu/fast_math.hpp on why).
//
// Zero rows write nothing (dweight with fresh = true is set to zeros: the sum of no rows);
// width 0 gives inv_rms = NaN (0 / 0, as torch's mean of nothing). Outputs must not overlap
// the inputs.

#include <algorithm>
#include <cmath>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/cpu/isa.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MESHPLAN_DENSE_FMA_CLONE 1
#define MESHPLAN_DENSE_FMA_TARGET __attribute__((target("avx2,fma")))
#endif
#define MESHPLAN_DENSE_INLINE __attribute__((always_inline)) inline

namespace meshplan::cpu {

namespace rms_norm_detail {

inline constexpr index_t lanes = 8;
// Loops over columns advance in blocks of this many with a fixed inner count, which g++
// vectorizes at -O2 (it leaves loops of unknown count scalar there); the blocks' end is
// computed before the loops, so that g++ -O3 sees the tail loop's bounds (it warns of
// undefined behaviour in a tail it cannot bound, -Waggressive-loop-optimizations).
inline constexpr index_t block = 16;

MESHPLAN_DENSE_INLINE double combine(const double* acc) {
  double total = acc[0];
  for (index_t l = 1; l < lanes; ++l) total += acc[l];
  return total;
}

// sum_j x[j]^2: squares rounded to fp32, summed in double in the lane order above.
MESHPLAN_DENSE_INLINE float sum_squares(const float* __restrict x, index_t n) {
  double acc[lanes] = {};
  const index_t whole = n - n % lanes;
  for (index_t j = 0; j < whole; j += lanes)
    for (index_t l = 0; l < lanes; ++l) {
      const float sq = x[j + l] * x[j + l];
      acc[l] += static_cast<double>(sq);
    }
  for (index_t j = whole; j < n; ++j) {
    const float sq = x[j] * x[j];
    acc[j - whole] += static_cast<double>(sq);
  }
  return static_cast<float>(combine(acc));
}

// sum_j g[j] xhat[j], g = dy w and xhat = x inv in fp32; each product of two floats is exact
// in double, so a contracted and an uncontracted multiply-add give the same bits.
MESHPLAN_DENSE_INLINE float sum_g_xhat(const float* __restrict x, const float* __restrict dy,
                                       const float* __restrict w, float inv, index_t n) {
  double acc[lanes] = {};
  auto term = [&](index_t j) {
    const float g = dy[j] * w[j];
    const float xhat = x[j] * inv;
    return static_cast<double>(g) * static_cast<double>(xhat);
  };
  const index_t whole = n - n % lanes;
  for (index_t j = 0; j < whole; j += lanes)
    for (index_t l = 0; l < lanes; ++l) acc[l] += term(j + l);
  for (index_t j = whole; j < n; ++j) acc[j - whole] += term(j);
  return static_cast<float>(combine(acc));
}

MESHPLAN_DENSE_INLINE void scale_row(const float* __restrict x, const float* __restrict w, float inv,
                                     float* __restrict y, index_t n) {
  const index_t whole = n - n % block;
  for (index_t j = 0; j < whole; j += block)
    for (index_t l = 0; l < block; ++l) y[j + l] = w[j + l] * (x[j + l] * inv);
  for (index_t j = whole; j < n; ++j) y[j] = w[j] * (x[j] * inv);
}

MESHPLAN_DENSE_INLINE void dx_row(const float* __restrict x, const float* __restrict dy, const float* __restrict w,
                                  float inv, float c, float* __restrict dx, index_t n) {
  auto one = [&](index_t j) {
    const float g = dy[j] * w[j];
    const float xhat = x[j] * inv;
    dx[j] = inv * std::fma(-xhat, c, g);
  };
  const index_t whole = n - n % block;
  for (index_t j = 0; j < whole; j += block)
    for (index_t l = 0; l < block; ++l) one(j + l);
  for (index_t j = whole; j < n; ++j) one(j);
}

MESHPLAN_DENSE_INLINE void dweight_row(const float* __restrict x, const float* __restrict dy, float inv,
                                       float* __restrict dw, index_t n) {
  auto one = [&](index_t j) {
    const float xhat = x[j] * inv;
    dw[j] = std::fma(dy[j], xhat, dw[j]);
  };
  const index_t whole = n - n % block;
  for (index_t j = 0; j < whole; j += block)
    for (index_t l = 0; l < block; ++l) one(j + l);
  for (index_t j = whole; j < n; ++j) one(j);
}

MESHPLAN_DENSE_INLINE void forward_rows(const float* x, index_t rows, index_t width, const float* weight, float eps,
                                        float* y, float* inv_rms) {
  for (index_t r = 0; r < rows; ++r) {
    const float* xr = x + r * width;
    const float mean = sum_squares(xr, width) / static_cast<float>(width);
    const float inv = 1.0f / std::sqrt(mean + eps);
    if (inv_rms != nullptr) inv_rms[r] = inv;
    scale_row(xr, weight, inv, y + r * width, width);
  }
}

MESHPLAN_DENSE_INLINE void backward_rows(const float* x, const float* dy, index_t rows, index_t width,
                                         const float* weight, const float* inv_rms, float* dx, float* dweight) {
  if (dx != nullptr)
    for (index_t r = 0; r < rows; ++r) {
      const float* xr = x + r * width;
      const float* dyr = dy + r * width;
      const float c = sum_g_xhat(xr, dyr, weight, inv_rms[r], width) / static_cast<float>(width);
      dx_row(xr, dyr, weight, inv_rms[r], c, dx + r * width, width);
    }
  if (dweight != nullptr)
    for (index_t r = 0; r < rows; ++r) dweight_row(x + r * width, dy + r * width, inv_rms[r], dweight, width);
}

inline void forward_portable(const float* x, index_t rows, index_t width, const float* weight, float eps, float* y,
                             float* inv_rms) {
  forward_rows(x, rows, width, weight, eps, y, inv_rms);
}
inline void backward_portable(const float* x, const float* dy, index_t rows, index_t width, const float* weight,
                              const float* inv_rms, float* dx, float* dweight) {
  backward_rows(x, dy, rows, width, weight, inv_rms, dx, dweight);
}
#if defined(MESHPLAN_DENSE_FMA_CLONE)
// The same code with the fma instruction inline (std::fma is a library call on baseline
// x86-64) and 256-bit vectors; fma is exact either way, so the bits are the portable ones.
MESHPLAN_DENSE_FMA_TARGET inline void forward_fma(const float* x, index_t rows, index_t width, const float* weight,
                                                  float eps, float* y, float* inv_rms) {
  forward_rows(x, rows, width, weight, eps, y, inv_rms);
}
MESHPLAN_DENSE_FMA_TARGET inline void backward_fma(const float* x, const float* dy, index_t rows, index_t width,
                                                   const float* weight, const float* inv_rms, float* dx,
                                                   float* dweight) {
  backward_rows(x, dy, rows, width, weight, inv_rms, dx, dweight);
}
#endif

inline bool use_fma_clone(Isa isa) {
  enforce(isa_runnable(isa) ? Message{}
                            : Message::rule("cpu_isa") << "the " << to_string(isa) << " path cannot run on this CPU");
#if defined(MESHPLAN_DENSE_FMA_CLONE)
  return isa != Isa::portable;
#else
  return false;
#endif
}

}  // namespace rms_norm_detail

/// y [rows, width] = weight * (x * inv_rms) and inv_rms [rows] (may be null: not kept), as
/// the header describes.
inline void rms_norm_forward(const float* x, index_t rows, index_t width, const float* weight, float eps, float* y,
                             float* inv_rms, Isa isa = active_isa()) {
  namespace d = rms_norm_detail;
  if (rows <= 0) return;
#if defined(MESHPLAN_DENSE_FMA_CLONE)
  if (d::use_fma_clone(isa)) return d::forward_fma(x, rows, width, weight, eps, y, inv_rms);
#else
  (void)d::use_fma_clone(isa);
#endif
  d::forward_portable(x, rows, width, weight, eps, y, inv_rms);
}

/// dx [rows, width] (null: not computed) and the weight's gradient dweight [width] (null:
/// not computed) from the forward's x, inv_rms and the output gradient dy, as the header
/// describes. dweight continues its chains from what it holds unless `fresh`.
inline void rms_norm_backward(const float* x, const float* dy, index_t rows, index_t width, const float* weight,
                              const float* inv_rms, float* dx, float* dweight, bool fresh, Isa isa = active_isa()) {
  namespace d = rms_norm_detail;
  if (dweight != nullptr && fresh) std::fill(dweight, dweight + std::max<index_t>(width, 0), 0.0f);
  if (rows <= 0) return;
#if defined(MESHPLAN_DENSE_FMA_CLONE)
  if (d::use_fma_clone(isa)) return d::backward_fma(x, dy, rows, width, weight, inv_rms, dx, dweight);
#else
  (void)d::use_fma_clone(isa);
#endif
  d::backward_portable(x, dy, rows, width, weight, inv_rms, dx, dweight);
}

}  // namespace meshplan::cpu
