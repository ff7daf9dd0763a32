#pragma once
// The weighted combine: out[t] = sum over slots s, in slot order, of w[t, s] * y[t, s],
// in fp32 with fused multiply-adds from 0, with no atomics, so the result is the same
// wherever the rows were computed.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/model/routing.hpp"

namespace meshplan::cpu {

/// y: the expert rows in sorted pair order (of type Y: the stored rows, or fp32 partials);
/// `position[t * top_k + s]` is the row of pair (t, s); out [tokens, H] fp32.
template <class Y>
void combine(const Routing& routing, std::span<const Y> y, std::span<const std::int32_t> position, index_t hidden,
             std::span<float> out) {
  const index_t k = routing.top_k;
  for (index_t t = 0; t < routing.tokens; ++t) {
    float* o = out.data() + t * hidden;
    std::fill_n(o, hidden, 0.0f);
    for (index_t s = 0; s < k; ++s) {
      const float w = routing.weight(t, s);
      const Y* row = y.data() + static_cast<index_t>(position[static_cast<std::size_t>(t * k + s)]) * hidden;
      for (index_t h = 0; h < hidden; ++h) o[h] = std::fma(w, to_float(row[h]), o[h]);
    }
  }
}

}  // namespace meshplan::cpu
