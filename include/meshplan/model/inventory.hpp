#pragma once
// The parameter inventory of each family: every parameter's transformers-5 name (relative
// to the base model, plus lm_head), its global shape, what kind of tensor it is, and for
// each dim the hyperparameter a shard of it must divide.
//
// Per-layer parameters are named with "layers.*." and carry the number of layers that hold
// them (all layers, or DeepSeek-V3's first_k_dense_replace dense layers, or the MoE layers).
// Fused experts follow transformers 5: gate_up_proj [E, 2I, H] (gate rows first, then up)
// and down_proj [E, H, I].

#include "meshplan/core/detail/public_begin.hpp"

#include <array>
#include <cstddef>
#include <string_view>
#include <vector>

#include "meshplan/core/rules.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/model/model_spec.hpp"

namespace meshplan {

/// What a parameter is; a style places each kind in its own way.
enum class ParamKind : unsigned char {
  embedding,        // [vocab, hidden]
  norm,             // [width]: RMSNorm weight
  head_norm,        // [head_dim]: Qwen3's q_norm / k_norm, applied per head
  linear,           // [out, in]
  linear_bias,      // [out]
  router,           // [experts, hidden]
  router_bias,      // [experts]: DeepSeek-V3's e_score_correction_bias
  experts_gate_up,  // [experts, 2 * intermediate, hidden]
  experts_down,     // [experts, hidden, intermediate]
  lm_head,          // [vocab, hidden]
};

constexpr std::string_view to_string(ParamKind k) noexcept {
  switch (k) {
    case ParamKind::embedding: return "an embedding";
    case ParamKind::norm: return "a norm weight";
    case ParamKind::head_norm: return "a per-head norm weight";
    case ParamKind::linear: return "a linear weight";
    case ParamKind::linear_bias: return "a linear bias";
    case ParamKind::router: return "a router weight";
    case ParamKind::router_bias: return "a router bias";
    case ParamKind::experts_gate_up: return "fused experts' gate_up_proj";
    case ParamKind::experts_down: return "fused experts' down_proj";
    case ParamKind::lm_head: return "the output embedding";
  }
  return "?";
}

/// One dim of a parameter. A dim whose extent is `units * width` of a hyperparameter (heads
/// times head_dim, say) may only be sharded in whole units; `rule` names the rule checked
/// then. `packed` > 1 marks a dim holding that many tensors one after another (gate || up).
struct DimInfo {
  index_t extent = 0;
  std::string_view unit;   // the hyperparameter, e.g. "num_key_value_heads"; empty: any split
  index_t units = 0;
  const RuleInfo* rule = nullptr;  // e.g. kv_heads_divisible
  int packed = 1;
};

struct ParamInfo {
  std::string_view name;
  ParamKind kind;
  std::array<DimInfo, 3> dims{};
  std::size_t rank = 0;
  index_t count = 1;  // how many layers hold it (1 for the model-wide ones)

