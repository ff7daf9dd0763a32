// Rule is_a_placement: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[is_a_placement\]: Layout placement 1 is 'double', which is not a placement
#include "meshplan/placement/layout.hpp"

namespace mp = meshplan;

#ifdef MESHPLAN_FAIL
mp::Layout<mp::DeviceMesh<mp::Axis<"ep", 4>, mp::Axis<"tp", 2>>, mp::Extents<8, 8>, mp::Shard<0>, double> w;
#else
mp::Layout<mp::DeviceMesh<mp::Axis<"ep", 4>, mp::Axis<"tp", 2>>, mp::Extents<8, 8>, mp::Shard<0>, mp::Partial<>> w;
#endif
