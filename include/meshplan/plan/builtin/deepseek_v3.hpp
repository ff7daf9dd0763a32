#pragma once
// Built-in plans for DeepSeek-V3: multi-head latent attention, dense MLPs in the first
// first_k_dense_replace layers, and in the others a routed MoE (sigmoid router with a
// correction bias) plus shared experts. The same six plans as qwen3_moe.hpp; under EP the
// dense and shared MLPs stay whole on the TP axis (they then see token shards), otherwise
// they are split like the experts.
//
// The plans fit every config transformers accepts for the family, so entries for parts a
// config may lack are optional: the dense layers (first_k_dense_replace 0), the MoE layers
// (first_k_dense_replace >= num_hidden_layers), the shared experts (n_shared_experts 0) and
// the low-rank query projections (q_lora_rank null: a plain q_proj; see parts.hpp).

#include "meshplan/core/detail/public_begin.hpp"

#include "meshplan/plan/builtin/parts.hpp"

namespace meshplan::plans::deepseek_v3 {

using namespace meshplan::plans::parts;

inline constexpr bool optional = true;

template <fixed_string TP = "tp">
struct tp : plan_cat_t<tp_ends<TP>, replicated_layer_norms, tp_mla<TP>, tp_mlp<"layers.*.mlp", TP, optional>,
                      replicated_router<optional>, tp_experts<TP, optional>,
                      tp_mlp<"layers.*.mlp.shared_experts", TP, optional>> {};

template <fixed_string TP = "tp">
struct tp_sp : plan_cat_t<sp_ends<TP>, sp_layer_norms<TP>, sp_mla<TP>, sp_mlp_scope<TP>,
                         sp_mlp<"layers.*.mlp", TP, optional>, replicated_router<optional>, sp_experts<TP, optional>,
                         sp_mlp<"layers.*.mlp.shared_experts", TP, optional>> {};

template <fixed_string EP = "ep">
struct ep : plan_cat_t<replicated_ends, replicated_layer_norms, replicated_mla, replicated_mlp<"layers.*.mlp", optional>,
                      ep_router<EP, optional>, ep_experts<EP, optional>,
                      replicated_mlp<"layers.*.mlp.shared_experts", optional>> {};

template <fixed_string EP = "ep", fixed_string TP = "tp">
struct ep_tp : plan_cat_t<tp_ends<TP>, replicated_layer_norms, tp_mla<TP>, token_split_mlp_scope<TP>,
                         replicated_mlp<"layers.*.mlp", optional>, ep_router<EP, optional>, ep_experts<EP, optional>,
                         replicated_mlp<"layers.*.mlp.shared_experts", optional>> {};

template <fixed_string EP = "ep", fixed_string TP = "tp">
struct ep_sp : plan_cat_t<sp_ends<TP>, sp_layer_norms<TP>, sp_mla<TP>, replicated_mlp<"layers.*.mlp", optional>,
                         ep_router<EP, optional>, ep_experts<EP, optional>,
                         replicated_mlp<"layers.*.mlp.shared_experts", optional>> {};

template <fixed_string EP = "ep", fixed_string TP = "tp">
struct etp : plan_cat_t<tp_ends<TP>, replicated_layer_norms, tp_mla<TP>, tp_mlp<"layers.*.mlp", TP, optional>,
                       ep_router<EP, optional>, ep_etp_experts<EP, TP, optional>,
                       tp_mlp<"layers.*.mlp.shared_experts", TP, optional>> {};

}  // namespace meshplan::plans::deepseek_v3

#include "meshplan/core/detail/public_end.hpp"
