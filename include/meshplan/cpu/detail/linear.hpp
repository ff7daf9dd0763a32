#pragma once
// Dot products and linear layers with fp32 accumulation in one fixed order: from 0, index 0
// first, each term by a fused multiply-add. A row's result then does not depend on which
// rank computes it or with which other rows, and the fast kernels (cpu/detail/gemm.hpp), which
// keep that order per output, give the same bits.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cmath>
#include <cstddef>
#include <span>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/cpu/detail/fast_math.hpp"

namespace meshplan::cpu {

template <class A, class B>
inline float dot(const A* a, const B* b, index_t n) noexcept {
  float acc = 0.0f;
  for (index_t i = 0; i < n; ++i) acc = std::fma(to_float(a[i]), to_float(b[i]), acc);
  return acc;
}

/// y[t, o] = sum_i x[t, i] * w[o, i]: x [T, in], w [out, in], y [T, out] in fp32.
template <class X, class W>
void linear(std::span<const X> x, index_t tokens, std::span<const W> w, index_t out, index_t in, std::span<float> y) {
  for (index_t t = 0; t < tokens; ++t)
    for (index_t o = 0; o < out; ++o) y[t * out + o] = dot(x.data() + t * in, w.data() + o * in, in);
}

/// SiLU on the exp every CPU path shares (cpu/detail/fast_math.hpp), so that the vectorized
/// activation of the fast kernels gives the reference's bits.
inline float silu(float x) noexcept { return silu_fixed(x); }

}  // namespace meshplan::cpu
