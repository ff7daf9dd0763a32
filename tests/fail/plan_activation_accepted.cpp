// Rule activation_consistent: the bad line must fail with the message below; its twin must compile.
// Sequence-parallel norms feeding plain TP attention: no all-gather on entry.
// expect-error: meshplan \[activation_consistent\]: on mesh axis 'tp', 'layers\.\*\.self_attn\.q_proj\.weight' \(colwise on 'tp'\) reads 'attn_x' as Shard\(1\) \(written by 'layers\.\*\.input_layernorm\.weight'\) but accepts only Replicate
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
namespace st = mp::styles;
using namespace mp::plans;

#ifdef MESHPLAN_FAIL
static_assert(mp::validate<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"tp", 4>>, mp::plan_cat_t<parts::sp_ends<"tp">, parts::sp_layer_norms<"tp">, parts::tp_gqa<"tp">, parts::tp_qk_norms<"tp">, parts::sp_mlp_scope<"tp">, parts::replicated_router<>, parts::sp_experts<"tp">>>());
#else
static_assert(mp::validate<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"tp", 4>>, qwen3_moe::tp_sp<>>());
#endif
