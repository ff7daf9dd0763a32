#pragma once
// Checks that activation placements agree from one module to the next, on every mesh axis.
//
// For each axis the check walks the model's flow (model/detail/flow.hpp) and keeps, for every
// activation slot, its placement and the module that wrote it. A step must accept the
// placement it reads (a sequence-parallel norm reads Shard(1); colwise reads Replicate;
// rowwise reads Shard(-1)), and every writer of a slot must write the same placement
// (attention and the MLP both write the residual stream). On an axis that splits model
// tensors the input tokens are replicated; on any other axis (data or expert parallel)
// each rank holds its own tokens.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cstddef>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/model/detail/flow.hpp"
#include "meshplan/model/inventory.hpp"
#include "meshplan/plan/detail/mesh_view.hpp"
#include "meshplan/plan/detail/param_placement.hpp"
#include "meshplan/plan/plan.hpp"
#include "meshplan/plan/plan_rules.hpp"
#include "meshplan/plan/detail/style_semantics.hpp"

namespace meshplan {

namespace detail {
struct SlotState {
  std::string_view slot;
  Act placement;
  std::string_view writer;
};

constexpr Message& describe(Message& m, const ActSet& set) noexcept {
  bool first = true;
  for (Act a : {Act::replicate, Act::shard_seq, Act::shard_hidden})
    if (set.contains(a)) {
      m << (first ? "" : " or ") << to_string(a);
      first = false;
    }
  return m;
}

/// True when some style of the plan splits model tensors on `axis`.
constexpr bool axis_splits_model(std::span<const EntrySpec> plan, std::string_view axis) noexcept {
  for (const auto& e : plan)
    for (const auto& s : e.style_list())
      if (s.axis == axis && splits_model(s.kind)) return true;
  return false;
}

constexpr std::optional<StyleSpec> hook_on(std::span<const EntrySpec> plan, std::string_view module,
                                           std::string_view axis, StyleKind kind) noexcept {
  for (const auto& e : plan)
    if (e.is_hook_entry() && matches_module(e.pattern, module))
      if (auto s = style_on_axis(e, axis, true, kind)) return s;
  return std::nullopt;
}
}  // namespace detail

/// What a flow step does on one axis, as the walk saw it.
struct StepOnAxis {
  std::size_t axis;
  std::size_t step;
  Act in;
  Act out;
  std::optional<StyleSpec> style;  // the parameter style, or the hook, acting here
};

/// Walks the flow on every axis, checking that each step accepts its input and that the
/// writers of a slot agree; calls `visit(StepOnAxis)` for every step that passes.
/// `entry_of[i]` is the entry placing params[i] (matched before this runs).
template <class Visit>
constexpr Message walk_activation_flow([[maybe_unused]] const ModelSpec& model, const MeshView& mesh, std::span<const EntrySpec> plan,
                                       const std::vector<ParamInfo>& params, const std::vector<std::size_t>& entry_of,
                                       const std::vector<FlowStep>& flow, Visit&& visit) {
  auto param_index = [&](std::string_view name) {
    for (std::size_t i = 0; i < params.size(); ++i)
      if (params[i].name == name) return i;
    return no_entry;
  };
  auto param_style = [&](std::size_t p, std::string_view axis) -> std::optional<StyleSpec> {
    if (p == no_entry || entry_of[p] == no_entry) return std::nullopt;
    return style_on_axis(plan[entry_of[p]], axis, false);
  };
  // The output embedding: lm_head.weight; with tie_word_embeddings the module still acts as
  // its plan entry says (on the shared weight, placed alike: tied_embeddings_agree), and
  // without such an entry as the input embedding's style says.
  auto head_style = [&](std::string_view axis, ParamKind& kind) -> std::optional<StyleSpec> {
    if (std::size_t p = param_index(output_embedding_param); p != no_entry) {
      kind = params[p].kind;
      return param_style(p, axis);
    }
    if (EntryMatch head = match_param(output_embedding_param, plan); head.count > 0) {
      kind = ParamKind::lm_head;
      return style_on_axis(plan[head.first], axis, false);
    }
    const std::size_t embed = param_index("embed_tokens.weight");
    kind = embed == no_entry ? ParamKind::linear : params[embed].kind;
    return param_style(embed, axis);
  };

  for (std::size_t a = 0; a < mesh.ndim(); ++a) {
    const std::string_view axis = mesh.axis_name(a);
    std::vector<detail::SlotState> slots;
    auto find = [&](std::string_view slot) -> detail::SlotState* {
      for (auto& s : slots)
        if (s.slot == slot) return &s;
      return nullptr;
    };
    slots.push_back({input_slot, detail::axis_splits_model(plan, axis) ? Act::replicate : Act::shard_seq,
                     "the input batch"});

    for (std::size_t i = 0; i < flow.size(); ++i) {
      const FlowStep& step = flow[i];
      const detail::SlotState* in = find(step.in);
      if (!in) continue;  // Only reachable for a malformed flow; nothing to check.
      ActivationEffect effect{};
      std::optional<StyleSpec> acting;
      Message role;
      switch (step.kind) {
        case FlowStepKind::param: {
          std::size_t p = param_index(step.name);
          ParamKind kind = p == no_entry ? ParamKind::linear : params[p].kind;
          acting = step.name == output_embedding_param ? head_style(axis, kind) : param_style(p, axis);
          effect = param_step_effect(acting ? std::optional<StyleKind>(acting->kind) : std::nullopt, step, kind);
          break;
        }
        case FlowStepKind::scope_enter:
        case FlowStepKind::scope_exit: {
          bool enter = step.kind == FlowStepKind::scope_enter;
          acting = detail::hook_on(plan, step.name, axis, enter ? StyleKind::prepare_input : StyleKind::prepare_output);
          role << (enter ? " on entry" : " on exit");
          effect = hook_effect(acting);
          break;
        }
        case FlowStepKind::loss: {
          ParamKind kind{};
          acting = head_style(axis, kind);
          effect = loss_effect(acting && acting->kind == StyleKind::loss_parallel);
          break;
        }
      }
      if (acting) role << " (" << *acting << ")";
      if (!effect.accepts.contains(in->placement)) {
        Message expected;
        detail::describe(expected, effect.accepts);
        return plan_rules::activation_accepted(axis, step.name, role.view(), step.in, in->placement, in->writer,
                                               expected.view());
      }
      const Act out = effect.output_for(in->placement);
      visit(StepOnAxis{a, i, in->placement, out, acting});
      if (step.out.empty()) continue;
      if (detail::SlotState* existing = find(step.out)) {
        if (auto m = plan_rules::activation_agrees(axis, step.out, step.name, out, existing->writer,
                                                   existing->placement);
            !m.ok())
          return m;
      } else {
        // A scope without a hook passes its input through: the writer stays the module
        // that wrote it, which is the one a message should name.
        const bool pass_through = step.kind != FlowStepKind::param && !effect.out;
        slots.push_back({step.out, out, pass_through ? in->writer : step.name});
      }
    }
  }
  return {};
}

/// The activation rule alone.
constexpr Message check_activation_flow(const ModelSpec& model, const MeshView& mesh, std::span<const EntrySpec> plan,
                                        const std::vector<ParamInfo>& params,
                                        const std::vector<std::size_t>& entry_of) {
  return walk_activation_flow(model, mesh, plan, params, entry_of, activation_flow(model), [](const StepOnAxis&) {});
}

}  // namespace meshplan
