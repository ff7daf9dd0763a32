#pragma once
// A communication group: the ranks that share all mesh coordinates except those along
// the group's axes.

#include "meshplan/core/detail/public_begin.hpp"

#include <cstddef>
#include <vector>

#include "meshplan/core/size.hpp"

namespace meshplan {

struct Group {
  /// Global ranks of the members, in group order (row-major over the group's axes, the
  /// last axis fastest, as torch's DeviceMesh flattens sub-meshes).
  std::vector<index_t> members;
  /// The calling rank's position in `members`.
  index_t rank = 0;

  index_t size() const noexcept { return static_cast<index_t>(members.size()); }
  index_t global_rank(index_t group_rank) const { return members.at(static_cast<std::size_t>(group_rank)); }
  friend bool operator==(const Group&, const Group&) = default;
};

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
