// Rule dynamic_sizes_given: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[dynamic_sizes_given\]: the mesh has 1 axis size\(s\) given at run time, but 2 were passed
#include "meshplan/mesh/device_mesh.hpp"

namespace mp = meshplan;

#ifdef MESHPLAN_FAIL
mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep", 4>> mesh{2, 4};
#else
mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep", 4>> mesh{2};
#endif
