// Rule activation_consistent: the bad line must fail with the message below; its twin must compile.
// transformers' EP on the attention TP axis: every rank holds every token. The twin splits them first.
// expect-error: meshplan \[activation_consistent\]: on mesh axis 'tp', 'layers\.\*\.mlp\.experts\.gate_up_proj' \(moe_experts on 'tp'\) reads 'mlp_x' as Replicate .* but accepts only Shard\(1\)
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
namespace st = mp::styles;
using namespace mp::plans;

#ifdef MESHPLAN_FAIL
static_assert(mp::validate<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"tp", 4>>, mp::plan_cat_t<parts::tp_ends<"tp">, parts::replicated_layer_norms, parts::tp_gqa<"tp">, parts::tp_qk_norms<"tp">, parts::ep_router<"tp">, parts::ep_experts<"tp">>>());
#else
static_assert(mp::validate<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"tp", 4>>, mp::plan_cat_t<parts::tp_ends<"tp">, parts::replicated_layer_norms, parts::tp_gqa<"tp">, parts::tp_qk_norms<"tp">, parts::ep_router<"tp">, parts::ep_experts<"tp">, parts::token_split_mlp_scope<"tp">>>());
#endif
