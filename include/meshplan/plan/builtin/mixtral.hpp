#pragma once
// Built-in plans for Mixtral (grouped-query attention, MoE in every layer); the same
// shapes as qwen3_moe.hpp without the per-head q/k norms.

#include "meshplan/core/detail/public_begin.hpp"

#include "meshplan/plan/builtin/parts.hpp"

namespace meshplan::plans::mixtral {

using namespace meshplan::plans::parts;

template <fixed_string TP = "tp">
struct tp : plan_cat_t<tp_ends<TP>, replicated_layer_norms, tp_gqa<TP>, replicated_router<>, tp_experts<TP>> {};

template <fixed_string TP = "tp">
struct tp_sp : plan_cat_t<sp_ends<TP>, sp_layer_norms<TP>, sp_gqa<TP>, sp_mlp_scope<TP>, replicated_router<>,
                         sp_experts<TP>> {};

template <fixed_string EP = "ep">
struct ep : plan_cat_t<replicated_ends, replicated_layer_norms, replicated_gqa, ep_router<EP>, ep_experts<EP>> {};

template <fixed_string EP = "ep", fixed_string TP = "tp">
struct ep_tp : plan_cat_t<tp_ends<TP>, replicated_layer_norms, tp_gqa<TP>, token_split_mlp_scope<TP>, ep_router<EP>,
                         ep_experts<EP>> {};

template <fixed_string EP = "ep", fixed_string TP = "tp">
struct ep_sp : plan_cat_t<sp_ends<TP>, sp_layer_norms<TP>, sp_gqa<TP>, ep_router<EP>, ep_experts<EP>> {};

template <fixed_string EP = "ep", fixed_string TP = "tp">
struct etp : plan_cat_t<tp_ends<TP>, replicated_layer_norms, tp_gqa<TP>, ep_router<EP>, ep_etp_experts<EP, TP>> {};

}  // namespace meshplan::plans::mixtral

#include "meshplan/core/detail/public_end.hpp"
