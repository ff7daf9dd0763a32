#pragma once
// The rules a model config must follow by itself, before any plan: the same functions
// check a preset at compile time and a config.json at run time.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/model/model_spec.hpp"

namespace meshplan::model_rules {

constexpr Message positive(std::string_view field, index_t value) noexcept {
  if (value > 0) return {};
  return Message::rule("config_positive") << "the model config needs " << field << " > 0, but it is " << value;
}

constexpr Message heads_grouped(const ModelSpec& m) noexcept {
  if (m.num_key_value_heads > 0 && m.num_attention_heads % m.num_key_value_heads == 0) return {};
  return Message::rule("config_heads_grouped")
         << "num_attention_heads (" << m.num_attention_heads << ") must be a multiple of num_key_value_heads ("
         << m.num_key_value_heads << ")";
}

constexpr Message top_k_fits(const ModelSpec& m) noexcept {
  if (!m.is_moe()) return {};
  if (m.num_experts_per_tok >= 1 && m.num_experts_per_tok <= m.num_experts) return {};
  return Message::rule("config_top_k")
         << "num_experts_per_tok (" << m.num_experts_per_tok << ") must be between 1 and the number of experts ("
         << m.num_experts << ")";
}

/// DeepSeek-V3's group-limited routing: n_group divides the experts, each group has at
/// least the 2 experts its group score sums, topk_group <= n_group, and the kept groups
/// hold at least top-k experts.
constexpr Message groups_consistent(const ModelSpec& m) noexcept {
  if (m.router() != RouterKind::sigmoid_group_topk) return {};
  auto rule = [] { return Message::rule("config_groups"); };
  if (m.n_group < 1 || m.num_experts % m.n_group != 0)
    return rule() << "n_group (" << m.n_group << ") must divide the number of routed experts (" << m.num_experts
                  << ")";
  index_t per_group = m.num_experts / m.n_group;
  if (per_group < 2)
    return rule() << "each of the " << m.n_group << " expert groups needs at least 2 experts (its score sums the top 2), "
                  << "but has " << per_group;
  if (m.topk_group < 1 || m.topk_group > m.n_group)
    return rule() << "topk_group (" << m.topk_group << ") must be between 1 and n_group (" << m.n_group << ")";
  if (m.topk_group * per_group < m.num_experts_per_tok)
    return rule() << "the " << m.topk_group << " kept groups hold " << m.topk_group * per_group
                  << " experts, fewer than num_experts_per_tok (" << m.num_experts_per_tok << ")";
  return {};
}

/// As in transformers, a first_k_dense_replace of num_hidden_layers or more makes every
/// layer dense (transformers' default is 3, whatever the layer count).
constexpr Message dense_layers_fit(const ModelSpec& m) noexcept {
  if (m.first_k_dense_replace >= 0) return {};
  return Message::rule("config_dense_layers") << "first_k_dense_replace (" << m.first_k_dense_replace
                                              << ") must be 0 or more (the number of leading dense layers)";
}

/// Every rule of a config; the first broken one, or ok.
constexpr Message check_config(const ModelSpec& m) noexcept {
  Message checks[] = {
      positive("hidden_size", m.hidden_size),
      positive("num_hidden_layers", m.num_hidden_layers),
      positive("num_attention_heads", m.num_attention_heads),
      positive("num_key_value_heads", m.num_key_value_heads),
      positive("vocab_size", m.vocab_size),
      m.uses_mla() ? positive("qk_nope_head_dim", m.qk_nope_head_dim) : positive("head_dim", m.head_dim),
      m.uses_mla() ? positive("kv_lora_rank", m.kv_lora_rank) : Message{},
      m.uses_mla() ? positive("v_head_dim", m.v_head_dim) : Message{},
      m.dense_layers() > 0 ? positive("intermediate_size", m.intermediate_size) : Message{},
      m.is_moe() ? positive("moe_intermediate_size", m.moe_intermediate_size) : Message{},
      heads_grouped(m),
      top_k_fits(m),
      groups_consistent(m),
      dense_layers_fit(m),
  };
  for (const Message& c : checks)
    if (!c.ok()) return c;
  return {};
}

/// A block that runs experts (`user`) is given a model with experts.
constexpr Message has_experts(const ModelSpec& m, std::string_view user) noexcept {
  if (m.is_moe()) return {};
  return Message::rule("model_has_experts") << user << " needs a model with experts; this " << to_string(m.family)
                                            << " config has none";
}

/// A template argument that must name a model is a model type (a preset, or a type with a
/// `static constexpr ModelSpec spec`); `type` is its spelling.
constexpr Message is_model_type(bool is_model, std::string_view user, std::string_view type) noexcept {
  if (is_model) return {};
  return Message::rule("model_is_model_type") << user << "'s Model is '" << type
                                              << "', which is neither a model type (a preset such as "
                                                 "presets::Qwen3_30B_A3B) nor RuntimeModel";
}

}  // namespace meshplan::model_rules
