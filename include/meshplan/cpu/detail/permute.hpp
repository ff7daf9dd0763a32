#pragma once
// Token permutation for expert parallelism, on the CPU.
//
// Every (token, slot) pair is a row; pair p = token * top_k + slot. Sorting the pairs by
// expert, stably (by pair index within an expert), gives the order rows are sent in:
// experts ascending, so the rows for EP rank q (experts [q*E/ep, (q+1)*E/ep)) are one
// contiguous block. Regrouping what arrives copies the row blocks moe/detail/dispatch_plan.hpp
// works out.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/detail/row_block.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/model/routing.hpp"

namespace meshplan {

struct ExpertOrder {
  std::vector<index_t> order;    // sorted position -> pair index
  std::vector<index_t> counts;   // rows per expert
  std::vector<index_t> offsets;  // first sorted position of each expert; offsets[E] = rows
};


namespace cpu {

/// A stable counting sort of the routing's pairs by expert.
inline ExpertOrder sort_by_expert(const Routing& routing, index_t experts) {
  const index_t pairs = routing.tokens * routing.top_k;
  ExpertOrder o{std::vector<index_t>(static_cast<std::size_t>(pairs)),
                std::vector<index_t>(static_cast<std::size_t>(experts), 0),
                std::vector<index_t>(static_cast<std::size_t>(experts + 1), 0)};
  for (index_t p = 0; p < pairs; ++p) {
    std::int32_t e = routing.experts[static_cast<std::size_t>(p)];
    enforce(routing_rules::expert_id_valid(p, e, experts));
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

/// Copies row blocks of `width` elements: out[to + r] = rows[from + r], or (inverse) the
/// other way round, for the blocks of a regrouping (moe/detail/dispatch_plan.hpp).
template <class T>
void copy_row_blocks(std::span<const T> rows, std::span<const RowBlock> blocks, index_t width, bool inverse,
                     std::span<T> out) {
  for (const RowBlock& b : blocks) {
    const index_t from = inverse ? b.to : b.from, to = inverse ? b.from : b.to;
    std::copy_n(rows.data() + from * width, b.rows * width, out.data() + to * width);
  }
}

}  // namespace cpu
}  // namespace meshplan
