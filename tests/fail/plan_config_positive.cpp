// Rule config_positive: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[config_positive\]: the model config needs vocab_size > 0, but it is 0
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
namespace st = mp::styles;
using namespace mp::plans;
struct Bad {
  static constexpr mp::ModelSpec spec{.family = mp::Family::qwen3_moe, .hidden_size = 64, .num_hidden_layers = 2, .num_attention_heads = 8, .num_key_value_heads = 8, .head_dim = 8, .vocab_size = 0, .intermediate_size = 128, .num_experts = 16, .num_experts_per_tok = 4, .moe_intermediate_size = 32, .norm_topk_prob = true};
};
struct Good {
  static constexpr mp::ModelSpec spec{.family = mp::Family::qwen3_moe, .hidden_size = 64, .num_hidden_layers = 2, .num_attention_heads = 8, .num_key_value_heads = 8, .head_dim = 8, .vocab_size = 1, .intermediate_size = 128, .num_experts = 16, .num_experts_per_tok = 4, .moe_intermediate_size = 32, .norm_topk_prob = true};
};

#ifdef MESHPLAN_FAIL
static_assert(mp::validate<Bad, mp::DeviceMesh<mp::Axis<"ep", 8>>, qwen3_moe::ep<>>());
#else
static_assert(mp::validate<Good, mp::DeviceMesh<mp::Axis<"ep", 8>>, qwen3_moe::ep<>>());
#endif
