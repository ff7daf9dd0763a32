// Rule layout_mesh: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[layout_mesh\]: the first argument of Layout is 'int', not a DeviceMesh
#include "meshplan/placement/layout.hpp"

namespace mp = meshplan;

#ifdef MESHPLAN_FAIL
mp::Layout<int, mp::Extents<8>, mp::Shard<0>> w;
#else
mp::Layout<mp::DeviceMesh<mp::Axis<"tp", 2>>, mp::Extents<8>, mp::Shard<0>> w;
#endif
