#pragma once
// Parallel styles: how one module is split along one named mesh axis.
//
// A style names its axis (`colwise<"tp">`) and decides two things: the placement of each
// parameter it covers on that axis (style_semantics.hpp: placement_on_axis), and the
// placement of the activations the module reads and writes there (activation_effect),
// hence the collectives it inserts. Styles are empty tag types; StyleSpec is the same
// information as constexpr data.
//
// Activations are [tokens, features]. On one axis an activation is Replicate, sharded on
// the token (sequence) dim, or sharded on the feature dim; partial sums never leave a style
// (rowwise reduces them itself, by all-reduce or by reduce-scatter).

#include <cstdint>
#include <string_view>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/fixed_string.hpp"

namespace meshplan {

/// The placement of an activation [tokens, features] on one axis.
enum class Act : std::uint8_t { replicate, shard_seq, shard_hidden };

constexpr std::string_view to_string(Act a) noexcept {
  switch (a) {
    case Act::replicate: return "Replicate";
    case Act::shard_seq: return "Shard(seq)";
    case Act::shard_hidden: return "Shard(hidden)";
  }
  return "?";
}

enum class StyleKind : std::uint8_t {
  replicate,                      // every parameter whole on every rank of every axis
  colwise,                        // weight [out, in] Shard(0): input Replicate, output Shard(hidden)
  colwise_gather_output,          // colwise, then all-gather the output: output Replicate
  rowwise,                        // weight Shard(1), bias Replicate: input Shard(hidden), all-reduce out
  rowwise_reduce_scatter,         // rowwise with reduce-scatter: output Shard(seq) (sequence parallel)
  packed_colwise,                 // fused gate||up weight, StridedShard(out, 2): rank r holds [gate_r | up_r]
  vocab_parallel,                 // embedding Shard(vocab): masked lookup, all-reduce out
  vocab_parallel_reduce_scatter,  // vocab_parallel with reduce-scatter: output Shard(seq)
  sequence_parallel,              // norms on Shard(seq) activations; weight Replicate, grads all-reduced
  replicated_with_grad_allreduce, // weight Replicate on head-sharded input (q_norm/k_norm); grads all-reduced
  prepare_input,                  // module hook: convert the input placement (all-gather or split)
  prepare_output,                 // module hook: convert the output placement
  moe_experts,                    // experts dim on an EP axis: all-to-all-v dispatch of routed rows
  expert_tp,                      // expert intermediate dim on a TP axis; partial sums all-reduced
  expert_tp_reduce_scatter,       // expert_tp with reduce-scatter: output Shard(seq)
  router,                         // router weight Replicate; routes the tokens each rank holds
  loss_parallel,                  // lm_head Shard(vocab) and a vocab-parallel cross entropy
};

constexpr std::string_view to_string(StyleKind k) noexcept {
  switch (k) {
    case StyleKind::replicate: return "replicate";
    case StyleKind::colwise: return "colwise";
    case StyleKind::colwise_gather_output: return "colwise_gather_output";
    case StyleKind::rowwise: return "rowwise";
    case StyleKind::rowwise_reduce_scatter: return "rowwise_reduce_scatter";
    case StyleKind::packed_colwise: return "packed_colwise";
    case StyleKind::vocab_parallel: return "vocab_parallel";
    case StyleKind::vocab_parallel_reduce_scatter: return "vocab_parallel_reduce_scatter";
    case StyleKind::sequence_parallel: return "sequence_parallel";
    case StyleKind::replicated_with_grad_allreduce: return "replicated_with_grad_allreduce";
    case StyleKind::prepare_input: return "prepare_input";
    case StyleKind::prepare_output: return "prepare_output";
    case StyleKind::moe_experts: return "moe_experts";
    case StyleKind::expert_tp: return "expert_tp";
    case StyleKind::expert_tp_reduce_scatter: return "expert_tp_reduce_scatter";
    case StyleKind::router: return "router";
    case StyleKind::loss_parallel: return "loss_parallel";
  }
  return "?";
}

/// Hooks act on a module scope's input or output; all other styles place parameters.
constexpr bool is_hook(StyleKind k) noexcept { return k == StyleKind::prepare_input || k == StyleKind::prepare_output; }

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
