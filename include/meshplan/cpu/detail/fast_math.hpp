#pragma once
// exp and SiLU that give the same bits on every path (portable, AVX2, AVX-512), lane by lane.
//
// std::exp differs between C libraries and between their scalar and vector versions, so a
// kernel that calls it cannot promise bits. exp_fixed is written with +, *, fma and exact
// bit manipulation only, and the vector versions run exactly the same operations in the
// same order, so every lane equals the scalar function:
//   1. n = round(x / ln2): one fma with log2(e) onto 1.5 * 2^23, whose ulp is 1, rounds
//      x * log2(e) to an integer; n is read from the bits of the sum.
//   2. r = x - n ln2 (Cody-Waite): ln2 split into ln2_hi, with 16 significant bits so that
//      n * ln2_hi is exact for |n| <= 150, and the rest ln2_lo; two fmas.
//   3. e^r ~ 1 + r + r^2 q(r) on |r| <= ln2 / 2, q of degree 4 (Chebyshev fit, relative
//      error below 1e-8 with these fp32 coefficients), in Horner form with fma.
//   4. times 2^n by adding n to the exponent bits (exact); results below the normal range
//      take 2^(n + 100) that way and then one rounding multiply by 2^-100, so subnormal
//      results are rounded once.
// Special values: x above the largest float whose exp is finite gives +inf (so does +inf),
// x below -104 gives +0 (so does -inf: e^-104 < 2^-150 rounds to 0 anyway), NaN gives a
// quiet NaN (x + x). Within 2 ulp of std::exp over the float range (tests/unit/gemm_test.cpp).
//
// Why no plain multiply feeds an add: g++ contracts a * b + c into an fma where the target
// has one (-ffp-contract=fast is its default, and intrinsics are ordinary vector arithmetic
// to it), which would make a path's bits depend on the compile flags. Every multiply-add
// here is an explicit fma, and the one plain multiply (step 4) reaches its user through a
// select.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/cpu/isa.hpp"

