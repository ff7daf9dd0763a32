#pragma once
// Which elements of each tensor dim a rank holds, by DTensor's rules.
//
// For one tensor dim of extent n, a rank starts with the index list [0, n) and applies the
// placement of every mesh axis in mesh order (left to right), each to the list it holds
// so far:
//   Shard on an axis of size k, coordinate r: torch.chunk into k pieces of ceil(L/k)
//     (L = current length); the rank keeps piece r, which is short or empty at the end.
//   StridedShard with split factor sf: torch.chunk into sf pieces, each piece chunked
//     into k as above; the rank keeps piece_0[r] | piece_1[r] | ... in that order.
//   Replicate, Partial: unchanged.
// The local extent is the final length; the global offset is the first index held, or
// n when the rank holds nothing (DTensor's out-of-range marker for empty shards).
// Index lists are kept as runs of consecutive global indices.

#include "meshplan/core/detail/public_begin.hpp"

#include <cstddef>
#include <span>
#include <vector>

#include "meshplan/core/detail/macros.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/mesh/detail/indexing.hpp"
#include "meshplan/placement/placement.hpp"

namespace meshplan {

/// Piece r of torch.chunk(n, k), with DTensor's empty fill: {offset, size}.
struct Chunk {
  index_t offset;
  index_t size;
  friend constexpr bool operator==(const Chunk&, const Chunk&) = default;
};

MESHPLAN_HOST_DEVICE constexpr Chunk chunk(index_t n, index_t k, index_t r) noexcept {
  index_t full = (n + k - 1) / k;
  index_t start = r * full;
  if (start >= n) return {n, 0};
  return {start, (start + full < n ? start + full : n) - start};
}

/// Consecutive global indices [begin, begin + size).
struct IndexRun {
  index_t begin;
  index_t size;
  friend constexpr bool operator==(const IndexRun&, const IndexRun&) = default;
};

using IndexRuns = std::vector<IndexRun>;

constexpr index_t total_size(const IndexRuns& runs) noexcept {
  index_t n = 0;
  for (const auto& run : runs) n += run.size;
  return n;
}

/// Appends the local positions [position, position + count) of `runs` to `out`.
constexpr void take_positions(const IndexRuns& runs, index_t position, index_t count, IndexRuns& out) {
  for (const auto& run : runs) {
    if (count == 0) return;
    if (position >= run.size) {
      position -= run.size;
      continue;
    }
    index_t n = run.size - position < count ? run.size - position : count;
    if (!out.empty() && out.back().begin + out.back().size == run.begin + position)
      out.back().size += n;  // Keep runs maximal so equal index sets compare equal.
    else
      out.push_back({run.begin + position, n});
    count -= n;
    position = 0;
  }
}

/// What one placement on an axis of `axis_size` leaves of `runs` at `coordinate`, for
/// tensor dim `dim`. Placements on other dims leave the runs unchanged.
constexpr IndexRuns apply_placement(const IndexRuns& runs, const PlacementSpec& p, std::size_t dim,
                                    index_t axis_size, index_t coordinate) {
  if (!p.is_shard(static_cast<int>(dim))) return runs;
  index_t length = total_size(runs);
  IndexRuns out;
  if (p.kind == PlacementKind::shard) {
    Chunk c = chunk(length, axis_size, coordinate);
    take_positions(runs, c.offset, c.size, out);
    return out;
  }
  // StridedShard: chunk into split_factor pieces, then each piece into axis_size.
  for (index_t j = 0; j < p.split_factor; ++j) {
    Chunk piece = chunk(length, p.split_factor, j);
    Chunk part = chunk(piece.size, axis_size, coordinate);
    take_positions(runs, piece.offset + part.offset, part.size, out);
  }
  return out;
}

/// The global indices of tensor dim `dim` (extent `extent`) that `rank` holds.
/// `placements` has one entry per mesh axis, with non-negative dims.
template <MeshShape M>
constexpr IndexRuns held_indices(const M& mesh, std::span<const PlacementSpec> placements, std::size_t dim,
                                 index_t extent, index_t rank) {
  IndexRuns runs;
  if (extent > 0) runs.push_back({0, extent});
  for (std::size_t a = 0; a < placements.size(); ++a)
    runs = apply_placement(runs, placements[a], dim, mesh.axis_size(a), coordinate(mesh, rank, a));
  return runs;
}

template <MeshShape M>
constexpr index_t local_extent(const M& mesh, std::span<const PlacementSpec> placements, std::size_t dim,
                               index_t extent, index_t rank) {
  return total_size(held_indices(mesh, placements, dim, extent, rank));
}

template <MeshShape M>
constexpr index_t global_offset(const M& mesh, std::span<const PlacementSpec> placements, std::size_t dim,
                                index_t extent, index_t rank) {
  IndexRuns runs = held_indices(mesh, placements, dim, extent, rank);
  return runs.empty() ? extent : runs.front().begin;
}

/// The local extent of `dim` when it is the same on every rank: the chain of splits is
/// exact. `axis_sizes` may hold `dynamic` for axes that do not shard `dim`; returns
/// `dynamic` when the extent is not uniform or not known.
constexpr index_t uniform_local_extent(std::span<const index_t> axis_sizes, std::span<const PlacementSpec> placements,
                                       std::size_t dim, index_t extent) noexcept {
  if (extent == dynamic) return dynamic;
  index_t length = extent;
  for (std::size_t a = 0; a < placements.size(); ++a) {
    const PlacementSpec& p = placements[a];
    if (!p.is_shard(static_cast<int>(dim))) continue;
    index_t k = axis_sizes[a];
    if (k == dynamic) return dynamic;
    if (p.kind == PlacementKind::strided_shard) {
      if (length % p.split_factor != 0 || (length / p.split_factor) % k != 0) return dynamic;
    } else if (length % k != 0) {
      return dynamic;
    }
    length /= k;
  }
  return length;
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
