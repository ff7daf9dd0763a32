#pragma once
// What each style does on its axis, for a given flow step (model/detail/flow.hpp): the placement of
// each kind of parameter, and the activations the step accepts and produces. Read from the
// style table (style_table.hpp); hooks' effects are their StyleSpec's from -> to.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <optional>

#include "meshplan/model/detail/flow.hpp"
#include "meshplan/model/inventory.hpp"
#include "meshplan/placement/placement.hpp"
#include "meshplan/plan/style.hpp"

namespace meshplan {

/// The placement a style gives a parameter of this kind on its axis, or nothing when the
/// style cannot place such a parameter.
constexpr std::optional<PlacementSpec> placement_on_axis(StyleKind style, ParamKind kind) noexcept {
  return style_info(style).params.of(kind);
}

/// A flow step's behaviour on one axis: what it accepts and, given its input, what it writes.
struct ActivationEffect {
  ActSet accepts;
  std::optional<Act> out;  // nothing: the output equals the input
  constexpr Act output_for(Act in) const noexcept { return out ? *out : in; }
};

/// The output embedding, as the activation flow sees it: an embedding step that does not
/// read the token ids (the tied output embedding, which reads the residual stream).
constexpr bool is_output_embedding(const FlowStep& step, ParamKind kind) noexcept {
  return kind == ParamKind::embedding && step.in != input_slot;
}

/// The effect of a parameter step whose module has style `style` on this axis (nothing:
/// no style there, so the parameter is whole on every rank of the axis, as replicate).
/// The step's kind picks the table's closing effect (the experts' down_proj) and its
/// output-embedding output; `step.head_local` widens an effect `within_heads`.
constexpr ActivationEffect param_step_effect(std::optional<StyleKind> style, const FlowStep& step,
                                             ParamKind kind) noexcept {
  const StyleInfo& info = style_info(style.value_or(StyleKind::replicate));
  const StepEffect e = info.effect_at(kind);
  ActSet accepts = e.accepts;
  if (e.within_heads && step.head_local) accepts.shard_hidden = true;
  if (info.output_embedding_out && is_output_embedding(step, kind)) return {accepts, info.output_embedding_out};
  return {accepts, e.out};
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

}  // namespace meshplan
