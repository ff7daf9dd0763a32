// Rule axis_size_positive: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[axis_size_positive\]: mesh axis .ep. has size 0; every mesh axis needs a size of at least 1
#include "meshplan/mesh/device_mesh.hpp"

namespace mp = meshplan;

#ifdef MESHPLAN_FAIL
mp::DeviceMesh<mp::Axis<"dp", 2>, mp::Axis<"ep", 0>> mesh;
#else
mp::DeviceMesh<mp::Axis<"dp", 2>, mp::Axis<"ep", 1>> mesh;
#endif
