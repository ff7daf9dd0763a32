// Rule mesh_is_device_mesh: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[mesh_is_device_mesh\]: validate<Model, Mesh, Plan>'s Mesh is 'Axis<.*>', which is not a mesh; use DeviceMesh
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
using namespace mp::plans;

#ifdef MESHPLAN_FAIL
static_assert(mp::validate<mp::models::TinyMixtral, mp::Axis<"ep", 8>, mixtral::ep<>>());
#else
static_assert(mp::validate<mp::models::TinyMixtral, mp::DeviceMesh<mp::Axis<"ep", 8>>, mixtral::ep<>>());
#endif
