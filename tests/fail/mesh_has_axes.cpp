// Rule mesh_has_axes: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[mesh_has_axes\]: a DeviceMesh needs at least one axis
#include "meshplan/mesh/device_mesh.hpp"

namespace mp = meshplan;

#ifdef MESHPLAN_FAIL
mp::DeviceMesh<> mesh;
#else
mp::DeviceMesh<mp::Axis<"world", 1>> mesh;
#endif