namespace meshplan::cpu {

namespace fast_math_detail {

inline constexpr float log2e = 0x1.715476p+0f;
inline constexpr float ln2_hi = 0x1.62e400p-1f;   // 0.693145751953125: 16 significant bits
inline constexpr float ln2_lo = 0x1.7f7d1cp-20f;  // ln2 - ln2_hi
inline constexpr float round_magic = 0x1.8p+23f;  // 1.5 * 2^23: sums in [2^23, 2^24) have ulp 1
inline constexpr float q0 = 0x1p-1f;
inline constexpr float q1 = 0x1.5554dep-3f;
inline constexpr float q2 = 0x1.55551ap-5f;
inline constexpr float q3 = 0x1.120b64p-7f;
inline constexpr float q4 = 0x1.6d10fep-10f;
// The largest float whose exp is finite (88.72283172607421875); above it, +inf.
inline constexpr float overflow_above = 0x1.62e42ep+6f;
// Below, exp(x) < 2^-150 rounds to +0.
inline constexpr float underflow_below = -104.0f;
// Results with n below this are not normal: scaled in two steps.
inline constexpr std::int32_t lowest_normal_n = -125;
inline constexpr std::int32_t tiny_offset = 100;
inline constexpr float tiny_scale = 0x1p-100f;

// from_float<bfloat16> on the bits of an fp32 value: round to nearest even, NaN stays quiet.
constexpr std::uint16_t bf16_bits(std::uint32_t u) noexcept {
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

}  // namespace fast_math_detail

/// e^x in the fixed operation sequence above; the same bits as every vector lane.
inline float exp_fixed(float x) noexcept {
  namespace d = fast_math_detail;
  const bool in_range = x >= d::underflow_below && x <= d::overflow_above;  // false for NaN
  const float xr = in_range ? x : 0.0f;
  const float t = std::fma(xr, d::log2e, d::round_magic);
  const float nf = t - d::round_magic;
  const std::int32_t n = std::bit_cast<std::int32_t>(t) - std::bit_cast<std::int32_t>(d::round_magic);
  float r = std::fma(nf, -d::ln2_hi, xr);
  r = std::fma(nf, -d::ln2_lo, r);
  float q = std::fma(d::q4, r, d::q3);
  q = std::fma(q, r, d::q2);
  q = std::fma(q, r, d::q1);
  q = std::fma(q, r, d::q0);
  float p = std::fma(q, r, 1.0f);  // 1 + r q
  p = std::fma(p, r, 1.0f);        // 1 + r + r^2 q
  const bool tiny = n < d::lowest_normal_n;
  const std::uint32_t shift = static_cast<std::uint32_t>(tiny ? n + d::tiny_offset : n) << 23;
  const float scaled = std::bit_cast<float>(std::bit_cast<std::uint32_t>(p) + shift);
  float e = tiny ? scaled * d::tiny_scale : scaled;
  if (x > d::overflow_above) e = std::numeric_limits<float>::infinity();
  if (x < d::underflow_below) e = 0.0f;
  if (x != x) e = x + x;
  return e;
}

/// silu(g) = g / (1 + e^-g) with exp_fixed; the division is IEEE, so every path agrees.
inline float silu_fixed(float g) noexcept { return g / (1.0f + exp_fixed(-g)); }

/// silu'(g) = sigma (1 + g (1 - sigma)) with sigma = 1 / (1 + e^-g) on exp_fixed; the
/// multiply-add is an explicit fma, so every path agrees.
inline float silu_grad_fixed(float g) noexcept {
  const float sigma = 1.0f / (1.0f + exp_fixed(-g));
  return sigma * std::fma(g, 1.0f - sigma, 1.0f);
}

namespace fast_math_detail {

// The SwiGLU's backward on rows r < rows, columns [first_column, inter): from the
// pre-activations g, u (gate_up [rows, 2I], gate columns first) and the activation's
// gradient da [rows, I], dg = (da u) silu'(g) and du = da silu(g) into dgate_up [rows, 2I].
inline void swiglu_grad_rows_portable(const float* gate_up, const float* da, index_t rows, index_t inter,
                                      float* dgate_up, index_t first_column) {
  for (index_t r = 0; r < rows; ++r) {
    const float* g = gate_up + r * 2 * inter;
    const float* u = g + inter;
    const float* d = da + r * inter;
    float* dg = dgate_up + r * 2 * inter;
    float* du = dg + inter;
    for (index_t i = first_column; i < inter; ++i) {
      dg[i] = d[i] * u[i] * silu_grad_fixed(g[i]);
      du[i] = d[i] * silu_fixed(g[i]);
    }
  }
}

template <StorageType T>
void silu_mul_rows_portable(const float* gate_up, index_t rows, index_t inter, index_t ld, T* act, index_t ld_act,
                            index_t first_column) {
  for (index_t r = 0; r < rows; ++r) {
    const float* gate = gate_up + r * ld;
    const float* up = gate + inter;
    for (index_t i = first_column; i < inter; ++i) act[r * ld_act + i] = from_float<T>(silu_fixed(gate[i]) * up[i]);
  }
}

#if defined(__x86_64__)
#define MESHPLAN_FAST_MATH_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define MESHPLAN_FAST_MATH_AVX2 __attribute__((target("avx2,fma")))

// The zero-masking forms with every lane on: the plain AVX-512 shifts and narrowing start
// from an "undefined" register that g++ 12 reports as maybe uninitialized under -Werror.
inline constexpr __mmask16 all_lanes = 0xffff;

MESHPLAN_FAST_MATH_AVX512 inline __m512 exp_fixed_avx512(__m512 x) noexcept {
  const __m512 lo = _mm512_set1_ps(underflow_below), hi = _mm512_set1_ps(overflow_above);
  const __mmask16 in_range = _mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ) & _mm512_cmp_ps_mask(x, hi, _CMP_LE_OQ);
  const __m512 xr = _mm512_maskz_mov_ps(in_range, x);
  const __m512 magic = _mm512_set1_ps(round_magic);
  const __m512 t = _mm512_fmadd_ps(xr, _mm512_set1_ps(log2e), magic);
  const __m512 nf = _mm512_sub_ps(t, magic);
  const __m512i n = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_castps_si512(magic));
  __m512 r = _mm512_fmadd_ps(nf, _mm512_set1_ps(-ln2_hi), xr);
  r = _mm512_fmadd_ps(nf, _mm512_set1_ps(-ln2_lo), r);
  __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(q4), r, _mm512_set1_ps(q3));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(q2));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(q1));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(q0));
  const __m512 one = _mm512_set1_ps(1.0f);
  __m512 p = _mm512_fmadd_ps(q, r, one);
  p = _mm512_fmadd_ps(p, r, one);
  const __mmask16 tiny = _mm512_cmplt_epi32_mask(n, _mm512_set1_epi32(lowest_normal_n));
  const __m512i shift =
      _mm512_maskz_slli_epi32(all_lanes, _mm512_mask_add_epi32(n, tiny, n, _mm512_set1_epi32(tiny_offset)), 23);
  const __m512 scaled = _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), shift));
  __m512 e = _mm512_mask_mul_ps(scaled, tiny, scaled, _mm512_set1_ps(tiny_scale));
  e = _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ),
                         _mm512_set1_ps(std::numeric_limits<float>::infinity()));
  e = _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ), _mm512_setzero_ps());
  e = _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), _mm512_add_ps(x, x));
  return e;
}

