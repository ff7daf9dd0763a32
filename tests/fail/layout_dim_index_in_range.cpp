// Rule dim_index_in_range, through Layout: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[dim_index_in_range\]: Layout::local_extent<3> names a dim of a tensor of rank 2
#include "meshplan/placement/layout.hpp"

namespace mp = meshplan;

using Mesh = mp::DeviceMesh<mp::Axis<"tp", 2>>;
constexpr mp::Layout<Mesh, mp::Extents<8, 16>, mp::Shard<0>> weight{};
#ifdef MESHPLAN_FAIL
constexpr auto rows = weight.local_extent<3>(0);
#else
constexpr auto rows = weight.local_extent<0>(0);
static_assert(rows == 4);
#endif
