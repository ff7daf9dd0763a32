// Rule axis_known: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[axis_known\]: the mesh has no axis named 'xp'; its axes are 'dp', 'ep'
#include "meshplan/mesh/device_mesh.hpp"

namespace mp = meshplan;

#ifdef MESHPLAN_FAIL
auto ep = mp::DeviceMesh<mp::Axis<"dp", 2>, mp::Axis<"ep", 4>>{}.size<"xp">();
#else
auto ep = mp::DeviceMesh<mp::Axis<"dp", 2>, mp::Axis<"ep", 4>>{}.size<"ep">();
#endif
