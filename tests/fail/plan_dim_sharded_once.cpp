// Rule dim_sharded_once: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[dim_sharded_once\]: 'layers\.\*\.mlp\.experts\.gate_up_proj' has dim 0 sharded on mesh axes 'dp' and 'ep' with plain Shard
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
namespace st = mp::styles;
using namespace mp::plans;

#ifdef MESHPLAN_FAIL
static_assert(mp::validate<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"dp", 2>, mp::Axis<"ep", 4>>, mp::plan_cat_t<parts::replicated_ends, parts::replicated_layer_norms, parts::replicated_gqa, parts::replicated_qk_norms, parts::ep_router<"ep">, mp::Plan<mp::Entry<"layers.*.mlp.experts", st::moe_experts<"ep">, st::moe_experts<"dp">>>>>());
#else
static_assert(mp::validate<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"dp", 2>, mp::Axis<"ep", 4>>, mp::plan_cat_t<parts::replicated_ends, parts::replicated_layer_norms, parts::replicated_gqa, parts::replicated_qk_norms, parts::ep_router<"ep">, mp::Plan<mp::Entry<"layers.*.mlp.experts", st::moe_experts<"ep">>>>>());
#endif
