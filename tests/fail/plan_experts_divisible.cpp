// Rule experts_divisible: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[experts_divisible\]: num_experts \(8\) is not divisible by 16 \(mesh axis 'ep'\), which shards dim 0 of 'layers\.\*\.mlp\.experts\.gate_up_proj'
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
namespace st = mp::styles;
using namespace mp::plans;

#ifdef MESHPLAN_FAIL
static_assert(mp::validate<mp::models::Mixtral_8x7B, mp::DeviceMesh<mp::Axis<"ep", 16>>, mixtral::ep<>>());
#else
static_assert(mp::validate<mp::models::Mixtral_8x7B, mp::DeviceMesh<mp::Axis<"ep", 8>>, mixtral::ep<>>());
#endif