MESHPLAN_FAST_MATH_AVX2 inline __m256 exp_fixed_avx2(__m256 x) noexcept {
  const __m256 lo = _mm256_set1_ps(underflow_below), hi = _mm256_set1_ps(overflow_above);
  const __m256 in_range = _mm256_and_ps(_mm256_cmp_ps(x, lo, _CMP_GE_OQ), _mm256_cmp_ps(x, hi, _CMP_LE_OQ));
  const __m256 xr = _mm256_and_ps(in_range, x);
  const __m256 magic = _mm256_set1_ps(round_magic);
  const __m256 t = _mm256_fmadd_ps(xr, _mm256_set1_ps(log2e), magic);
  const __m256 nf = _mm256_sub_ps(t, magic);
  const __m256i n = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_castps_si256(magic));
  __m256 r = _mm256_fmadd_ps(nf, _mm256_set1_ps(-ln2_hi), xr);
  r = _mm256_fmadd_ps(nf, _mm256_set1_ps(-ln2_lo), r);
  __m256 q = _mm256_fmadd_ps(_mm256_set1_ps(q4), r, _mm256_set1_ps(q3));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(q2));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(q1));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(q0));
  const __m256 one = _mm256_set1_ps(1.0f);
  __m256 p = _mm256_fmadd_ps(q, r, one);
  p = _mm256_fmadd_ps(p, r, one);
  const __m256i tiny = _mm256_cmpgt_epi32(_mm256_set1_epi32(lowest_normal_n), n);
  const __m256i offset = _mm256_and_si256(tiny, _mm256_set1_epi32(tiny_offset));
  const __m256i shift = _mm256_slli_epi32(_mm256_add_epi32(n, offset), 23);
  const __m256 scaled = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), shift));
  const __m256 tiny_mask = _mm256_castsi256_ps(tiny);
  __m256 e = _mm256_blendv_ps(scaled, _mm256_mul_ps(scaled, _mm256_set1_ps(tiny_scale)), tiny_mask);
  e = _mm256_blendv_ps(e, _mm256_set1_ps(std::numeric_limits<float>::infinity()), _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
  e = _mm256_blendv_ps(e, _mm256_setzero_ps(), _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
  e = _mm256_blendv_ps(e, _mm256_add_ps(x, x), _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  return e;
}

// from_float<bfloat16> on 16 lanes: the bits bf16_bits computes, narrowed to 16 bits.
MESHPLAN_FAST_MATH_AVX512 inline __m256i bf16_round_avx512(__m512 v) noexcept {
  const __m512i u = _mm512_castps_si512(v);
  const __mmask16 nan =
      _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  const __m512i odd = _mm512_and_si512(_mm512_maskz_srli_epi32(all_lanes, u, 16), _mm512_set1_epi32(1));
  __m512i rounded =
      _mm512_maskz_srli_epi32(all_lanes, _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), odd), 16);
  const __m512i quiet = _mm512_or_si512(_mm512_maskz_srli_epi32(all_lanes, u, 16), _mm512_set1_epi32(0x0040));
  rounded = _mm512_mask_mov_epi32(rounded, nan, quiet);
  return _mm512_maskz_cvtepi32_epi16(all_lanes, rounded);  // values < 2^16: truncation keeps them
}

// The same on 8 lanes, narrowed into the low 128 bits.
MESHPLAN_FAST_MATH_AVX2 inline __m128i bf16_round_avx2(__m256 v) noexcept {
  const __m256i u = _mm256_castps_si256(v);
  // |u| as a signed integer is non-negative, so the signed compare is the unsigned one.
  const __m256i nan =
      _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), odd), 16);
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x0040));
  rounded = _mm256_blendv_epi8(rounded, quiet, nan);
  // packus works within 128-bit halves: lanes 0-3 and 4-7 land in 64-bit quarters 0 and 2.
  const __m256i packed = _mm256_packus_epi32(rounded, rounded);
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));
}

