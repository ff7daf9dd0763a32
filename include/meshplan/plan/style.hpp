#pragma once
// Parallel styles: how one module is split along one named mesh axis.
//
// A style names its axis (`colwise<"tp">`); what it does there is its entry in the style
// table (style_table.hpp): the placement of each parameter it covers on that axis, the
// placement of the activations the module reads and writes there, hence the collectives it
// inserts. Styles are empty tag types; StyleSpec is the same information as constexpr data.

#include <string_view>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/fixed_string.hpp"
#include "meshplan/plan/style_table.hpp"

namespace meshplan {

struct StyleSpec {
  StyleKind kind = StyleKind::replicate;
  std::string_view axis;   // empty for replicate
  Act from = Act::replicate;  // hooks: the placement converted from ...
  Act to = Act::replicate;    // ... and to
};

/// "colwise on 'tp'", "prepare_input Shard(seq) -> Replicate on 'tp'", "replicate".
constexpr Message& operator<<(Message& m, const StyleSpec& s) noexcept {
  m << to_string(s.kind);
  if (is_hook(s.kind)) m << " " << to_string(s.from) << " -> " << to_string(s.to);
  if (!s.axis.empty()) m << " on '" << s.axis << "'";
  return m;
}

namespace styles {

template <StyleKind K, fixed_string Axis>
struct on_axis {
  static constexpr StyleSpec spec{K, Axis.view(), Act::replicate, Act::replicate};
};

struct replicate {
  static constexpr StyleSpec spec{StyleKind::replicate, {}, Act::replicate, Act::replicate};
};
template <fixed_string Axis = "tp">
struct colwise : on_axis<StyleKind::colwise, Axis> {};
template <fixed_string Axis = "tp">
struct colwise_gather_output : on_axis<StyleKind::colwise_gather_output, Axis> {};
template <fixed_string Axis = "tp">
struct rowwise : on_axis<StyleKind::rowwise, Axis> {};
template <fixed_string Axis = "tp">
struct rowwise_reduce_scatter : on_axis<StyleKind::rowwise_reduce_scatter, Axis> {};
template <fixed_string Axis = "tp">
struct packed_colwise : on_axis<StyleKind::packed_colwise, Axis> {};
template <fixed_string Axis = "tp">
struct vocab_parallel : on_axis<StyleKind::vocab_parallel, Axis> {};
template <fixed_string Axis = "tp">
struct vocab_parallel_reduce_scatter : on_axis<StyleKind::vocab_parallel_reduce_scatter, Axis> {};
template <fixed_string Axis = "tp">
struct sequence_parallel : on_axis<StyleKind::sequence_parallel, Axis> {};
template <fixed_string Axis = "tp">
struct replicated_with_grad_allreduce : on_axis<StyleKind::replicated_with_grad_allreduce, Axis> {};
template <fixed_string Axis = "ep">
struct moe_experts : on_axis<StyleKind::moe_experts, Axis> {};
template <fixed_string Axis = "tp">
struct expert_tp : on_axis<StyleKind::expert_tp, Axis> {};
template <fixed_string Axis = "tp">
struct expert_tp_reduce_scatter : on_axis<StyleKind::expert_tp_reduce_scatter, Axis> {};
template <fixed_string Axis = "ep">
struct router : on_axis<StyleKind::router, Axis> {};
template <fixed_string Axis = "tp">
struct loss_parallel : on_axis<StyleKind::loss_parallel, Axis> {};

/// Module hooks (transformers' PrepareModuleInput / PrepareModuleOutput).
// The named forms below are classes rather than alias templates: nvcc's host code
// generation cannot spell alias templates that forward string template arguments.
template <fixed_string Axis, Act From, Act To>
struct prepare_input {
  static constexpr StyleSpec spec{StyleKind::prepare_input, Axis.view(), From, To};
};
template <fixed_string Axis, Act From, Act To>
struct prepare_output {
  static constexpr StyleSpec spec{StyleKind::prepare_output, Axis.view(), From, To};
};
/// All-gather a sequence-sharded input (entering attention or an MLP under SP).
template <fixed_string Axis = "tp">
struct gather_input : prepare_input<Axis, Act::shard_seq, Act::replicate> {};
/// Split a replicated input by tokens (each rank then routes its share).
template <fixed_string Axis = "tp">
struct split_input : prepare_input<Axis, Act::replicate, Act::shard_seq> {};
template <fixed_string Axis = "tp">
struct gather_output : prepare_output<Axis, Act::shard_seq, Act::replicate> {};
template <fixed_string Axis = "tp">
struct split_output : prepare_output<Axis, Act::replicate, Act::shard_seq> {};

// transformers' style names, where one of ours has the same meaning.
template <fixed_string Axis = "tp">
struct embedding_rowwise : vocab_parallel<Axis> {};
template <fixed_string Axis = "ep">
struct grouped_gemm : moe_experts<Axis> {};
template <fixed_string Axis = "ep">
struct ep_router : router<Axis> {};
template <fixed_string Axis = "tp">
struct moe_tp_experts : expert_tp<Axis> {};
template <fixed_string Axis = "tp">
struct sequence_parallel_norm : sequence_parallel<Axis> {};
template <fixed_string Axis = "tp">
struct module_allgather : gather_input<Axis> {};

}  // namespace styles

template <class T>
concept Style = requires {
  { T::spec } -> std::convertible_to<StyleSpec>;
};

}  // namespace meshplan
