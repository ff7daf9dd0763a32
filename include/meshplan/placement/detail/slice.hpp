#pragma once
// The piece of a full tensor a rank holds under a layout (DTensor's rules, see
// placement/sharding.hpp), and the reverse: a full tensor from every rank's piece.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cstddef>
#include <vector>

#include "meshplan/core/size.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/placement/layout_spec.hpp"

namespace meshplan {

namespace detail {
/// Flattened global indices, per dim, of what `rank` holds.
inline std::vector<std::vector<index_t>> held(const LayoutSpec& layout, index_t rank) {
  std::vector<std::vector<index_t>> dims;
  for (std::size_t d = 0; d < layout.tensor_rank(); ++d) {
    std::vector<index_t> idx;
    for (const auto& run : layout.held_indices(d, rank))
      for (index_t i = 0; i < run.size; ++i) idx.push_back(run.begin + i);
    dims.push_back(std::move(idx));
  }
  return dims;
}

/// Calls f(local_flat, global_flat) for every element of the piece.
template <class F>
void for_each_held(const std::vector<index_t>& global_shape, const std::vector<std::vector<index_t>>& dims, F&& f) {
  const std::size_t rank = dims.size();
  for (const auto& d : dims)
    if (d.empty()) return;
  std::vector<std::size_t> pos(rank, 0);
  index_t local = 0;
  while (true) {
    index_t global = 0;
    for (std::size_t d = 0; d < rank; ++d) global = global * global_shape[d] + dims[d][pos[d]];
    f(local++, global);
    std::size_t d = rank;
    while (d > 0 && ++pos[d - 1] == dims[d - 1].size()) pos[--d] = 0;
    if (d == 0) return;
  }
}
}  // namespace detail

template <class T>
Tensor<T> local_piece(const Tensor<T>& full, const LayoutSpec& layout, index_t rank) {
  full.require_shape("the full tensor", layout.global_extents());
  Tensor<T> piece(layout.local_extents(rank));
  detail::for_each_held(layout.global_extents(), detail::held(layout, rank),
                        [&](index_t local, index_t global) { piece[local] = full[global]; });
  return piece;
}

/// Writes `piece` (what `rank` holds) into its place in `full`.
template <class T>
void place_piece(const Tensor<T>& piece, const LayoutSpec& layout, index_t rank, Tensor<T>& full) {
  full.require_shape("the full tensor", layout.global_extents());
  piece.require_shape("the piece", layout.local_extents(rank));
  detail::for_each_held(layout.global_extents(), detail::held(layout, rank),
                        [&](index_t local, index_t global) { full[global] = piece[local]; });
}

}  // namespace meshplan
