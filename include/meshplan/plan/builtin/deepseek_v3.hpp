#pragma once
// Built-in plans for DeepSeek-V3: multi-head latent attention, dense MLPs in the first
// first_k_dense_replace layers, and in the others a routed MoE (sigmoid router with a
// correction bias) plus shared experts. The same six plans as qwen3_moe.hpp; under EP the
// dense and shared MLPs stay whole on the TP axis (they then see token shards), otherwise
// they are split like the experts. The dense-layer entries are optional: a config may have
// no dense layers (first_k_dense_replace 0).

#include "meshplan/plan/builtin/parts.hpp"

namespace meshplan::plans::deepseek_v3 {

using namespace meshplan::plans::parts;

template <fixed_string TP = "tp">
struct tp : plan_cat_t<tp_ends<TP>, replicated_layer_norms, tp_mla<TP>, tp_mlp<"layers.*.mlp", TP, true>, replicated_router,
                      tp_experts<TP>, tp_mlp<"layers.*.mlp.shared_experts", TP>> {};

template <fixed_string TP = "tp">
struct tp_sp : plan_cat_t<sp_ends<TP>, sp_layer_norms<TP>, sp_mla<TP>, sp_mlp_scope<TP>, sp_mlp<"layers.*.mlp", TP, true>,
                         replicated_router, sp_experts<TP>, sp_mlp<"layers.*.mlp.shared_experts", TP>> {};

template <fixed_string EP = "ep">
struct ep : plan_cat_t<replicated_ends, replicated_layer_norms, replicated_mla, replicated_mlp<"layers.*.mlp", true>,
                      ep_router<EP>, ep_experts<EP>, replicated_mlp<"layers.*.mlp.shared_experts">> {};

template <fixed_string EP = "ep", fixed_string TP = "tp">
struct ep_tp : plan_cat_t<tp_ends<TP>, replicated_layer_norms, tp_mla<TP>, token_split_mlp_scope<TP>,
                         replicated_mlp<"layers.*.mlp", true>, ep_router<EP>, ep_experts<EP>,
                         replicated_mlp<"layers.*.mlp.shared_experts">> {};

template <fixed_string EP = "ep", fixed_string TP = "tp">
struct ep_sp : plan_cat_t<sp_ends<TP>, sp_layer_norms<TP>, sp_mla<TP>, replicated_mlp<"layers.*.mlp", true>, ep_router<EP>,
                         ep_experts<EP>, replicated_mlp<"layers.*.mlp.shared_experts">> {};

template <fixed_string EP = "ep", fixed_string TP = "tp">
struct etp : plan_cat_t<tp_ends<TP>, replicated_layer_norms, tp_mla<TP>, tp_mlp<"layers.*.mlp", TP, true>, ep_router<EP>,
                       ep_etp_experts<EP, TP>, tp_mlp<"layers.*.mlp.shared_experts", TP>> {};

}  // namespace meshplan::plans::deepseek_v3
