// Rule mesh_arguments_are_axes: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[mesh_arguments_are_axes\]: DeviceMesh argument 1 is 'int', not an Axis
#include "meshplan/mesh/device_mesh.hpp"

namespace mp = meshplan;

#ifdef MESHPLAN_FAIL
mp::DeviceMesh<mp::Axis<"ep", 2>, int> mesh;
#else
mp::DeviceMesh<mp::Axis<"ep", 2>, mp::Axis<"tp", 2>> mesh;
#endif
