#pragma once
// Built-in plans for Qwen3-MoE (grouped-query attention with per-head q/k norms, MoE in
// every layer).
//
//   tp<TP>          attention, experts (intermediate dim) and vocab split over TP
//   tp_sp<TP>       tp with sequence parallelism: norms on sequence shards, gather on entry
//                   and reduce-scatter on exit of attention and MLP
//   ep<EP>          experts over EP with all-to-all-v dispatch; the rest data parallel
//   ep_tp<EP, TP>   attention TP on TP, experts EP on EP; MoE tokens split over TP
//   ep_sp<EP, TP>   ep_tp with sequence parallelism: the MoE block runs on sequence shards,
//                   with no TP communication at all
//   etp<EP, TP>     expert tensor parallelism: experts over EP, their intermediate dim
//                   over TP, attention TP on TP

#include "meshplan/core/detail/public_begin.hpp"

#include "meshplan/plan/builtin/parts.hpp"

namespace meshplan::plans::qwen3_moe {

using namespace meshplan::plans::parts;

template <fixed_string TP = "tp">
struct tp : plan_cat_t<tp_ends<TP>, replicated_layer_norms, tp_gqa<TP>, tp_qk_norms<TP>, replicated_router<>,
                      tp_experts<TP>> {};

template <fixed_string TP = "tp">
struct tp_sp : plan_cat_t<sp_ends<TP>, sp_layer_norms<TP>, sp_gqa<TP>, tp_qk_norms<TP>, sp_mlp_scope<TP>,
                         replicated_router<>, sp_experts<TP>> {};

template <fixed_string EP = "ep">
struct ep : plan_cat_t<replicated_ends, replicated_layer_norms, replicated_gqa, replicated_qk_norms, ep_router<EP>,
                      ep_experts<EP>> {};

template <fixed_string EP = "ep", fixed_string TP = "tp">
struct ep_tp : plan_cat_t<tp_ends<TP>, replicated_layer_norms, tp_gqa<TP>, tp_qk_norms<TP>, token_split_mlp_scope<TP>,
                         ep_router<EP>, ep_experts<EP>> {};

template <fixed_string EP = "ep", fixed_string TP = "tp">
struct ep_sp : plan_cat_t<sp_ends<TP>, sp_layer_norms<TP>, sp_gqa<TP>, tp_qk_norms<TP>, ep_router<EP>, ep_experts<EP>> {};

template <fixed_string EP = "ep", fixed_string TP = "tp">
struct etp : plan_cat_t<tp_ends<TP>, replicated_layer_norms, tp_gqa<TP>, tp_qk_norms<TP>, ep_router<EP>,
                       ep_etp_experts<EP, TP>> {};

}  // namespace meshplan::plans::qwen3_moe

#include "meshplan/core/detail/public_end.hpp"
