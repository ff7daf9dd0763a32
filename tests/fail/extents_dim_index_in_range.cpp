// Rule dim_index_in_range: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[dim_index_in_range\]: Extents::extent<2> names a dim of a tensor of rank 2
#include "meshplan/placement/extents.hpp"

namespace mp = meshplan;

constexpr mp::Extents<8, 16> shape{};
#ifdef MESHPLAN_FAIL
constexpr auto width = shape.extent<2>();
#else
constexpr auto width = shape.extent<1>();
static_assert(width == 16);
#endif
