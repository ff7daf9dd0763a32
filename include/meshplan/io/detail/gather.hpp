#pragma once
// Gather: every rank's piece of a tensor put back together, by the tensor's layout.
//
//   mp::Tensor<float> full = mp::gather_full(comm, piece, layout);   // whole on every rank
//
// The pieces travel with one all_gather_v over all ranks of the job (each rank knows every
// piece's size from the layout), and every rank places them where the layout says; ranks
// holding the same piece (replicas) agree, so any of them may be used. Replicated axes move
// the same data more than once: this is the simple, exact path for checkpoints and tests,
// not a training-time collective.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <vector>

#include "meshplan/comm/communicator.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/placement/detail/slice.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/mesh/group.hpp"
#include "meshplan/mesh/detail/mesh_rules.hpp"
#include "meshplan/placement/layout_spec.hpp"

namespace meshplan {

template <class T, class C>
Tensor<T> gather_full(C& comm, const Tensor<T>& piece, const LayoutSpec& layout) {
  const Group world = comm.world_group();
  enforce(mesh_rules::rank_in_mesh(comm.rank(), layout.mesh().size()));
  piece.require_shape("the local piece", layout.local_extents(comm.rank()));
  std::vector<index_t> counts(static_cast<std::size_t>(world.size()));
  index_t total = 0;
  for (index_t r = 0; r < world.size(); ++r) {
    index_t n = 1;
    for (index_t e : layout.local_extents(r)) n *= e;
    total += (counts[static_cast<std::size_t>(r)] = n);
  }
  std::vector<T> all(static_cast<std::size_t>(total));
  comm.all_gather_v(piece.span(), std::span<T>(all), counts, world, "gather");
  Tensor<T> full(layout.global_extents());
  index_t offset = 0;
  for (index_t r = 0; r < world.size(); ++r) {
    const auto n = counts[static_cast<std::size_t>(r)];
    Tensor<T> p(layout.local_extents(r), std::vector<T>(all.begin() + offset, all.begin() + offset + n));
    place_piece(p, layout, r, full);
    offset += n;
  }
  return full;
}

}  // namespace meshplan
