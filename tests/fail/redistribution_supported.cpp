// Rule redistribution_supported: a sharded tensor cannot become a partial one.
// expect-error: meshplan \[redistribution_supported\]: cannot redistribute Shard\(0\) to Partial\(sum\) on mesh axis 'tp': a sharded tensor has no partial form
#include "meshplan/placement/redistribute.hpp"

namespace mp = meshplan;
using Mesh = mp::DeviceMesh<mp::Axis<"tp", 2>>;
using Rows = mp::Layout<Mesh, mp::Extents<8, 8>, mp::Shard<0>>;

#ifdef MESHPLAN_FAIL
using To = mp::Layout<Mesh, mp::Extents<8, 8>, mp::Partial<>>;
#else
using To = mp::Layout<Mesh, mp::Extents<8, 8>, mp::Replicate>;
#endif
constexpr auto steps = mp::redistribution<Rows, To>::steps;
