// Rule activation_consistent: the bad line must fail with the message below; its twin must compile.
// Sequence parallelism with an all-reducing o_proj: attention returns a replicated residual where the rest keeps it sequence-sharded.
// expect-error: meshplan \[activation_consistent\]: on mesh axis 'tp', 'layers\.\*\.self_attn' writes 'residual' as Replicate but 'embed_tokens\.weight' writes it as Shard\(1\)
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
namespace st = mp::styles;
using namespace mp::plans;

#ifdef MESHPLAN_FAIL
static_assert(mp::validate<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"tp", 4>>, mp::plan_cat_t<parts::sp_ends<"tp">, parts::sp_layer_norms<"tp">, mp::Plan<mp::Entry<"layers.*.self_attn", st::gather_input<"tp">>>, parts::tp_gqa<"tp">, parts::tp_qk_norms<"tp">, parts::sp_mlp_scope<"tp">, parts::replicated_router<>, parts::sp_experts<"tp">>>());
#else
static_assert(mp::validate<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"tp", 4>>, qwen3_moe::tp_sp<>>());
#endif
