// Rule group_axes_distinct: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[group_axes_distinct\]: mesh axis 'ep' is named twice in one group
#include "meshplan/mesh/device_mesh.hpp"

namespace mp = meshplan;

#ifdef MESHPLAN_FAIL
auto g = mp::DeviceMesh<mp::Axis<"dp", 2>, mp::Axis<"ep", 4>>{}.group<"ep", "ep">(0);
#else
auto g = mp::DeviceMesh<mp::Axis<"dp", 2>, mp::Axis<"ep", 4>>{}.group<"dp", "ep">(0);
#endif