  constexpr index_t elements() const noexcept {
    index_t n = 1;
    for (std::size_t d = 0; d < rank; ++d) n *= dims[d].extent;
    return n;
  }
  /// The module path: the name without its last component ("layers.*.mlp.experts" for
  /// "layers.*.mlp.experts.gate_up_proj").
  constexpr std::string_view module() const noexcept { return name.substr(0, name.rfind('.')); }
};

namespace detail {
constexpr DimInfo free_dim(index_t extent) noexcept { return {extent, {}, 0, nullptr, 1}; }
constexpr DimInfo unit_dim(index_t extent, std::string_view unit, index_t units, RuleId rule,
                           int packed = 1) noexcept {
  return {extent, unit, units, &rule.info(), packed};
}

struct InventoryBuilder {
  std::vector<ParamInfo> params;
  constexpr void add(std::string_view name, ParamKind kind, index_t count, std::initializer_list<DimInfo> dims) {
    ParamInfo p{name, kind, {}, dims.size(), count};
    std::size_t d = 0;
    for (const DimInfo& dim : dims) p.dims[d++] = dim;
    params.push_back(p);
  }
};

constexpr void add_attention(InventoryBuilder& b, const ModelSpec& m) {
  const index_t L = m.num_hidden_layers, H = m.hidden_size, nh = m.num_attention_heads;
  const auto heads = [&](index_t width) { return unit_dim(nh * width, "num_attention_heads", nh, "heads_divisible"); };
  if (m.uses_mla()) {
    const index_t qk = m.qk_head_dim(), rope = m.qk_rope_head_dim;
    if (m.q_lora_rank > 0) {
      b.add("layers.*.self_attn.q_a_proj.weight", ParamKind::linear, L, {free_dim(m.q_lora_rank), free_dim(H)});
      if (m.attention_bias) b.add("layers.*.self_attn.q_a_proj.bias", ParamKind::linear_bias, L, {free_dim(m.q_lora_rank)});
      b.add("layers.*.self_attn.q_a_layernorm.weight", ParamKind::norm, L, {free_dim(m.q_lora_rank)});
      b.add("layers.*.self_attn.q_b_proj.weight", ParamKind::linear, L, {heads(qk), free_dim(m.q_lora_rank)});
    } else {
      b.add("layers.*.self_attn.q_proj.weight", ParamKind::linear, L, {heads(qk), free_dim(H)});
    }
    b.add("layers.*.self_attn.kv_a_proj_with_mqa.weight", ParamKind::linear, L, {free_dim(m.kv_lora_rank + rope), free_dim(H)});
    if (m.attention_bias)
      b.add("layers.*.self_attn.kv_a_proj_with_mqa.bias", ParamKind::linear_bias, L, {free_dim(m.kv_lora_rank + rope)});
    b.add("layers.*.self_attn.kv_a_layernorm.weight", ParamKind::norm, L, {free_dim(m.kv_lora_rank)});
    b.add("layers.*.self_attn.kv_b_proj.weight", ParamKind::linear, L,
          {heads(m.qk_nope_head_dim + m.v_head_dim), free_dim(m.kv_lora_rank)});
    b.add("layers.*.self_attn.o_proj.weight", ParamKind::linear, L, {free_dim(H), heads(m.v_head_dim)});
    if (m.attention_bias) b.add("layers.*.self_attn.o_proj.bias", ParamKind::linear_bias, L, {free_dim(H)});
    return;
  }
  const index_t hd = m.head_dim, kv = m.num_key_value_heads;
  const DimInfo kv_heads = unit_dim(kv * hd, "num_key_value_heads", kv, "kv_heads_divisible");
  b.add("layers.*.self_attn.q_proj.weight", ParamKind::linear, L, {heads(hd), free_dim(H)});
  if (m.attention_bias) b.add("layers.*.self_attn.q_proj.bias", ParamKind::linear_bias, L, {heads(hd)});
  b.add("layers.*.self_attn.k_proj.weight", ParamKind::linear, L, {kv_heads, free_dim(H)});
  if (m.attention_bias) b.add("layers.*.self_attn.k_proj.bias", ParamKind::linear_bias, L, {kv_heads});
  b.add("layers.*.self_attn.v_proj.weight", ParamKind::linear, L, {kv_heads, free_dim(H)});
  if (m.attention_bias) b.add("layers.*.self_attn.v_proj.bias", ParamKind::linear_bias, L, {kv_heads});
  b.add("layers.*.self_attn.o_proj.weight", ParamKind::linear, L, {free_dim(H), heads(hd)});
  if (m.attention_bias) b.add("layers.*.self_attn.o_proj.bias", ParamKind::linear_bias, L, {free_dim(H)});
  if (m.family == Family::qwen3 || m.family == Family::qwen3_moe) {
    b.add("layers.*.self_attn.q_norm.weight", ParamKind::head_norm, L, {free_dim(hd)});
    b.add("layers.*.self_attn.k_norm.weight", ParamKind::head_norm, L, {free_dim(hd)});
  }
}

/// A gate/up/down MLP of width `width` under `prefix` ("layers.*.mlp." or "...shared_experts.").
constexpr void add_mlp(InventoryBuilder& b, std::string_view gate, std::string_view up, std::string_view down,
                       index_t count, index_t hidden, index_t width, std::string_view unit) {
  const DimInfo inter = unit_dim(width, unit, width, "intermediate_divisible");
  b.add(gate, ParamKind::linear, count, {inter, free_dim(hidden)});
  b.add(up, ParamKind::linear, count, {inter, free_dim(hidden)});
  b.add(down, ParamKind::linear, count, {free_dim(hidden), inter});
}
}  // namespace detail

/// Every parameter of a model of this config, in module order.
constexpr std::vector<ParamInfo> inventory(const ModelSpec& m) {
  using detail::free_dim;
  using detail::unit_dim;
  detail::InventoryBuilder b;
  const index_t L = m.num_hidden_layers, H = m.hidden_size, V = m.vocab_size;
  const DimInfo vocab = unit_dim(V, "vocab_size", V, "vocab_divisible");

  b.add("embed_tokens.weight", ParamKind::embedding, 1, {vocab, free_dim(H)});
  b.add("layers.*.input_layernorm.weight", ParamKind::norm, L, {free_dim(H)});
  detail::add_attention(b, m);
  b.add("layers.*.post_attention_layernorm.weight", ParamKind::norm, L, {free_dim(H)});

  if (m.dense_layers() > 0)
    detail::add_mlp(b, "layers.*.mlp.gate_proj.weight", "layers.*.mlp.up_proj.weight", "layers.*.mlp.down_proj.weight",
                    m.dense_layers(), H, m.intermediate_size, "intermediate_size");
  if (m.moe_layers() > 0) {
    const index_t E = m.num_experts, I = m.moe_intermediate_size, n = m.moe_layers();
    const DimInfo experts = unit_dim(E, "num_experts", E, "experts_divisible");
    b.add("layers.*.mlp.gate.weight", ParamKind::router, n, {free_dim(E), free_dim(H)});
    if (m.router() == RouterKind::sigmoid_group_topk)
      b.add("layers.*.mlp.gate.e_score_correction_bias", ParamKind::router_bias, n, {free_dim(E)});
    b.add("layers.*.mlp.experts.gate_up_proj", ParamKind::experts_gate_up, n,
          {experts, unit_dim(2 * I, "moe_intermediate_size", I, "packed_halves_divisible", 2), free_dim(H)});
    b.add("layers.*.mlp.experts.down_proj", ParamKind::experts_down, n,
          {experts, free_dim(H), unit_dim(I, "moe_intermediate_size", I, "moe_intermediate_divisible")});
    if (m.n_shared_experts > 0)
      detail::add_mlp(b, "layers.*.mlp.shared_experts.gate_proj.weight", "layers.*.mlp.shared_experts.up_proj.weight",
                      "layers.*.mlp.shared_experts.down_proj.weight", n, H, m.shared_intermediate_size(),
                      "moe_intermediate_size * n_shared_experts");
  }
  b.add("norm.weight", ParamKind::norm, 1, {free_dim(H)});
  if (!m.tie_word_embeddings) b.add("lm_head.weight", ParamKind::lm_head, 1, {vocab, free_dim(H)});
  return b.params;
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
