#pragma once
// RowBlock: a run of rows moved as one block, rows [from, from + rows) of one buffer to
// [to, to + rows) of another. How the MoE pipeline describes a regrouping on the host, and
// what every backend's copy kernel takes.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include "meshplan/core/size.hpp"

namespace meshplan {

struct RowBlock {
  index_t from = 0;
  index_t to = 0;
  index_t rows = 0;
  friend constexpr bool operator==(const RowBlock&, const RowBlock&) = default;
};

}  // namespace meshplan
