// Rule axis_names_unique: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[axis_names_unique\]: mesh axis name 'ep' is used twice \(axes 0 and 2\)
#include "meshplan/mesh/device_mesh.hpp"

namespace mp = meshplan;

#ifdef MESHPLAN_FAIL
mp::DeviceMesh<mp::Axis<"ep", 2>, mp::Axis<"tp", 2>, mp::Axis<"ep", 4>> mesh;
#else
mp::DeviceMesh<mp::Axis<"ep", 2>, mp::Axis<"tp", 2>, mp::Axis<"dp", 4>> mesh;
#endif
