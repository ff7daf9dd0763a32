// Rule moe_intermediate_divisible: the bad line must fail with the message below; its twin must compile.
// transformers' split plan (packed_colwise gate_up, rowwise down); the bad line leaves gate_up whole, so down_proj's own rule fires.
// expect-error: meshplan \[moe_intermediate_divisible\]: moe_intermediate_size \(12\) is not divisible by 8 \(mesh axis 'tp'\), which shards dim 2 of 'layers\.\*\.mlp\.experts\.down_proj'
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
namespace st = mp::styles;
using namespace mp::plans;
struct Bad {
  static constexpr mp::ModelSpec spec{.family = mp::Family::qwen3_moe, .hidden_size = 64, .num_hidden_layers = 2, .num_attention_heads = 8, .num_key_value_heads = 8, .head_dim = 8, .vocab_size = 256, .intermediate_size = 128, .num_experts = 16, .num_experts_per_tok = 4, .moe_intermediate_size = 12, .norm_topk_prob = true};
};
struct Good {
  static constexpr mp::ModelSpec spec{.family = mp::Family::qwen3_moe, .hidden_size = 64, .num_hidden_layers = 2, .num_attention_heads = 8, .num_key_value_heads = 8, .head_dim = 8, .vocab_size = 256, .intermediate_size = 128, .num_experts = 16, .num_experts_per_tok = 4, .moe_intermediate_size = 16, .norm_topk_prob = true};
};

#ifdef MESHPLAN_FAIL
static_assert(mp::validate<Bad, mp::DeviceMesh<mp::Axis<"tp", 8>>, mp::plan_cat_t<parts::tp_ends<"tp">, parts::replicated_layer_norms, parts::tp_gqa<"tp">, parts::tp_qk_norms<"tp">, parts::replicated_router<>, mp::Plan<mp::Entry<"layers.*.mlp.experts.gate_up_proj", st::replicate>, mp::Entry<"layers.*.mlp.experts.down_proj", st::rowwise<"tp">>>>>());
#else
static_assert(mp::validate<Good, mp::DeviceMesh<mp::Axis<"tp", 8>>, mp::plan_cat_t<parts::tp_ends<"tp">, parts::replicated_layer_norms, parts::tp_gqa<"tp">, parts::tp_qk_norms<"tp">, parts::replicated_router<>, mp::Plan<mp::Entry<"layers.*.mlp.experts.gate_up_proj", st::packed_colwise<"tp">>, mp::Entry<"layers.*.mlp.experts.down_proj", st::rowwise<"tp">>>>>());
#endif
