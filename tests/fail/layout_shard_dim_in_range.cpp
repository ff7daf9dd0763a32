// Rule shard_dim_in_range: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[shard_dim_in_range\]: placement Shard\(2\) on mesh axis 'tp' shards dim 2 of a tensor with 2 dim\(s\)
#include "meshplan/placement/layout.hpp"

namespace mp = meshplan;

#ifdef MESHPLAN_FAIL
mp::Layout<mp::DeviceMesh<mp::Axis<"ep", 4>, mp::Axis<"tp", 2>>, mp::Extents<8, 8>, mp::Shard<0>, mp::Shard<2>> w;
#else
mp::Layout<mp::DeviceMesh<mp::Axis<"ep", 4>, mp::Axis<"tp", 2>>, mp::Extents<8, 8>, mp::Shard<0>, mp::Shard<1>> w;
#endif
