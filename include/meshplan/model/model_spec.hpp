#pragma once
// ModelSpec: the hyperparameters of a model, as plain constexpr data.
//
// One struct serves every family (fields a family does not use stay 0). A model type
// carries one as `static constexpr ModelSpec spec` (see presets.hpp); a config.json read at
// run time gives the same struct (io/config_json.hpp), and both are checked by the same
// rules (model_rules.hpp).

#include "meshplan/core/detail/public_begin.hpp"

#include <string_view>

#include "meshplan/core/size.hpp"

namespace meshplan {

enum class Family : unsigned char { qwen3, qwen3_moe, mixtral, deepseek_v3 };

/// transformers' model_type.
constexpr std::string_view to_string(Family f) noexcept {
  switch (f) {
    case Family::qwen3: return "qwen3";
    case Family::qwen3_moe: return "qwen3_moe";
    case Family::mixtral: return "mixtral";
    case Family::deepseek_v3: return "deepseek_v3";
  }
  return "?";
}

/// The router function of a family (docs/execution.md, "The CPU reference", states each).
enum class RouterKind : unsigned char {
  softmax_topk,        // Qwen3-MoE: softmax over all experts, top-k, renormalize if norm_topk_prob
  softmax_topk_renorm, // Mixtral: softmax, top-k, always renormalize
  sigmoid_group_topk,  // DeepSeek-V3: sigmoid + bias, group-limited top-k, scaling
};

struct ModelSpec {
  Family family = Family::qwen3_moe;

  // Transformer.
  index_t hidden_size = 0;
  index_t num_hidden_layers = 0;
  index_t num_attention_heads = 0;
  index_t num_key_value_heads = 0;
  index_t head_dim = 0;
  index_t vocab_size = 0;
  index_t intermediate_size = 0;  // dense MLP (all layers of a dense model, first_k_dense of DeepSeek)
  bool tie_word_embeddings = false;
  bool attention_bias = false;

  // Mixture of experts (0 experts: a dense model).
  index_t num_experts = 0;
  index_t num_experts_per_tok = 0;
  index_t moe_intermediate_size = 0;
  bool norm_topk_prob = false;
  index_t first_k_dense_replace = 0;  // leading layers with a dense MLP
  index_t n_shared_experts = 0;
  double routed_scaling_factor = 1.0;
  index_t n_group = 0;
  index_t topk_group = 0;

  // Multi-head latent attention (DeepSeek-V3); q_lora_rank 0 means a plain q_proj.
  index_t q_lora_rank = 0;
  index_t kv_lora_rank = 0;
  index_t qk_nope_head_dim = 0;
  index_t qk_rope_head_dim = 0;
  index_t v_head_dim = 0;

  // What running the model needs beyond the shapes (config.json; the presets keep
  // transformers' defaults).
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  bool rope_interleave = false;  // DeepSeek-V3: the rotary dims of q and k stored interleaved
  bool rope_scaled = false;      // a rope scaling other than the default (not executed yet)

  constexpr bool is_moe() const noexcept { return num_experts > 0; }
  constexpr bool uses_mla() const noexcept { return family == Family::deepseek_v3; }
  constexpr index_t dense_layers() const noexcept {
    return is_moe() ? (first_k_dense_replace < num_hidden_layers ? first_k_dense_replace : num_hidden_layers)
                    : num_hidden_layers;
  }
  constexpr index_t moe_layers() const noexcept { return num_hidden_layers - dense_layers(); }
  constexpr index_t shared_intermediate_size() const noexcept { return moe_intermediate_size * n_shared_experts; }
  /// Width of the query/key heads: head_dim, or nope + rope for MLA.
  constexpr index_t qk_head_dim() const noexcept {
    return uses_mla() ? qk_nope_head_dim + qk_rope_head_dim : head_dim;
  }
  constexpr index_t value_head_dim() const noexcept { return uses_mla() ? v_head_dim : head_dim; }
  constexpr RouterKind router() const noexcept {
    switch (family) {
      case Family::mixtral: return RouterKind::softmax_topk_renorm;
      case Family::deepseek_v3: return RouterKind::sigmoid_group_topk;
      default: return RouterKind::softmax_topk;
    }
  }
};

/// A model type: any type with `static constexpr ModelSpec spec`.
template <class M>
concept ModelType = requires {
  { M::spec } -> std::convertible_to<ModelSpec>;
};

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
