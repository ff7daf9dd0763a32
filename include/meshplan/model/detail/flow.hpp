#pragma once
// The activation flow of each family: which activation every module reads and writes.
//
// The flow is a list of steps in execution order. A step reads one named activation (a
// "slot") and writes another: "residual" is the residual stream, "attn_x" the input the
// attention projections see, "heads" the per-head activations, and so on. A step is a
// parameter's module (its placement on an axis decides what it accepts and produces), the
// entry or exit of a module scope ("layers.*.self_attn", "layers.*.mlp", "lm_head", where
// prepare-input/output hooks act), or the loss. Validation walks this list once per mesh
// axis (plan/activation_flow.hpp); every layer kind is visited once.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <string_view>
#include <vector>

#include "meshplan/model/model_spec.hpp"

namespace meshplan {

enum class FlowStepKind : unsigned char {
  param,        // a module with parameters; `name` is its primary parameter
  scope_enter,  // entering module `name`: prepare-input hooks apply
  scope_exit,   // leaving module `name`: prepare-output hooks apply
  loss,         // the loss on the logits
};

/// Where a step sits: outside the layers (embedding, final norm, head, loss), or in a
/// dense or an MoE layer (each visited once for all layers of its kind).
enum class FlowSection : unsigned char { ends, dense_layer, moe_layer };

struct FlowStep {
  FlowStepKind kind;
  std::string_view name;
  std::string_view in;   // the slot read
  std::string_view out;  // the slot written; empty: none (the router's scores stay inside)
  /// The module works within each head (q_norm, k_norm), so heads sharded on the hidden
  /// dim are fine for it without a placement of its own.
  bool head_local = false;
  FlowSection section = FlowSection::ends;
};

/// The slot holding the input token ids.
inline constexpr std::string_view input_slot = "input_ids";
/// The output embedding's parameter, the flow's name for the head step.
inline constexpr std::string_view output_embedding_param = "lm_head.weight";

namespace detail {
struct FlowBuilder {
  std::vector<FlowStep> steps;
  FlowSection section = FlowSection::ends;
  constexpr void param(std::string_view name, std::string_view in, std::string_view out, bool head_local = false) {
    steps.push_back({FlowStepKind::param, name, in, out, head_local, section});
  }
  constexpr void scope(std::string_view module, std::string_view in, std::string_view inner_in,
                       std::string_view inner_out, std::string_view out, auto&& body) {
    steps.push_back({FlowStepKind::scope_enter, module, in, inner_in, false, section});
    body();
    steps.push_back({FlowStepKind::scope_exit, module, inner_out, out, false, section});
  }
};

constexpr void attention_flow(FlowBuilder& f, const ModelSpec& m) {
  f.scope("layers.*.self_attn", "attn_in", "attn_x", "attn_out", "residual", [&] {
    if (m.uses_mla()) {
      if (m.q_lora_rank > 0) {
        f.param("layers.*.self_attn.q_a_proj.weight", "attn_x", "q_latent");
        f.param("layers.*.self_attn.q_a_layernorm.weight", "q_latent", "q_latent_normed");
        f.param("layers.*.self_attn.q_b_proj.weight", "q_latent_normed", "heads");
      } else {
        f.param("layers.*.self_attn.q_proj.weight", "attn_x", "heads");
      }
      f.param("layers.*.self_attn.kv_a_proj_with_mqa.weight", "attn_x", "kv_latent");
      f.param("layers.*.self_attn.kv_a_layernorm.weight", "kv_latent", "kv_latent_normed");
      f.param("layers.*.self_attn.kv_b_proj.weight", "kv_latent_normed", "heads");
    } else {
      f.param("layers.*.self_attn.q_proj.weight", "attn_x", "heads");
      f.param("layers.*.self_attn.k_proj.weight", "attn_x", "heads");
      f.param("layers.*.self_attn.v_proj.weight", "attn_x", "heads");
      if (m.family == Family::qwen3 || m.family == Family::qwen3_moe) {
        f.param("layers.*.self_attn.q_norm.weight", "heads", "heads", true);
        f.param("layers.*.self_attn.k_norm.weight", "heads", "heads", true);
      }
    }
    f.param("layers.*.self_attn.o_proj.weight", "heads", "attn_out");
  });
}

constexpr void dense_mlp_flow(FlowBuilder& f, std::string_view gate, std::string_view up, std::string_view down,
                              std::string_view hidden_slot) {
  f.param(gate, "mlp_x", hidden_slot);
  f.param(up, "mlp_x", hidden_slot);
  f.param(down, hidden_slot, "mlp_out");
}

constexpr void layer_flow(FlowBuilder& f, const ModelSpec& m, bool moe) {
  f.section = moe ? FlowSection::moe_layer : FlowSection::dense_layer;
  f.param("layers.*.input_layernorm.weight", "residual", "attn_in");
  attention_flow(f, m);
  f.param("layers.*.post_attention_layernorm.weight", "residual", "mlp_in");
  f.scope("layers.*.mlp", "mlp_in", "mlp_x", "mlp_out", "residual", [&] {
    if (!moe) {
      dense_mlp_flow(f, "layers.*.mlp.gate_proj.weight", "layers.*.mlp.up_proj.weight", "layers.*.mlp.down_proj.weight",
                     "mlp_hidden");
      return;
    }
    f.param("layers.*.mlp.gate.weight", "mlp_x", "");
    f.param("layers.*.mlp.experts.gate_up_proj", "mlp_x", "expert_hidden");
    f.param("layers.*.mlp.experts.down_proj", "expert_hidden", "mlp_out");
    if (m.n_shared_experts > 0)
      dense_mlp_flow(f, "layers.*.mlp.shared_experts.gate_proj.weight", "layers.*.mlp.shared_experts.up_proj.weight",
                     "layers.*.mlp.shared_experts.down_proj.weight", "shared_hidden");
  });
}
}  // namespace detail

/// The flow of a model of this config: embedding, one layer of each kind, final norm,
/// output embedding and loss.
constexpr std::vector<FlowStep> activation_flow(const ModelSpec& m) {
  detail::FlowBuilder f;
  f.param("embed_tokens.weight", input_slot, "residual");
  if (m.dense_layers() > 0) detail::layer_flow(f, m, false);
  if (m.moe_layers() > 0) detail::layer_flow(f, m, true);
  f.section = FlowSection::ends;
  f.param("norm.weight", "residual", "final");
  f.scope("lm_head", "final", "head_x", "head_out", "logits", [&] {
    // The head module; with tie_word_embeddings its weight is the input embedding's
    // (plan/detail/activation_check.hpp: the lm_head entry still decides what the module does).
    f.param(output_embedding_param, "head_x", "head_out");
  });
  f.steps.push_back({FlowStepKind::loss, "loss", "logits", "", false, FlowSection::ends});
  return f.steps;
}

}  // namespace meshplan
