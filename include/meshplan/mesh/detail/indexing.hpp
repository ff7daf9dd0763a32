#pragma once
// Rank <-> coordinate arithmetic on any mesh shape (DeviceMesh or MeshSpec).
//
// Ranks are laid out row-major over the axes, the last axis fastest, exactly as torch's
// DeviceMesh(mesh=torch.arange(n).reshape(sizes)). The functions are constexpr so the
// same code serves static meshes at compile time and run-time meshes.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <concepts>
#include <cstddef>
#include <span>
#include <string_view>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/mesh/group.hpp"
#include "meshplan/mesh/detail/mesh_rules.hpp"

namespace meshplan {

/// What the indexing functions need of a mesh.
template <class M>
concept MeshShape = requires(const M& m, std::size_t axis) {
  { m.ndim() } -> std::convertible_to<std::size_t>;
  { m.axis_size(axis) } -> std::convertible_to<index_t>;
  { m.axis_name(axis) } -> std::convertible_to<std::string_view>;
};

inline constexpr std::size_t no_axis = static_cast<std::size_t>(-1);

template <MeshShape M>
constexpr index_t world_size(const M& m) {
  index_t n = 1;
  for (std::size_t a = 0; a < m.ndim(); ++a) n *= m.axis_size(a);
  return n;
}

/// The index of the axis called `name`, or no_axis.
template <MeshShape M>
constexpr std::size_t find_axis(const M& m, std::string_view name) {
  for (std::size_t a = 0; a < m.ndim(); ++a)
    if (std::string_view(m.axis_name(a)) == name) return a;
  return no_axis;
}

/// The index of the axis called `name`; throws RuleViolation (axis_known) if none is.
template <MeshShape M>
constexpr std::size_t axis_index(const M& m, std::string_view name) {
  std::size_t a = find_axis(m, name);
  if (a == no_axis) {
    std::vector<std::string_view> names;
    for (std::size_t i = 0; i < m.ndim(); ++i) names.push_back(m.axis_name(i));
    throw RuleViolation(mesh_rules::axis_known(names, name));
  }
  return a;
}

/// Distance in ranks between neighbours along `axis`.
template <MeshShape M>
constexpr index_t axis_stride(const M& m, std::size_t axis) {
  index_t stride = 1;
  for (std::size_t a = axis + 1; a < m.ndim(); ++a) stride *= m.axis_size(a);
  return stride;
}

template <MeshShape M>
constexpr index_t coordinate(const M& m, index_t rank, std::size_t axis) {
  return (rank / axis_stride(m, axis)) % m.axis_size(axis);
}

template <MeshShape M>
constexpr index_t rank_of(const M& m, std::span<const index_t> coords) {
  index_t rank = 0;
  for (std::size_t a = 0; a < m.ndim(); ++a) {
    enforce(mesh_rules::coordinate_in_axis(m.axis_name(a), coords[a], m.axis_size(a)));
    rank = rank * m.axis_size(a) + coords[a];
  }
  return rank;
}

/// Number of ranks in a group along `axes`.
template <MeshShape M>
constexpr index_t group_size(const M& m, std::span<const std::size_t> axes) {
  index_t n = 1;
  for (std::size_t a : axes) n *= m.axis_size(a);
  return n;
}

/// The global rank of member `i` of `rank`'s group along `axes` (row-major over `axes`,
/// the last one fastest).
template <MeshShape M>
constexpr index_t group_member(const M& m, index_t rank, std::span<const std::size_t> axes, index_t i) {
  index_t member = rank;
  for (std::size_t k = axes.size(); k-- > 0;) {
    std::size_t a = axes[k];
    index_t size = m.axis_size(a), stride = axis_stride(m, a);
    member += (i % size - coordinate(m, rank, a)) * stride;
    i /= size;
  }
  return member;
}

/// `rank`'s position in its group along `axes`.
template <MeshShape M>
constexpr index_t group_rank(const M& m, index_t rank, std::span<const std::size_t> axes) {
  index_t position = 0;
  for (std::size_t a : axes) position = position * m.axis_size(a) + coordinate(m, rank, a);
  return position;
}

/// The group of `rank` along `axes`, with every member listed.
template <MeshShape M>
Group make_group(const M& m, index_t rank, std::span<const std::size_t> axes) {
  enforce(mesh_rules::rank_in_mesh(rank, world_size(m)));
  Group g;
  index_t n = group_size(m, axes);
  g.members.reserve(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) g.members.push_back(group_member(m, rank, axes, i));
  g.rank = group_rank(m, rank, axes);
  return g;
}

/// The group of `rank` along the axes called `axis_names`.
template <MeshShape M>
Group make_group(const M& m, index_t rank, std::span<const std::string_view> axis_names) {
  enforce(mesh_rules::group_axes_distinct(axis_names));
  std::vector<std::size_t> axes;
  for (auto name : axis_names) axes.push_back(axis_index(m, name));
  return make_group(m, rank, std::span<const std::size_t>(axes));
}

}  // namespace meshplan
