#pragma once
// Token permutation for expert parallelism, on the CPU.
//
// Every (token, slot) pair is a row; pair p = token * top_k + slot. Sorting the pairs by
// expert, stably (by pair index within an expert), gives the order rows are sent in:
// experts ascending, so the rows for EP rank q (experts [q*E/ep, (q+1)*E/ep)) are one
// contiguous block. After the all-to-all-v, rows arrive as blocks (source rank s, local
// expert j) in s-major order; regrouping puts them j-major (then s), the order the grouped
// expert MLP reads; its inverse puts the results back for the return trip.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/cpu/router.hpp"

namespace meshplan {

struct ExpertOrder {
  std::vector<index_t> order;    // sorted position -> pair index
  std::vector<index_t> counts;   // rows per expert
  std::vector<index_t> offsets;  // first sorted position of each expert; offsets[E] = rows
};

namespace cpu_rules {
inline Message expert_id_valid(index_t pair, std::int32_t expert, index_t experts) {
  if (expert >= 0 && expert < experts) return {};
  return Message::rule("expert_id_valid") << "routing pair " << pair << " names expert " << expert
                                          << ", outside 0.." << (experts - 1);
}
}  // namespace cpu_rules

namespace cpu {

/// A stable counting sort of the routing's pairs by expert.
inline ExpertOrder sort_by_expert(const Routing& routing, index_t experts) {
  const index_t pairs = routing.tokens * routing.top_k;
  ExpertOrder o{std::vector<index_t>(static_cast<std::size_t>(pairs)),
                std::vector<index_t>(static_cast<std::size_t>(experts), 0),
                std::vector<index_t>(static_cast<std::size_t>(experts + 1), 0)};
  for (index_t p = 0; p < pairs; ++p) {
    std::int32_t e = routing.experts[static_cast<std::size_t>(p)];
    enforce(cpu_rules::expert_id_valid(p, e, experts));
    ++o.counts[static_cast<std::size_t>(e)];
  }
  for (index_t e = 0; e < experts; ++e) o.offsets[e + 1] = o.offsets[e] + o.counts[e];
  std::vector<index_t> next(o.offsets.begin(), o.offsets.end() - 1);
  for (index_t p = 0; p < pairs; ++p) o.order[static_cast<std::size_t>(next[routing.experts[p]]++)] = p;
  return o;
}

/// out[i] = rows[index[i]] for rows of `width` elements.
template <class T>
void gather_rows(std::span<const T> rows, std::span<const index_t> index, index_t width, std::span<T> out) {
  for (std::size_t i = 0; i < index.size(); ++i)
    std::copy_n(rows.data() + index[i] * width, width, out.data() + static_cast<index_t>(i) * width);
}

/// out[index[i]] = rows[i]: the inverse of gather_rows.
template <class T>
void scatter_rows(std::span<const T> rows, std::span<const index_t> index, index_t width, std::span<T> out) {
  for (std::size_t i = 0; i < index.size(); ++i)
    std::copy_n(rows.data() + static_cast<index_t>(i) * width, width, out.data() + index[i] * width);
}

/// The token of each sorted position (the rows to send are x[token]).
inline std::vector<index_t> tokens_of(const ExpertOrder& o, index_t top_k) {
  std::vector<index_t> t(o.order.size());
  for (std::size_t i = 0; i < t.size(); ++i) t[i] = o.order[i] / top_k;
  return t;
}

/// A run of rows moved as one block when regrouping: rows [from, from + rows) of the
/// received order go to [to, to + rows) of the expert-major order.
struct RegroupBlock {
  index_t from;
  index_t to;
  index_t rows;
  friend constexpr bool operator==(const RegroupBlock&, const RegroupBlock&) = default;
};

/// For rows received as (source s, local expert j) blocks in s-major order with
/// counts[s * experts + j], the blocks that put them j-major (then s). Empty blocks are left
/// out. The CUDA layer copies these blocks on the device.
inline std::vector<RegroupBlock> regroup_blocks(std::span<const index_t> counts, index_t sources, index_t experts) {
  std::vector<index_t> start(static_cast<std::size_t>(sources * experts));
  index_t pos = 0;
  for (index_t i = 0; i < sources * experts; ++i) {
    start[static_cast<std::size_t>(i)] = pos;
    pos += counts[static_cast<std::size_t>(i)];
  }
  std::vector<RegroupBlock> blocks;
  index_t to = 0;
  for (index_t j = 0; j < experts; ++j)
    for (index_t s = 0; s < sources; ++s)
      if (const index_t n = counts[static_cast<std::size_t>(s * experts + j)]; n > 0) {
        blocks.push_back({start[static_cast<std::size_t>(s * experts + j)], to, n});
        to += n;
      }
  return blocks;
}

/// The same as a per-row index: the received position of each row in j-major order.
inline std::vector<index_t> regroup_index(std::span<const index_t> counts, index_t sources, index_t experts) {
  std::vector<index_t> index;
  for (const RegroupBlock& b : regroup_blocks(counts, sources, experts))
    for (index_t r = 0; r < b.rows; ++r) index.push_back(b.from + r);
  return index;
}

}  // namespace cpu
}  // namespace meshplan
