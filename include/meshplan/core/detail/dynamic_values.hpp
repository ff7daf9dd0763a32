#pragma once
// Storage for the run-time members of a partly static list (mesh sizes, extents).
// With no run-time members it is an empty type, so a fully static object costs no bytes.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <array>
#include <cstddef>

#include "meshplan/core/size.hpp"

namespace meshplan::detail {

template <std::size_t N>
struct DynamicValues {
  std::array<index_t, N> values{};
  constexpr index_t operator[](std::size_t i) const noexcept { return values[i]; }
  constexpr index_t& operator[](std::size_t i) noexcept { return values[i]; }
  friend constexpr bool operator==(const DynamicValues&, const DynamicValues&) = default;
};

template <>
struct DynamicValues<0> {
  constexpr index_t operator[](std::size_t) const noexcept { return 0; }
  friend constexpr bool operator==(const DynamicValues&, const DynamicValues&) = default;
};

/// Position of entry `i` among the entries of `statics` that are `dynamic`.
template <std::size_t N>
constexpr std::size_t dynamic_slot(const std::array<index_t, N>& statics, std::size_t i) noexcept {
  std::size_t slot = 0;
  for (std::size_t k = 0; k < i; ++k)
    if (statics[k] == dynamic) ++slot;
  return slot;
}

/// Entry `i`: the static value, or the run-time one.
template <std::size_t N, std::size_t D>
constexpr index_t value_at(const std::array<index_t, N>& statics, const DynamicValues<D>& dynamics,
                           std::size_t i) noexcept {
  return statics[i] != dynamic ? statics[i] : dynamics[dynamic_slot(statics, i)];
}

}  // namespace meshplan::detail
