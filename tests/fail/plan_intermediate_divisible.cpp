// Rule intermediate_divisible: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[intermediate_divisible\]: intermediate_size \(100\) is not divisible by 8 \(mesh axis 'tp'\), which shards dim 0 of 'layers\.\*\.mlp\.gate_proj\.weight'
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
namespace st = mp::styles;
using namespace mp::plans;
struct Bad {
  static constexpr mp::ModelSpec spec{.family = mp::Family::qwen3, .hidden_size = 64, .num_hidden_layers = 2, .num_attention_heads = 8, .num_key_value_heads = 8, .head_dim = 8, .vocab_size = 256, .intermediate_size = 100, .num_experts = 0, .num_experts_per_tok = 0, .moe_intermediate_size = 0, .norm_topk_prob = false};
};
struct Good {
  static constexpr mp::ModelSpec spec{.family = mp::Family::qwen3, .hidden_size = 64, .num_hidden_layers = 2, .num_attention_heads = 8, .num_key_value_heads = 8, .head_dim = 8, .vocab_size = 256, .intermediate_size = 104, .num_experts = 0, .num_experts_per_tok = 0, .moe_intermediate_size = 0, .norm_topk_prob = false};
};

#ifdef MESHPLAN_FAIL
static_assert(mp::validate<Bad, mp::DeviceMesh<mp::Axis<"tp", 8>>, qwen3::tp<>>());
#else
static_assert(mp::validate<Good, mp::DeviceMesh<mp::Axis<"tp", 8>>, qwen3::tp<>>());
#endif
