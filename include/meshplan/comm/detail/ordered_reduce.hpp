#pragma once
// Reductions in a fixed order: member 0's value, then member 1's, ... in fp32 for floating
// types, so that every rank and every communicator computes the same bits.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <algorithm>
#include <cstddef>
#include <span>
#include <type_traits>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/placement/placement.hpp"

namespace meshplan::detail {

template <class T>
using accumulator_t = std::conditional_t<std::is_same_v<T, bfloat16> || std::is_same_v<T, float>, float, T>;

template <class T>
constexpr accumulator_t<T> widen(T v) noexcept {
  if constexpr (std::is_same_v<T, bfloat16>) return static_cast<float>(v);
  else return v;
}

template <class T>
constexpr T narrow(accumulator_t<T> v) noexcept {
  if constexpr (std::is_same_v<T, bfloat16>) return bfloat16(v);
  else return static_cast<T>(v);
}

/// out[i] = op over members m in order of input(m)[i]; `input(m)` gives member m's span.
template <class T, class Input>
void ordered_reduce(std::span<T> out, index_t members, Input&& input, ReduceOp op) {
  for (std::size_t i = 0; i < out.size(); ++i) {
    accumulator_t<T> acc = widen(input(0)[i]);
    for (index_t m = 1; m < members; ++m) {
      accumulator_t<T> v = widen(input(m)[i]);
      switch (op) {
        case ReduceOp::sum:
        case ReduceOp::avg: acc = acc + v; break;
        case ReduceOp::max: acc = std::max(acc, v); break;
        case ReduceOp::min: acc = std::min(acc, v); break;
      }
    }
    if (op == ReduceOp::avg) acc = acc / static_cast<accumulator_t<T>>(members);
    out[i] = narrow<T>(acc);
  }
}

}  // namespace meshplan::detail
