#pragma once
// The weighted combine: out[t] = sum over slots s, in slot order, of w[t, s] * y[t, s],
// in fp32 with fused multiply-adds from 0, with no atomics, so the result is the same
// wherever the rows were computed. Vectorized along the hidden dim (each lane its own
// output, the slots in order), with the same bits on every instruction set.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/cpu/isa.hpp"
#include "meshplan/model/routing.hpp"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

namespace meshplan::cpu {

namespace detail {
template <class Y>
void scaled_add_portable(float w, const Y* y, index_t n, float* o) {
  for (index_t h = 0; h < n; ++h) o[h] = std::fma(w, to_float(y[h]), o[h]);
}

#if defined(__x86_64__) && defined(__GNUC__)
template <class Y>
__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) void scaled_add_avx512(float w, const Y* y, index_t n,
                                                                                 float* o) {
  const __m512 wv = _mm512_set1_ps(w);
  index_t h = 0;
  for (; h + 16 <= n; h += 16) {
    __m512 yv;
    if constexpr (std::is_same_v<Y, float>) {
      yv = _mm512_loadu_ps(y + h);
    } else {  // bfloat16: the upper half of an fp32
      const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + h));
      yv = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xffff, _mm512_maskz_cvtepu16_epi32(0xffff, raw), 16));
    }
    _mm512_storeu_ps(o + h, _mm512_fmadd_ps(wv, yv, _mm512_loadu_ps(o + h)));
  }
  scaled_add_portable(w, y + h, n - h, o + h);
}

template <class Y>
__attribute__((target("avx2,fma"))) void scaled_add_avx2(float w, const Y* y, index_t n, float* o) {
  const __m256 wv = _mm256_set1_ps(w);
  index_t h = 0;
  for (; h + 8 <= n; h += 8) {
    __m256 yv;
    if constexpr (std::is_same_v<Y, float>) {
      yv = _mm256_loadu_ps(y + h);
    } else {
      const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(y + h));
      yv = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
    }
    _mm256_storeu_ps(o + h, _mm256_fmadd_ps(wv, yv, _mm256_loadu_ps(o + h)));
  }
  scaled_add_portable(w, y + h, n - h, o + h);
}
#endif
}  // namespace detail

/// o[h] = fma(w, y[h], o[h]) for h < n.
template <class Y>
void scaled_add(float w, const Y* y, index_t n, float* o, Isa isa = active_isa()) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (isa == Isa::avx512) return detail::scaled_add_avx512(w, y, n, o);
  if (isa == Isa::avx2) return detail::scaled_add_avx2(w, y, n, o);
#endif
  (void)isa;
  detail::scaled_add_portable(w, y, n, o);
}

/// Tokens [t0, t1) of the combine: y holds the expert rows in sorted pair order (of type Y:
/// the stored rows, or fp32 partials), `position[t * top_k + s]` is the row of pair (t, s);
/// out [tokens, H] fp32.
template <class Y>
void combine_tokens(const Routing& routing, std::span<const Y> y, std::span<const std::int32_t> position,
                    index_t hidden, std::span<float> out, index_t t0, index_t t1, Isa isa = active_isa()) {
  const index_t k = routing.top_k;
  for (index_t t = t0; t < t1; ++t) {
    float* o = out.data() + t * hidden;
    std::fill_n(o, hidden, 0.0f);
    for (index_t s = 0; s < k; ++s)
      scaled_add(routing.weight(t, s),
                 y.data() + static_cast<index_t>(position[static_cast<std::size_t>(t * k + s)]) * hidden, hidden, o,
                 isa);
  }
}

template <class Y>
void combine(const Routing& routing, std::span<const Y> y, std::span<const std::int32_t> position, index_t hidden,
             std::span<float> out, Isa isa = active_isa()) {
  combine_tokens(routing, y, position, hidden, out, 0, routing.tokens, isa);
}

}  // namespace meshplan::cpu
