#pragma once
// The legality rules of a Layout (global extents plus one placement per mesh axis).

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cstddef>
#include <span>
#include <string_view>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/placement/placement.hpp"

namespace meshplan::placement_rules {

constexpr Message placement_count(std::size_t mesh_axes, std::size_t placements) noexcept {
  if (mesh_axes == placements) return {};
  return Message::rule("placement_count") << "a Layout needs one placement per mesh axis: the mesh has " << mesh_axes
                                          << " axis(es) but " << placements << " placement(s) were given";
}

/// `type` is the spelling of the offending template argument.
constexpr Message is_a_placement(std::size_t index, bool is_placement, std::string_view type) noexcept {
  if (is_placement) return {};
  return Message::rule("is_a_placement") << "Layout placement " << index << " is '" << type
                                         << "', which is not a placement; use Replicate, Shard<D>, "
                                            "StridedShard<D, SF> or Partial<Op>";
}

/// A shard dim names a dim of the tensor: 0 <= dim < rank, or -rank <= dim < 0 counted
/// from the end as in DTensor.
constexpr Message shard_dim_in_range(std::string_view axis, const PlacementSpec& p, std::size_t rank) noexcept {
  if (!p.is_shard()) return {};
  auto r = static_cast<int>(rank);
  if (p.dim >= -r && p.dim < r) return {};
  Message m = Message::rule("shard_dim_in_range");
  m << "placement " << p << " on mesh axis '" << axis << "' shards dim " << p.dim << " of a tensor with " << rank
    << " dim(s)";
  return m;
}

/// Every placement of a layout, checked in mesh order; the first broken rule wins.
constexpr Message check_placements(std::span<const std::string_view> axis_names,
                                   std::span<const PlacementSpec> placements, std::size_t rank) noexcept {
  if (auto m = placement_count(axis_names.size(), placements.size()); !m.ok()) return m;
  for (std::size_t a = 0; a < placements.size(); ++a) {
    if (placements[a].kind == PlacementKind::strided_shard)
      if (auto m = split_factor_positive(placements[a].split_factor); !m.ok()) return m;
    if (auto m = shard_dim_in_range(axis_names[a], placements[a], rank); !m.ok()) return m;
  }
  return {};
}

/// Negative shard dims counted from the end, as DTensor normalizes them.
constexpr PlacementSpec normalized(PlacementSpec p, std::size_t rank) noexcept {
  if (p.is_shard() && p.dim < 0) p.dim += static_cast<int>(rank);
  return p;
}

}  // namespace meshplan::placement_rules
