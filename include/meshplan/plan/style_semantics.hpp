#pragma once
// What each style does on its axis: the placement of each kind of parameter, and the
// activations a flow step accepts and produces (see model/flow.hpp).

#include <optional>

#include "meshplan/model/flow.hpp"
#include "meshplan/model/inventory.hpp"
#include "meshplan/placement/placement.hpp"
#include "meshplan/plan/style.hpp"

namespace meshplan {

/// The placement a style gives a parameter of this kind on its axis, or nothing when the
/// style cannot place such a parameter.
constexpr std::optional<PlacementSpec> placement_on_axis(StyleKind style, ParamKind kind) noexcept {
  using K = ParamKind;
  const auto R = PlacementSpec::replicate();
  auto S = [](int d) { return PlacementSpec::shard(d); };
  auto SS = [](int d) { return PlacementSpec::strided_shard(d, 2); };
  switch (style) {
    case StyleKind::replicate: return R;
    case StyleKind::colwise:
    case StyleKind::colwise_gather_output:
      if (kind == K::linear || kind == K::linear_bias || kind == K::lm_head) return S(0);
      return std::nullopt;
    case StyleKind::rowwise:
    case StyleKind::rowwise_reduce_scatter:
      if (kind == K::linear) return S(1);
      if (kind == K::linear_bias) return R;  // added once, after the reduction
      if (kind == K::experts_down) return S(2);
      return std::nullopt;
    case StyleKind::packed_colwise:
      if (kind == K::linear || kind == K::linear_bias) return SS(0);
      if (kind == K::experts_gate_up) return SS(1);
      return std::nullopt;
    case StyleKind::vocab_parallel:
    case StyleKind::vocab_parallel_reduce_scatter:
      if (kind == K::embedding) return S(0);
      return std::nullopt;
    case StyleKind::sequence_parallel:
      if (kind == K::norm) return R;
      return std::nullopt;
    case StyleKind::replicated_with_grad_allreduce:
      if (kind == K::norm || kind == K::head_norm) return R;
      return std::nullopt;
    case StyleKind::moe_experts:
      if (kind == K::experts_gate_up || kind == K::experts_down) return S(0);
      return std::nullopt;
    case StyleKind::expert_tp:
    case StyleKind::expert_tp_reduce_scatter:
      if (kind == K::experts_gate_up) return SS(1);
      if (kind == K::experts_down) return S(2);
      return std::nullopt;
    case StyleKind::router:
      if (kind == K::router || kind == K::router_bias) return R;
      return std::nullopt;
    case StyleKind::loss_parallel:
      if (kind == K::lm_head || kind == K::embedding) return S(0);
      return std::nullopt;
    case StyleKind::prepare_input:
    case StyleKind::prepare_output: return std::nullopt;
  }
  return std::nullopt;
}

/// A set of activation placements.
struct ActSet {
  bool replicate = false, shard_seq = false, shard_hidden = false;
  constexpr bool contains(Act a) const noexcept {
    return a == Act::replicate ? replicate : a == Act::shard_seq ? shard_seq : shard_hidden;
  }
};

/// A flow step's behaviour on one axis: what it accepts and, given its input, what it writes.
struct ActivationEffect {
  ActSet accepts;
  std::optional<Act> out;  // nothing: the output equals the input
  constexpr Act output_for(Act in) const noexcept { return out ? *out : in; }
};

namespace detail {
constexpr ActSet only(Act a) noexcept {
  ActSet s;
  if (a == Act::replicate) s.replicate = true;
  if (a == Act::shard_seq) s.shard_seq = true;
  if (a == Act::shard_hidden) s.shard_hidden = true;
  return s;
}
}  // namespace detail

/// The effect of a parameter step whose module has style `style` on this axis (nothing:
/// no style there, so the parameter is whole on every rank of the axis).
/// `first_of_module`: the step opens its module's computation (gate_up of the experts)
/// rather than closing it (down_proj).
constexpr ActivationEffect param_step_effect(std::optional<StyleKind> style, const FlowStep& step,
                                             ParamKind kind) noexcept {
  using detail::only;
  // Whole weights work on any token split; within heads also on head-sharded input.
  const ActSet token_local{true, true, step.head_local};
  if (!style) return {token_local, std::nullopt};
  const bool opens = kind != ParamKind::experts_down;
  const bool output_embedding = kind == ParamKind::embedding && step.in != input_slot;
  switch (*style) {
    case StyleKind::replicate:
    case StyleKind::router: return {token_local, std::nullopt};
    case StyleKind::replicated_with_grad_allreduce: return {{true, true, true}, std::nullopt};
    case StyleKind::sequence_parallel: return {only(Act::shard_seq), Act::shard_seq};
    case StyleKind::colwise:
    case StyleKind::packed_colwise:
    case StyleKind::loss_parallel: return {only(Act::replicate), Act::shard_hidden};
    case StyleKind::colwise_gather_output: return {only(Act::replicate), Act::replicate};
    case StyleKind::rowwise: return {only(Act::shard_hidden), Act::replicate};
    case StyleKind::rowwise_reduce_scatter: return {only(Act::shard_hidden), Act::shard_seq};
    case StyleKind::vocab_parallel:
      return {only(Act::replicate), output_embedding ? Act::shard_hidden : Act::replicate};
    case StyleKind::vocab_parallel_reduce_scatter:
      return {only(Act::replicate), output_embedding ? Act::shard_hidden : Act::shard_seq};
    case StyleKind::moe_experts: return {only(Act::shard_seq), Act::shard_seq};
    case StyleKind::expert_tp:
      return opens ? ActivationEffect{only(Act::replicate), Act::shard_hidden}
                   : ActivationEffect{only(Act::shard_hidden), Act::replicate};
    case StyleKind::expert_tp_reduce_scatter:
      return opens ? ActivationEffect{only(Act::replicate), Act::shard_hidden}
                   : ActivationEffect{only(Act::shard_hidden), Act::shard_seq};
    case StyleKind::prepare_input:
    case StyleKind::prepare_output: break;
  }
  return {token_local, std::nullopt};
}

/// A scope step with (or without) a hook on this axis: converts `from` to `to`, or passes
/// anything through.
constexpr ActivationEffect hook_effect(const std::optional<StyleSpec>& hook) noexcept {
  if (!hook) return {{true, true, true}, std::nullopt};
  return {detail::only(hook->from), hook->to};
}

/// The loss reads replicated or token-sharded logits; vocab-sharded logits only when the
/// output embedding is loss_parallel on this axis.
constexpr ActivationEffect loss_effect(bool loss_parallel) noexcept {
  return {{true, true, loss_parallel}, std::nullopt};
}

/// Axes where tokens are replicated at the input: those that split model tensors. On all
/// other axes (data, expert parallel) each rank holds its own tokens.
constexpr bool splits_model(StyleKind k) noexcept {
  return k != StyleKind::replicate && k != StyleKind::moe_experts && k != StyleKind::router;
}

}  // namespace meshplan
