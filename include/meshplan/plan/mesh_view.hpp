#pragma once
// The names and sizes of a mesh's axes, as the plan rules read them. A size may be
// `dynamic` when the plan is checked at compile time against a mesh with run-time axes;
// rules that need such a size wait for the run-time check.

#include <cstddef>
#include <span>
#include <string_view>

#include "meshplan/core/size.hpp"
#include "meshplan/mesh/indexing.hpp"

namespace meshplan {

struct MeshView {
  std::span<const std::string_view> names;
  std::span<const index_t> sizes;

  constexpr std::size_t ndim() const noexcept { return names.size(); }
  constexpr std::string_view axis_name(std::size_t a) const noexcept { return names[a]; }
  constexpr index_t axis_size(std::size_t a) const noexcept { return sizes[a]; }
  constexpr bool size_known(std::size_t a) const noexcept { return sizes[a] != dynamic; }
  constexpr std::size_t index_of(std::string_view name) const noexcept {
    for (std::size_t a = 0; a < names.size(); ++a)
      if (names[a] == name) return a;
    return no_axis;
  }
};

}  // namespace meshplan
