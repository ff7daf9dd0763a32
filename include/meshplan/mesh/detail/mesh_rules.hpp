#pragma once
// The legality rules of a device mesh. Each returns an empty Message when it holds.
// DeviceMesh checks them at compile time where names and sizes are static; MeshSpec and
// DeviceMesh's run-time constructor check them with `enforce`, giving the same text.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cstddef>
#include <span>
#include <string_view>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"

namespace meshplan::mesh_rules {

constexpr bool is_name_start(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
constexpr bool is_name_char(char c) noexcept { return is_name_start(c) || (c >= '0' && c <= '9'); }

/// Axis names are identifiers, so that "ep=4,tp=2" and plan patterns can name them.
constexpr Message axis_name_valid(std::string_view name) noexcept {
  bool ok = !name.empty() && is_name_start(name.front());
  for (char c : name) ok = ok && is_name_char(c);
  if (ok) return {};
  return Message::rule("axis_name_valid")
         << "mesh axis name '" << name
         << "' is not an identifier; use letters, digits and '_', starting with a letter or '_'";
}

constexpr Message axis_size_positive(std::string_view name, index_t size) noexcept {
  if (size >= 1) return {};
  return Message::rule("axis_size_positive")
         << "mesh axis '" << name << "' has size " << size << "; every mesh axis needs a size of at least 1";
}

constexpr Message mesh_has_axes(std::size_t ndim) noexcept {
  if (ndim > 0) return {};
  return Message::rule("mesh_has_axes") << "a DeviceMesh needs at least one axis";
}

constexpr Message axis_names_unique(std::span<const std::string_view> names) noexcept {
  for (std::size_t i = 0; i < names.size(); ++i)
    for (std::size_t j = i + 1; j < names.size(); ++j)
      if (names[i] == names[j])
        return Message::rule("axis_names_unique")
               << "mesh axis name '" << names[i] << "' is used twice (axes " << i << " and " << j
               << "); every axis needs its own name";
  return {};
}

/// A name used to look an axis up must be one of the mesh's axes.
constexpr Message axis_known(std::span<const std::string_view> names, std::string_view name) noexcept {
  for (auto n : names)
    if (n == name) return {};
  Message m = Message::rule("axis_known");
  m << "the mesh has no axis named '" << name << "'; its axes are";
  for (std::size_t i = 0; i < names.size(); ++i) m << (i == 0 ? " '" : ", '") << names[i] << "'";
  return m;
}

/// A group over several axes names each axis once.
constexpr Message group_axes_distinct(std::span<const std::string_view> group) noexcept {
  for (std::size_t i = 0; i < group.size(); ++i)
    for (std::size_t j = i + 1; j < group.size(); ++j)
      if (group[i] == group[j])
        return Message::rule("group_axes_distinct")
               << "mesh axis '" << group[i] << "' is named twice in one group; name each axis once";
  if (group.empty()) return Message::rule("group_axes_distinct") << "a group needs at least one mesh axis";
  return {};
}

constexpr Message dynamic_sizes_given(std::size_t expected, std::size_t given) noexcept {
  if (expected == given) return {};
  return Message::rule("dynamic_sizes_given")
         << "the mesh has " << expected << " axis size(s) given at run time, but " << given
         << " were passed; pass one size per Axis<\"name\"> without a size, in axis order";
}

constexpr Message rank_in_mesh(index_t rank, index_t mesh_size) noexcept {
  if (rank >= 0 && rank < mesh_size) return {};
  return Message::rule("rank_in_mesh")
         << "rank " << rank << " is outside the mesh, whose ranks are 0 to " << (mesh_size - 1);
}

constexpr Message coordinate_in_axis(std::string_view name, index_t coordinate, index_t size) noexcept {
  if (coordinate >= 0 && coordinate < size) return {};
  return Message::rule("coordinate_in_axis")
         << "coordinate " << coordinate << " is outside mesh axis '" << name << "' of size " << size;
}

/// A template argument that must be a mesh is a DeviceMesh; `user` says which template took
/// it and `type` is its spelling.
constexpr Message mesh_is_device_mesh(bool is_mesh, std::string_view user, std::string_view type) noexcept {
  if (is_mesh) return {};
  return Message::rule("mesh_is_device_mesh") << user << "'s Mesh is '" << type
                                              << "', which is not a mesh; use DeviceMesh<Axis<\"name\", size>...>";
}

}  // namespace meshplan::mesh_rules
