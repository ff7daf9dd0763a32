#pragma once
// The host side of an expert-parallel exchange, the same for every backend: its sizes,
// worked out from two count tables (the rows this rank routes to every global expert, and,
// after the count all-to-all, the rows every member of the EP group routes to each of this
// rank's experts), and the row blocks that regroup what arrives. Members hold contiguous
// runs of E / P experts, member q experts [q * E/P, (q + 1) * E/P).
//
// Rows leave sorted by expert, so those for member q are one contiguous block. They arrive
// as blocks (source member s, local expert j) in s-major order; regrouping puts them
// j-major (then s), the order the grouped expert MLP reads, and its inverse puts the
// results back for the return trip.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <span>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/detail/row_block.hpp"
#include "meshplan/core/size.hpp"

namespace meshplan {

struct DispatchCounts {
  std::vector<index_t> send_rows;              // rows to each member
  std::vector<index_t> recv_rows;              // rows from each member
  std::vector<index_t> rows_per_local_expert;  // all members' rows for each local expert
  std::vector<index_t> local_offsets;          // exclusive prefix sums of the above, El + 1 of them

  index_t received() const noexcept { return local_offsets.empty() ? 0 : local_offsets.back(); }

  /// Row counts as element counts of rows of `hidden` elements (what all_to_all_v takes).
  static std::vector<index_t> elements(std::span<const index_t> rows, index_t hidden) {
    std::vector<index_t> e(rows.begin(), rows.end());
    for (index_t& c : e) c *= hidden;
    return e;
  }
};

/// `to_expert[e]`: rows this rank routes to global expert e (E entries); `from[s * El + j]`:
/// rows member s routes to this rank's local expert j (P * El entries).
inline DispatchCounts dispatch_counts(std::span<const index_t> to_expert, std::span<const index_t> from,
                                      index_t members) {
  const index_t E = static_cast<index_t>(to_expert.size());
  enforce(members >= 1 && E % members == 0 && static_cast<index_t>(from.size()) == E
              ? Message{}
              : Message::rule("experts_divisible") << E << " experts' counts cannot be split over " << members
                                                   << " members with " << from.size() << " incoming counts");
  const index_t El = E / members;
  DispatchCounts d{
      std::vector<index_t>(static_cast<std::size_t>(members)), std::vector<index_t>(static_cast<std::size_t>(members)),
      std::vector<index_t>(static_cast<std::size_t>(El)), std::vector<index_t>(static_cast<std::size_t>(El + 1))};
  for (index_t q = 0; q < members; ++q)
    for (index_t j = 0; j < El; ++j) {
      const auto at = static_cast<std::size_t>(q * El + j);
      d.send_rows[static_cast<std::size_t>(q)] += to_expert[at];
      d.recv_rows[static_cast<std::size_t>(q)] += from[at];
      d.rows_per_local_expert[static_cast<std::size_t>(j)] += from[at];
    }
  for (index_t j = 0; j < El; ++j)
    d.local_offsets[static_cast<std::size_t>(j + 1)] =
        d.local_offsets[static_cast<std::size_t>(j)] + d.rows_per_local_expert[static_cast<std::size_t>(j)];
  return d;
}

/// For rows received as (source s, local expert j) blocks in s-major order with
/// counts[s * experts + j], the blocks that put them j-major (then s). Empty blocks are left
/// out.
inline std::vector<RowBlock> regroup_blocks(std::span<const index_t> counts, index_t sources, index_t experts) {
  std::vector<index_t> start(static_cast<std::size_t>(sources * experts));
  index_t pos = 0;
  for (index_t i = 0; i < sources * experts; ++i) {
    start[static_cast<std::size_t>(i)] = pos;
    pos += counts[static_cast<std::size_t>(i)];
  }
  std::vector<RowBlock> blocks;
  index_t to = 0;
  for (index_t j = 0; j < experts; ++j)
    for (index_t s = 0; s < sources; ++s)
      if (const index_t n = counts[static_cast<std::size_t>(s * experts + j)]; n > 0) {
        blocks.push_back({start[static_cast<std::size_t>(s * experts + j)], to, n});
        to += n;
      }
  return blocks;
}

}  // namespace meshplan
