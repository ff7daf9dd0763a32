// Rule placement_count: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[placement_count\]: a Layout needs one placement per mesh axis: the mesh has 2 axis\(es\) but 1 placement\(s\) were given
#include "meshplan/placement/layout.hpp"

namespace mp = meshplan;

#ifdef MESHPLAN_FAIL
mp::Layout<mp::DeviceMesh<mp::Axis<"ep", 4>, mp::Axis<"tp", 2>>, mp::Extents<8, 8>, mp::Shard<0>> w;
#else
mp::Layout<mp::DeviceMesh<mp::Axis<"ep", 4>, mp::Axis<"tp", 2>>, mp::Extents<8, 8>, mp::Shard<0>, mp::Replicate> w;
#endif
