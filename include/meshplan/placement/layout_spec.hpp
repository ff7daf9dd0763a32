#pragma once
// LayoutSpec: a Layout whose mesh, extents and placements are known only at run time
// (plans lowered for a MeshSpec, the plan explorer, checkpoint I/O). Same rules and same
// answers as Layout; a Layout converts to it.

#include "meshplan/core/detail/public_begin.hpp"

#include <cstddef>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/mesh/detail/indexing.hpp"
#include "meshplan/mesh/mesh_spec.hpp"
#include "meshplan/placement/extents.hpp"
#include "meshplan/placement/layout.hpp"
#include "meshplan/placement/detail/layout_rules.hpp"
#include "meshplan/placement/placement.hpp"
#include "meshplan/placement/sharding.hpp"

namespace meshplan {

class LayoutSpec {
 public:
  LayoutSpec(MeshSpec mesh, std::vector<index_t> extents, std::vector<PlacementSpec> placements)
      : mesh_(std::move(mesh)), extents_(std::move(extents)), placements_(std::move(placements)) {
    for (std::size_t d = 0; d < extents_.size(); ++d) enforce(placement_rules::extent_nonnegative(d, extents_[d]));
    enforce(placement_rules::check_placements(mesh_.name_views(), placements_, extents_.size()));
    for (auto& p : placements_) p = placement_rules::normalized(p, extents_.size());
  }

  template <class Mesh, class Ext, class... Ps>
  explicit LayoutSpec(const Layout<Mesh, Ext, Ps...>& layout)
      : LayoutSpec(MeshSpec(layout.mesh()), to_vector(layout.global_extents().values()),
                   {layout.placements.begin(), layout.placements.end()}) {}

  const MeshSpec& mesh() const noexcept { return mesh_; }
  std::size_t tensor_rank() const noexcept { return extents_.size(); }
  const std::vector<index_t>& global_extents() const noexcept { return extents_; }
  const std::vector<PlacementSpec>& placements() const noexcept { return placements_; }

  index_t local_extent(std::size_t dim, index_t rank) const {
    check_rank(rank);
    return meshplan::local_extent(mesh_, std::span(placements_), dim, extents_[dim], rank);
  }
  std::vector<index_t> local_extents(index_t rank) const {
    std::vector<index_t> e(tensor_rank());
    for (std::size_t d = 0; d < tensor_rank(); ++d) e[d] = local_extent(d, rank);
    return e;
  }
  std::vector<index_t> global_offsets(index_t rank) const {
    check_rank(rank);
    std::vector<index_t> o(tensor_rank());
    for (std::size_t d = 0; d < tensor_rank(); ++d)
      o[d] = meshplan::global_offset(mesh_, std::span(placements_), d, extents_[d], rank);
    return o;
  }
  IndexRuns held_indices(std::size_t dim, index_t rank) const {
    check_rank(rank);
    return meshplan::held_indices(mesh_, std::span(placements_), dim, extents_[dim], rank);
  }

 private:
  template <std::size_t N>
  static std::vector<index_t> to_vector(const std::array<index_t, N>& a) {
    return {a.begin(), a.end()};
  }
  void check_rank(index_t r) const { enforce(mesh_rules::rank_in_mesh(r, mesh_.size())); }

  MeshSpec mesh_;
  std::vector<index_t> extents_;
  std::vector<PlacementSpec> placements_;
};

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
