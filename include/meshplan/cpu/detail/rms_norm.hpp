#pragma once
// RMSNorm in fp32, forward and backward: transformers' Qwen3RMSNorm, MixtralRMSNorm and
// DeepseekV3RMSNorm on fp32 inputs, row by row (also the per-head q/k norms: rows =
// tokens * heads, width = head_dim).
//
// Forward, per row r of x [rows, width]:
//   s          = sum_j x[r,j]^2      each square rounded to fp32 (torch's pow(2)), summed
//                                    in double, rounded to fp32 once (the lane sum below)
//   inv_rms[r] = 1.0f / std::sqrt(s / width + eps)        fp32 division, add, sqrt, division
//   y[r,j]     = weight[j] * (x[r,j] * inv_rms[r])         two fp32 products, in that order
// which is torch's variance = h.pow(2).mean(-1); h * rsqrt(variance + eps); weight * h with
// torch's rsqrt on the CPU being 1 / sqrt.
//
// Backward, with xhat[r,j] = x[r,j] * inv_rms[r] (the forward's fp32 product) and
// g[r,j] = dy[r,j] * weight[j]:
//   c[r]    = (sum_j g[r,j] * xhat[r,j]) / width   products exact in double, summed in
//                                                  double (the lane sum below), rounded to
//                                                  fp32, / width in fp32
//   dx[r,j] = inv_rms[r] * fma(-xhat[r,j], c[r], g[r,j])
// the derivative of y = weight * x * (mean(x^2) + eps)^-1/2 (d inv / d x_k = -inv^3 x_k / width).
//   dweight[j] = (fresh ? +0 : dweight[j]), then for r = 0, 1, ... in row order
//                dweight[j] = fma(dy[r,j], xhat[r,j], dweight[j])
// one fma chain per column in row order: a sum over rows split into segments (calls, or
// ranks in row order) continues the one chain when each segment after the first passes
// fresh = false, so the split gives the bits of one call.
//
// The double sums (forward s, backward c) are cpu/detail/dense_common.hpp's lane sum: 8 lanes by
// j % 8, added in lane order, rounded once; that header says why in double and why in that
// order. Every instruction set path gives the same bits (the fma clone, also there).
//
// Zero rows write nothing (dweight with fresh = true is set to zeros: the sum of no rows);
// width 0 gives inv_rms = NaN (0 / 0, as torch's mean of nothing). Outputs must not overlap
// the inputs.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <algorithm>
#include <cmath>

#include "meshplan/core/size.hpp"
#include "meshplan/cpu/detail/dense_common.hpp"
#include "meshplan/cpu/isa.hpp"

namespace meshplan::cpu {

namespace rms_norm_detail {

using dense_detail::for_blocks;
using dense_detail::lane_sum;

// sum_j x[j]^2: squares rounded to fp32, summed in double in the lane order.
MESHPLAN_DENSE_INLINE float sum_squares(const float* __restrict x, index_t n) {
  return lane_sum(n, [&](index_t j) {
    const float sq = x[j] * x[j];
    return static_cast<double>(sq);
  });
}

// sum_j g[j] xhat[j], g = dy w and xhat = x inv in fp32; each product of two floats is exact
// in double, so a contracted and an uncontracted multiply-add give the same bits.
MESHPLAN_DENSE_INLINE float sum_g_xhat(const float* __restrict x, const float* __restrict dy,
                                       const float* __restrict w, float inv, index_t n) {
  return lane_sum(n, [&](index_t j) {
    const float g = dy[j] * w[j];
    const float xhat = x[j] * inv;
    return static_cast<double>(g) * static_cast<double>(xhat);
  });
}

// Written out rather than through for_blocks, which would leave it scalar (see there).
MESHPLAN_DENSE_INLINE void scale_row(const float* __restrict x, const float* __restrict w, float inv,
                                     float* __restrict y, index_t n) {
  constexpr index_t block = dense_detail::block;
  const index_t whole = n - n % block;
  for (index_t j = 0; j < whole; j += block)
    for (index_t l = 0; l < block; ++l) y[j + l] = w[j + l] * (x[j + l] * inv);
  for (index_t j = whole; j < n; ++j) y[j] = w[j] * (x[j] * inv);
}

MESHPLAN_DENSE_INLINE void dx_row(const float* __restrict x, const float* __restrict dy, const float* __restrict w,
                                  float inv, float c, float* __restrict dx, index_t n) {
  for_blocks(n, [&](index_t j) {
    const float g = dy[j] * w[j];
    const float xhat = x[j] * inv;
    dx[j] = inv * std::fma(-xhat, c, g);
  });
}

MESHPLAN_DENSE_INLINE void dweight_row(const float* __restrict x, const float* __restrict dy, float inv,
                                       float* __restrict dw, index_t n) {
  for_blocks(n, [&](index_t j) {
    const float xhat = x[j] * inv;
    dw[j] = std::fma(dy[j], xhat, dw[j]);
  });
}

// The bodies run_clone compiles as the portable and the fma clone (cpu/detail/dense_common.hpp).
struct Forward {
  template <bool>
  MESHPLAN_DENSE_INLINE static void run(const float* x, index_t rows, index_t width, const float* weight, float eps,
                                        float* y, float* inv_rms) {
    for (index_t r = 0; r < rows; ++r) {
      const float* xr = x + r * width;
      const float mean = sum_squares(xr, width) / static_cast<float>(width);
      const float inv = 1.0f / std::sqrt(mean + eps);
      if (inv_rms != nullptr) inv_rms[r] = inv;
      scale_row(xr, weight, inv, y + r * width, width);
    }
  }
};

struct Backward {
  template <bool>
  MESHPLAN_DENSE_INLINE static void run(const float* x, const float* dy, index_t rows, index_t width,
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
};

}  // namespace rms_norm_detail

/// y [rows, width] = weight * (x * inv_rms) and inv_rms [rows] (may be null: not kept), as
/// the header describes.
inline void rms_norm_forward(const float* x, index_t rows, index_t width, const float* weight, float eps, float* y,
                             float* inv_rms, Isa isa = active_isa()) {
  if (rows <= 0) return;
  dense_detail::check_isa(isa);
  dense_detail::run_clone<rms_norm_detail::Forward>(dense_detail::use_fma_clone(isa), x, rows, width, weight, eps, y,
                                                    inv_rms);
}

/// dx [rows, width] (null: not computed) and the weight's gradient dweight [width] (null:
/// not computed) from the forward's x, inv_rms and the output gradient dy, as the header
/// describes. dweight continues its chains from what it holds unless `fresh`.
inline void rms_norm_backward(const float* x, const float* dy, index_t rows, index_t width, const float* weight,
                              const float* inv_rms, float* dx, float* dweight, bool fresh, Isa isa = active_isa()) {
  if (dweight != nullptr && fresh) std::fill(dweight, dweight + std::max<index_t>(width, 0), 0.0f);
  if (rows <= 0) return;
  dense_detail::check_isa(isa);
  dense_detail::run_clone<rms_norm_detail::Backward>(dense_detail::use_fma_clone(isa), x, dy, rows, width, weight,
                                                     inv_rms, dx, dweight);
}

}  // namespace meshplan::cpu
