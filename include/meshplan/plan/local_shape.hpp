#pragma once
// The local shape a Layout type gives every rank, as types and constants: what sizing a
// buffer or a static_assert on a shard needs.
//
//   using GateUp = Layout<DeviceMesh<Axis<"ep", 8>>, Extents<128, 1536, 2048>, Shard<0>>;
//   local_extents_t<GateUp>        // Extents<16, 1536, 2048>
//   local_elements_v<GateUp>       // 16 * 1536 * 2048
//
// A dim whose split is not the same on every rank (torch.chunk's short last shard), or
// depends on a mesh axis sized at run time, is `dynamic`; so is the element count then.

#include "meshplan/core/detail/public_begin.hpp"

#include <cstddef>
#include <utility>

#include "meshplan/core/size.hpp"
#include "meshplan/placement/extents.hpp"
#include "meshplan/placement/layout.hpp"

namespace meshplan {

namespace detail {
template <class L, std::size_t... D>
auto local_extents_of(std::index_sequence<D...>) -> Extents<L::static_local_extent(D)...>;

template <class L>
constexpr index_t local_elements() noexcept {
  index_t n = 1;
  for (std::size_t d = 0; d < L::tensor_rank; ++d) {
    const index_t e = L::static_local_extent(d);
    if (e == dynamic) return dynamic;
    n *= e;
  }
  return n;
}
}  // namespace detail

/// The extents every rank holds under layout L: Extents<...>, `dynamic` where they differ
/// between ranks or are known only at run time.
template <class L>
using local_extents_t = decltype(detail::local_extents_of<L>(std::make_index_sequence<L::tensor_rank>{}));

/// The elements every rank holds under layout L, or `dynamic`.
template <class L>
inline constexpr index_t local_elements_v = detail::local_elements<L>();

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
