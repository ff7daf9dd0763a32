// Rule redistribution_same_mesh: a redistribution stays on one mesh.
// expect-error: meshplan \[redistribution_same_mesh\]: a redistribution stays on one mesh
#include "meshplan/placement/redistribute.hpp"

namespace mp = meshplan;
using Rows = mp::Layout<mp::DeviceMesh<mp::Axis<"tp", 2>>, mp::Extents<8, 8>, mp::Shard<0>>;

#ifdef MESHPLAN_FAIL
using To = mp::Layout<mp::DeviceMesh<mp::Axis<"ep", 2>>, mp::Extents<8, 8>, mp::Replicate>;
#else
using To = mp::Layout<mp::DeviceMesh<mp::Axis<"tp", 2>>, mp::Extents<8, 8>, mp::Replicate>;
#endif
constexpr auto steps = mp::redistribution<Rows, To>::steps;
