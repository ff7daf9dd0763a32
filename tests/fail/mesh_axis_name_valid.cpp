// Rule axis_name_valid: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[axis_name_valid\]: mesh axis name 'e-p' is not an identifier
#include "meshplan/mesh/device_mesh.hpp"

namespace mp = meshplan;

#ifdef MESHPLAN_FAIL
mp::DeviceMesh<mp::Axis<"e-p", 2>> mesh;
#else
mp::DeviceMesh<mp::Axis<"e_p", 2>> mesh;
#endif