MESHPLAN_FAST_MATH_AVX512 inline void exp_array_avx512(const float* x, index_t n, float* y) noexcept {
  for (index_t i = 0; i < n; i += 16) {
    const __mmask16 mask = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, mask, exp_fixed_avx512(_mm512_maskz_loadu_ps(mask, x + i)));
  }
}

MESHPLAN_FAST_MATH_AVX2 inline void exp_array_avx2(const float* x, index_t n, float* y) noexcept {
  index_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp_fixed_avx2(_mm256_loadu_ps(x + i)));
  for (; i < n; ++i) y[i] = exp_fixed(x[i]);
}

template <StorageType T>
MESHPLAN_FAST_MATH_AVX512 void silu_mul_avx512(const float* gate_up, index_t rows, index_t inter, index_t ld, T* act,
                                               index_t ld_act) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 sign = _mm512_set1_ps(-0.0f);
  for (index_t r = 0; r < rows; ++r) {
    const float* gate = gate_up + r * ld;
    const float* up = gate + inter;
    T* out = act + r * ld_act;
    for (index_t i = 0; i < inter; i += 16) {
      const __mmask16 mask = inter - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (inter - i)) - 1);
      const __m512 g = _mm512_maskz_loadu_ps(mask, gate + i);
      const __m512 u = _mm512_maskz_loadu_ps(mask, up + i);
      const __m512 e = exp_fixed_avx512(_mm512_xor_ps(g, sign));  // e^-g; -g flips the sign bit, as scalar -g does
      const __m512 v = _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), u);
      if constexpr (std::is_same_v<T, float>)
        _mm512_mask_storeu_ps(out + i, mask, v);
      else
        _mm256_mask_storeu_epi16(out + i, mask, bf16_round_avx512(v));
    }
  }
}

// silu_grad_fixed and silu_fixed share e^-g: the same operations as the scalar functions.
MESHPLAN_FAST_MATH_AVX512 inline void swiglu_grad_avx512(const float* gate_up, const float* da, index_t rows,
                                                         index_t inter, float* dgate_up) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 sign = _mm512_set1_ps(-0.0f);
  for (index_t r = 0; r < rows; ++r) {
    const float* gate = gate_up + r * 2 * inter;
    const float* d = da + r * inter;
    float* dg = dgate_up + r * 2 * inter;
    for (index_t i = 0; i < inter; i += 16) {
      const __mmask16 mask = inter - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (inter - i)) - 1);
      const __m512 g = _mm512_maskz_loadu_ps(mask, gate + i);
      const __m512 u = _mm512_maskz_loadu_ps(mask, gate + inter + i);
      const __m512 di = _mm512_maskz_loadu_ps(mask, d + i);
      const __m512 den = _mm512_add_ps(one, exp_fixed_avx512(_mm512_xor_ps(g, sign)));
      const __m512 sigma = _mm512_div_ps(one, den);
      const __m512 grad = _mm512_mul_ps(sigma, _mm512_fmadd_ps(g, _mm512_sub_ps(one, sigma), one));
      _mm512_mask_storeu_ps(dg + i, mask, _mm512_mul_ps(_mm512_mul_ps(di, u), grad));
      _mm512_mask_storeu_ps(dg + inter + i, mask, _mm512_mul_ps(di, _mm512_div_ps(g, den)));
    }
  }
}

MESHPLAN_FAST_MATH_AVX2 inline void swiglu_grad_avx2(const float* gate_up, const float* da, index_t rows,
                                                     index_t inter, float* dgate_up) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const index_t whole = inter / 8 * 8;
  for (index_t r = 0; r < rows; ++r) {
    const float* gate = gate_up + r * 2 * inter;
    const float* d = da + r * inter;
    float* dg = dgate_up + r * 2 * inter;
    for (index_t i = 0; i < whole; i += 8) {
      const __m256 g = _mm256_loadu_ps(gate + i);
      const __m256 u = _mm256_loadu_ps(gate + inter + i);
      const __m256 di = _mm256_loadu_ps(d + i);
      const __m256 den = _mm256_add_ps(one, exp_fixed_avx2(_mm256_xor_ps(g, sign)));
      const __m256 sigma = _mm256_div_ps(one, den);
      const __m256 grad = _mm256_mul_ps(sigma, _mm256_fmadd_ps(g, _mm256_sub_ps(one, sigma), one));
      _mm256_storeu_ps(dg + i, _mm256_mul_ps(_mm256_mul_ps(di, u), grad));
      _mm256_storeu_ps(dg + inter + i, _mm256_mul_ps(di, _mm256_div_ps(g, den)));
    }
  }
  if (whole < inter) swiglu_grad_rows_portable(gate_up, da, rows, inter, dgate_up, whole);
}

