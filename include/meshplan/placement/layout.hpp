#pragma once
// Layout<Mesh, Extents, Placements...>: a tensor's global extents and one placement per
// mesh axis. It answers, for any rank, the local extents, the global offsets and the
// exact global indices held, by DTensor's rules (see sharding.hpp).
//
//   using Mesh = DeviceMesh<Axis<"ep", 4>, Axis<"tp", 2>>;
//   using GateUp = Layout<Mesh, Extents<128, 1536, 2048>, Shard<0>, StridedShard<1, 2>>;
//   GateUp w;
//   w.local_extents(5);                 // {32, 768, 2048}
//   w.local_extent<0>(5);               // C<32>: the split is exact, so it is static
//
// Illegal layouts do not compile: a wrong number of placements, a template argument that
// is not a placement, a shard dim outside the tensor, a split factor below 1.

#include "meshplan/core/detail/public_begin.hpp"

#include <array>
#include <cstddef>
#include <string_view>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/core/detail/type_name.hpp"
#include "meshplan/mesh/device_mesh.hpp"
#include "meshplan/placement/extents.hpp"
#include "meshplan/placement/detail/layout_rules.hpp"
#include "meshplan/placement/placement.hpp"
#include "meshplan/placement/sharding.hpp"

namespace meshplan {

namespace detail {
template <class P>
constexpr PlacementSpec spec_of() noexcept {
  if constexpr (is_placement_v<P>) return P::spec;
  else return PlacementSpec::replicate();
}

// The tensor rank, or 0 for a non-Extents argument (reported by check_layout).
template <class Ext>
constexpr std::size_t rank_of_extents() noexcept {
  if constexpr (is_extents_v<Ext>) return Ext::rank();
  else return 0;
}

template <class Mesh, class Ext, class... Ps>
constexpr Message check_layout() noexcept {
  Message m;
  std::size_t i = 0;
  ((m = m.ok() ? placement_rules::is_a_placement(i, is_placement_v<Ps>, type_name<Ps>()) : m, ++i), ...);
  if (!m.ok()) return m;
  if constexpr (!is_device_mesh_v<Mesh>) {
    return Message::rule("layout_mesh") << "the first argument of Layout is '" << type_name<Mesh>()
                                        << "', not a DeviceMesh<...>";
  } else if constexpr (!is_extents_v<Ext>) {
    return Message::rule("layout_extents") << "the second argument of Layout is '" << type_name<Ext>()
                                           << "', not an Extents<...>";
  } else {
    constexpr std::array<PlacementSpec, sizeof...(Ps)> specs{spec_of<Ps>()...};
    return placement_rules::check_placements(Mesh::names, specs, Ext::rank());
  }
}
}  // namespace detail

/// True when Layout<Mesh, Ext, Ps...> would compile: detection without a hard error.
template <class Mesh, class Ext, class... Ps>
inline constexpr bool valid_layout_v = detail::check_layout<Mesh, Ext, Ps...>().ok();

template <class Mesh, class Ext, class... Ps>
class Layout {
  static_assert(rule_check<detail::check_layout<Mesh, Ext, Ps...>()>::passed);

 public:
  using mesh_type = Mesh;
  using extents_type = Ext;
  static constexpr std::size_t tensor_rank = detail::rank_of_extents<Ext>();
  /// One placement per mesh axis, negative shard dims normalized.
  static constexpr std::array<PlacementSpec, sizeof...(Ps)> placements{
      placement_rules::normalized(detail::spec_of<Ps>(), tensor_rank)...};

  constexpr Layout() noexcept
    requires(Mesh::is_static && Ext::is_static)
  = default;
  constexpr Layout(const Mesh& mesh, const Ext& extents) noexcept : mesh_(mesh), extents_(extents) {}

  constexpr const Mesh& mesh() const noexcept { return mesh_; }
  constexpr const Ext& global_extents() const noexcept { return extents_; }

  /// Local extent of `dim` on `rank`.
  constexpr index_t local_extent(std::size_t dim, index_t rank) const {
    check_rank(rank);
    return meshplan::local_extent(mesh_, std::span(placements), dim, extents_.extent(dim), rank);
  }

  /// Local extent of dim D on `rank`: C<n> when every rank holds the same static extent.
  template <std::size_t D>
  constexpr auto local_extent(index_t rank) const {
    static_assert(rule_check<placement_rules::dim_index_in_range("Layout::local_extent", D, tensor_rank)>::passed);
    if constexpr (D >= tensor_rank) {
      return index_t{0};  // refused above; keeps the error single
    } else if constexpr (constexpr index_t n = static_local_extent(D); n != dynamic) {
      check_rank(rank);
      return C<n>{};
    } else {
      return local_extent(D, rank);
    }
  }

  constexpr std::array<index_t, tensor_rank> local_extents(index_t rank) const {
    check_rank(rank);
    std::array<index_t, tensor_rank> e{};
    for (std::size_t d = 0; d < tensor_rank; ++d)
      e[d] = meshplan::local_extent(mesh_, std::span(placements), d, extents_.extent(d), rank);
    return e;
  }

  /// DTensor's global offset: the first global index held, or the global extent when
  /// the rank holds nothing of that dim.
  constexpr std::array<index_t, tensor_rank> global_offsets(index_t rank) const {
    check_rank(rank);
    std::array<index_t, tensor_rank> o{};
    for (std::size_t d = 0; d < tensor_rank; ++d)
      o[d] = meshplan::global_offset(mesh_, std::span(placements), d, extents_.extent(d), rank);
    return o;
  }

  /// The global indices of `dim` held by `rank`, as runs, in local order.
  constexpr IndexRuns held_indices(std::size_t dim, index_t rank) const {
    check_rank(rank);
    return meshplan::held_indices(mesh_, std::span(placements), dim, extents_.extent(dim), rank);
  }

  /// The extent of `dim` every rank holds when the split is exact and static, else
  /// `dynamic`.
  static constexpr index_t static_local_extent(std::size_t dim) noexcept {
    return uniform_local_extent(Mesh::static_sizes, placements, dim, Ext::static_extent(dim));
  }

 private:
  constexpr void check_rank(index_t r) const { enforce(mesh_rules::rank_in_mesh(r, world_size(mesh_))); }

  [[no_unique_address]] Mesh mesh_{};
  [[no_unique_address]] Ext extents_{};
};

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
