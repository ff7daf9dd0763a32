#pragma once
// Model presets with the published config.json values, and tiny configs for tests.
//
//   using Model = meshplan::models::Qwen3_30B_A3B;
//   Model::spec.num_experts        // 128
//
// Values from the models' config.json on the Hugging Face hub (Qwen/Qwen3-30B-A3B,
// Qwen/Qwen3-235B-A22B, mistralai/Mixtral-8x7B-v0.1, mistralai/Mixtral-8x22B-v0.1,
// deepseek-ai/DeepSeek-V3). Mixtral's experts are its intermediate_size wide; meshplan
// keeps expert width in moe_intermediate_size for every family.

#include "meshplan/core/detail/public_begin.hpp"

#include <array>
#include <optional>
#include <string_view>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/model/detail/model_rules.hpp"
#include "meshplan/model/model_spec.hpp"

namespace meshplan::models {

namespace detail {
// Each preset checks itself where it is defined.
template <const ModelSpec& S>
inline constexpr bool config_checked = rule_check<model_rules::check_config(S)>::passed;
}  // namespace detail

#define MESHPLAN_MODEL_PRESET(Type, Name, ...)                         \
  struct Type {                                                         \
    static constexpr std::string_view name = Name;                      \
    static constexpr ModelSpec spec = __VA_ARGS__;                      \
    static_assert(detail::config_checked<spec>);                       \
  }

MESHPLAN_MODEL_PRESET(Qwen3_30B_A3B, "Qwen3-30B-A3B",
                      {.family = Family::qwen3_moe, .hidden_size = 2048, .num_hidden_layers = 48,
                       .num_attention_heads = 32, .num_key_value_heads = 4, .head_dim = 128, .vocab_size = 151936,
                       .intermediate_size = 6144, .num_experts = 128, .num_experts_per_tok = 8,
                       .moe_intermediate_size = 768, .norm_topk_prob = true});

MESHPLAN_MODEL_PRESET(Qwen3_235B_A22B, "Qwen3-235B-A22B",
                      {.family = Family::qwen3_moe, .hidden_size = 4096, .num_hidden_layers = 94,
                       .num_attention_heads = 64, .num_key_value_heads = 4, .head_dim = 128, .vocab_size = 151936,
                       .intermediate_size = 12288, .num_experts = 128, .num_experts_per_tok = 8,
                       .moe_intermediate_size = 1536, .norm_topk_prob = true});

MESHPLAN_MODEL_PRESET(Mixtral_8x7B, "Mixtral-8x7B",
                      {.family = Family::mixtral, .hidden_size = 4096, .num_hidden_layers = 32,
                       .num_attention_heads = 32, .num_key_value_heads = 8, .head_dim = 128, .vocab_size = 32000,
                       .intermediate_size = 14336, .num_experts = 8, .num_experts_per_tok = 2,
                       .moe_intermediate_size = 14336, .norm_topk_prob = true});

MESHPLAN_MODEL_PRESET(Mixtral_8x22B, "Mixtral-8x22B",
                      {.family = Family::mixtral, .hidden_size = 6144, .num_hidden_layers = 56,
                       .num_attention_heads = 48, .num_key_value_heads = 8, .head_dim = 128, .vocab_size = 32000,
                       .intermediate_size = 16384, .num_experts = 8, .num_experts_per_tok = 2,
                       .moe_intermediate_size = 16384, .norm_topk_prob = true});

MESHPLAN_MODEL_PRESET(DeepSeek_V3, "DeepSeek-V3",
                      {.family = Family::deepseek_v3, .hidden_size = 7168, .num_hidden_layers = 61,
                       .num_attention_heads = 128, .num_key_value_heads = 128, .vocab_size = 129280,
                       .intermediate_size = 18432, .num_experts = 256, .num_experts_per_tok = 8,
                       .moe_intermediate_size = 2048, .norm_topk_prob = true, .first_k_dense_replace = 3,
                       .n_shared_experts = 1, .routed_scaling_factor = 2.5, .n_group = 8, .topk_group = 4,
                       .q_lora_rank = 1536, .kv_lora_rank = 512, .qk_nope_head_dim = 128, .qk_rope_head_dim = 64,
                       .v_head_dim = 128});

MESHPLAN_MODEL_PRESET(Qwen3_8B, "Qwen3-8B",
                      {.family = Family::qwen3, .hidden_size = 4096, .num_hidden_layers = 36,
                       .num_attention_heads = 32, .num_key_value_heads = 8, .head_dim = 128, .vocab_size = 151936,
                       .intermediate_size = 12288});

// Tiny configs for tests: every divisibility a plan can ask of them holds for meshes up to
// 8 ranks per axis, and they run in milliseconds on the CPU.
MESHPLAN_MODEL_PRESET(TinyQwen3Moe, "tiny-qwen3-moe",
                      {.family = Family::qwen3_moe, .hidden_size = 64, .num_hidden_layers = 2,
                       .num_attention_heads = 8, .num_key_value_heads = 8, .head_dim = 8, .vocab_size = 256,
                       .intermediate_size = 128, .num_experts = 16, .num_experts_per_tok = 4,
                       .moe_intermediate_size = 32, .norm_topk_prob = true});

MESHPLAN_MODEL_PRESET(TinyMixtral, "tiny-mixtral",
                      {.family = Family::mixtral, .hidden_size = 64, .num_hidden_layers = 2,
                       .num_attention_heads = 8, .num_key_value_heads = 8, .head_dim = 8, .vocab_size = 256,
                       .intermediate_size = 64, .num_experts = 8, .num_experts_per_tok = 2,
                       .moe_intermediate_size = 64, .norm_topk_prob = true});

MESHPLAN_MODEL_PRESET(TinyDeepSeekV3, "tiny-deepseek-v3",
                      {.family = Family::deepseek_v3, .hidden_size = 64, .num_hidden_layers = 3,
                       .num_attention_heads = 8, .num_key_value_heads = 8, .vocab_size = 256,
                       .intermediate_size = 128, .num_experts = 16, .num_experts_per_tok = 4,
                       .moe_intermediate_size = 32, .norm_topk_prob = true, .first_k_dense_replace = 1,
                       .n_shared_experts = 1, .routed_scaling_factor = 2.5, .n_group = 4, .topk_group = 2,
                       .q_lora_rank = 32, .kv_lora_rank = 16, .qk_nope_head_dim = 8, .qk_rope_head_dim = 8,
                       .v_head_dim = 8});

MESHPLAN_MODEL_PRESET(TinyQwen3, "tiny-qwen3",
                      {.family = Family::qwen3, .hidden_size = 64, .num_hidden_layers = 2,
                       .num_attention_heads = 8, .num_key_value_heads = 8, .head_dim = 8, .vocab_size = 256,
                       .intermediate_size = 128});

#undef MESHPLAN_MODEL_PRESET

/// The presets by name, for tools that take `--model`.
struct PresetInfo {
  std::string_view name;
  ModelSpec spec;
};

inline constexpr std::array<PresetInfo, 10> all_presets{{
    {Qwen3_30B_A3B::name, Qwen3_30B_A3B::spec},
    {Qwen3_235B_A22B::name, Qwen3_235B_A22B::spec},
    {Mixtral_8x7B::name, Mixtral_8x7B::spec},
    {Mixtral_8x22B::name, Mixtral_8x22B::spec},
    {DeepSeek_V3::name, DeepSeek_V3::spec},
    {Qwen3_8B::name, Qwen3_8B::spec},
    {TinyQwen3Moe::name, TinyQwen3Moe::spec},
    {TinyMixtral::name, TinyMixtral::spec},
    {TinyDeepSeekV3::name, TinyDeepSeekV3::spec},
    {TinyQwen3::name, TinyQwen3::spec},
}};

/// The preset called `name`; throws RuleViolation listing the presets if there is none.
inline ModelSpec preset(std::string_view name) {
  for (const auto& p : all_presets)
    if (p.name == name) return p.spec;
  Message m = Message::rule("preset_known");
  m << "there is no model preset named '" << name << "'; the presets are";
  for (std::size_t i = 0; i < all_presets.size(); ++i) m << (i ? ", " : " ") << all_presets[i].name;
  throw RuleViolation(m);
}

}  // namespace meshplan::models

#include "meshplan/core/detail/public_end.hpp"
