// Rule redistribution_same_tensor: both layouts describe one tensor.
// expect-error: meshplan \[redistribution_same_tensor\]: a redistribution keeps the global extents
#include "meshplan/placement/redistribute.hpp"

namespace mp = meshplan;
using Mesh = mp::DeviceMesh<mp::Axis<"tp", 2>>;
using Rows = mp::Layout<Mesh, mp::Extents<8, 8>, mp::Shard<0>>;

#ifdef MESHPLAN_FAIL
using To = mp::Layout<Mesh, mp::Extents<8, 16>, mp::Replicate>;
#else
using To = mp::Layout<Mesh, mp::Extents<8, 8>, mp::Replicate>;
#endif
constexpr auto steps = mp::redistribution<Rows, To>::steps;
