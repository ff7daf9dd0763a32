// Rule config_dense_layers: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[config_dense_layers\]: first_k_dense_replace \(-1\) must be 0 or more \(the number of leading dense layers\)
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
namespace st = mp::styles;
using namespace mp::plans;
struct Bad {
  static constexpr mp::ModelSpec spec{.family = mp::Family::deepseek_v3, .hidden_size = 64, .num_hidden_layers = 3, .num_attention_heads = 8, .num_key_value_heads = 8, .head_dim = 0, .vocab_size = 256, .intermediate_size = 128, .num_experts = 16, .num_experts_per_tok = 4, .moe_intermediate_size = 32, .norm_topk_prob = true, .first_k_dense_replace = -1, .n_shared_experts = 1, .routed_scaling_factor = 2.5, .n_group = 4, .topk_group = 2, .q_lora_rank = 32, .kv_lora_rank = 16, .qk_nope_head_dim = 8, .qk_rope_head_dim = 8, .v_head_dim = 8};
};
struct Good {
  static constexpr mp::ModelSpec spec{.family = mp::Family::deepseek_v3, .hidden_size = 64, .num_hidden_layers = 3, .num_attention_heads = 8, .num_key_value_heads = 8, .head_dim = 0, .vocab_size = 256, .intermediate_size = 128, .num_experts = 16, .num_experts_per_tok = 4, .moe_intermediate_size = 32, .norm_topk_prob = true, .first_k_dense_replace = 4, .n_shared_experts = 1, .routed_scaling_factor = 2.5, .n_group = 4, .topk_group = 2, .q_lora_rank = 32, .kv_lora_rank = 16, .qk_nope_head_dim = 8, .qk_rope_head_dim = 8, .v_head_dim = 8};
};

#ifdef MESHPLAN_FAIL
static_assert(mp::validate<Bad, mp::DeviceMesh<mp::Axis<"ep", 8>>, deepseek_v3::ep<>>());
#else
// 4 of 3 layers: every layer dense, as transformers reads such a config.
static_assert(mp::validate<Good, mp::DeviceMesh<mp::Axis<"ep", 8>>, deepseek_v3::ep<>>());
#endif
