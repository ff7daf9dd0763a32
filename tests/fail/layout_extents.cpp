// Rule layout_extents: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[layout_extents\]: the second argument of Layout is 'int', not an Extents
#include "meshplan/placement/layout.hpp"

namespace mp = meshplan;

#ifdef MESHPLAN_FAIL
mp::Layout<mp::DeviceMesh<mp::Axis<"tp", 2>>, int, mp::Shard<0>> w;
#else
mp::Layout<mp::DeviceMesh<mp::Axis<"tp", 2>>, mp::Extents<8>, mp::Shard<0>> w;
#endif
