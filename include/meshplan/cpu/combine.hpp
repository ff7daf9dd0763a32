#pragma once
// The weighted combine: out[t] = sum over slots s, in slot order, of w[t, s] * y[t, s],
// in fp32, with no atomics, so the result is the same wherever the rows were computed.

#include <cstddef>
#include <span>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/cpu/router.hpp"

namespace meshplan::cpu {

/// y [tokens * top_k, H] in pair order (of type Y: the stored rows, or fp32 partials);
/// out [tokens, H] fp32.
template <class Y>
void combine(const Routing& routing, std::span<const Y> y, index_t hidden, std::span<float> out) {
  for (index_t t = 0; t < routing.tokens; ++t)
    for (index_t h = 0; h < hidden; ++h) {
      float acc = 0.0f;
      for (index_t s = 0; s < routing.top_k; ++s)
        acc += routing.weight(t, s) * to_float(y[static_cast<std::size_t>((t * routing.top_k + s) * hidden + h)]);
      out[static_cast<std::size_t>(t * hidden + h)] = acc;
    }
}

}  // namespace meshplan::cpu
