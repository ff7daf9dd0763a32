#pragma once
// Built-in plans for dense Qwen3: tensor parallelism, with or without sequence parallelism.

#include "meshplan/core/detail/public_begin.hpp"

#include "meshplan/plan/builtin/parts.hpp"

namespace meshplan::plans::qwen3 {

using namespace meshplan::plans::parts;

template <fixed_string TP = "tp">
struct tp : plan_cat_t<tp_ends<TP>, replicated_layer_norms, tp_gqa<TP>, tp_qk_norms<TP>, tp_mlp<"layers.*.mlp", TP>> {};

template <fixed_string TP = "tp">
struct tp_sp : plan_cat_t<sp_ends<TP>, sp_layer_norms<TP>, sp_gqa<TP>, tp_qk_norms<TP>, sp_mlp_scope<TP>,
                         sp_mlp<"layers.*.mlp", TP>> {};

}  // namespace meshplan::plans::qwen3

#include "meshplan/core/detail/public_end.hpp"