template <StorageType T>
MESHPLAN_FAST_MATH_AVX2 void silu_mul_avx2(const float* gate_up, index_t rows, index_t inter, index_t ld, T* act,
                                           index_t ld_act) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const index_t whole = inter / 8 * 8;
  for (index_t r = 0; r < rows; ++r) {
    const float* gate = gate_up + r * ld;
    const float* up = gate + inter;
    T* out = act + r * ld_act;
    for (index_t i = 0; i < whole; i += 8) {
      const __m256 g = _mm256_loadu_ps(gate + i);
      const __m256 e = exp_fixed_avx2(_mm256_xor_ps(g, sign));
      const __m256 v = _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i));
      if constexpr (std::is_same_v<T, float>)
        _mm256_storeu_ps(out + i, v);
      else
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), bf16_round_avx2(v));
    }
  }
  // The last inter % 8 columns of each row: the scalar function, the same bits by construction.
  if (whole < inter) silu_mul_rows_portable(gate_up, rows, inter, ld, act, ld_act, whole);
}
#endif

}  // namespace fast_math_detail

/// y[i] = exp_fixed(x[i]) for i < n, vectorized on `isa`: the same bits on every path.
inline void exp_fixed(const float* x, index_t n, float* y, Isa isa = active_isa()) {
  namespace d = fast_math_detail;
  if (n <= 0) return;
#if defined(__x86_64__)
  if (isa == Isa::avx512 && isa_runnable(isa)) return d::exp_array_avx512(x, n, y);
  if (isa == Isa::avx2 && isa_runnable(isa)) return d::exp_array_avx2(x, n, y);
#endif
  enforce(isa_runnable(isa) ? Message{}
                            : Message::rule("cpu_isa") << "the " << to_string(isa) << " path cannot run on this CPU");
  for (index_t i = 0; i < n; ++i) y[i] = exp_fixed(x[i]);
}

/// The SwiGLU's backward: dgate_up[r] = [dg, du] with dg[i] = (da[r][i] u) silu'(g) and
/// du[i] = da[r][i] silu(g), g and u from gate_up [rows, 2I] (gate columns first), da
/// [rows, I]. The same bits on every path.
inline void swiglu_grad(const float* gate_up, const float* da, index_t rows, index_t inter, float* dgate_up,
                        Isa isa = active_isa()) {
  namespace d = fast_math_detail;
  if (rows <= 0 || inter <= 0) return;
#if defined(__x86_64__)
  if (isa == Isa::avx512 && isa_runnable(isa)) return d::swiglu_grad_avx512(gate_up, da, rows, inter, dgate_up);
  if (isa == Isa::avx2 && isa_runnable(isa)) return d::swiglu_grad_avx2(gate_up, da, rows, inter, dgate_up);
#endif
  enforce(isa_runnable(isa) ? Message{}
                            : Message::rule("cpu_isa") << "the " << to_string(isa) << " path cannot run on this CPU");
  d::swiglu_grad_rows_portable(gate_up, da, rows, inter, dgate_up, 0);
}

/// act[r][i] = from_float<T>(silu_fixed(g) * u) with g = gate_up[r * ld + i] and
/// u = gate_up[r * ld + inter + i] (gate columns first, then up, as the fused gate_up_proj
/// gives them), for r < rows and i < inter. The same bits on every path.
template <StorageType T>
void silu_mul(const float* gate_up, index_t rows, index_t inter, index_t ld, T* act, index_t ld_act,
              Isa isa = active_isa()) {
  namespace d = fast_math_detail;
  if (rows <= 0 || inter <= 0) return;
#if defined(__x86_64__)
  if (isa == Isa::avx512 && isa_runnable(isa)) return d::silu_mul_avx512(gate_up, rows, inter, ld, act, ld_act);
  if (isa == Isa::avx2 && isa_runnable(isa)) return d::silu_mul_avx2(gate_up, rows, inter, ld, act, ld_act);
#endif
  enforce(isa_runnable(isa) ? Message{}
                            : Message::rule("cpu_isa") << "the " << to_string(isa) << " path cannot run on this CPU");
  d::silu_mul_rows_portable(gate_up, rows, inter, ld, act, ld_act, 0);
}

}  // namespace meshplan::cpu
