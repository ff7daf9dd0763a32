#pragma once
// The names and sizes of a mesh's axes, as the plan rules read them. A size may be
// `dynamic` when the plan is checked at compile time against a mesh with run-time axes;
// rules that need such a size wait for the run-time check.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cstddef>
#include <span>
#include <string_view>
#include <vector>

#include "meshplan/core/size.hpp"
#include "meshplan/mesh/detail/indexing.hpp"
#include "meshplan/mesh/mesh_spec.hpp"

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

/// Mesh names and sizes of a MeshSpec as the rules read them.
struct MeshSpecView {
  std::vector<std::string_view> names;
  std::vector<index_t> sizes;
  explicit MeshSpecView(const MeshSpec& mesh) : names(mesh.name_views()) {
    for (std::size_t a = 0; a < mesh.ndim(); ++a) sizes.push_back(mesh.axis_size(a));
  }
  MeshView view() const noexcept { return {names, sizes}; }
};

}  // namespace meshplan
