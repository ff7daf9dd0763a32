#pragma once
// A validated plan on a run-time mesh, ready to have its activation flow walked: what the
// cost model, the token layout of the MoE block and the sequence-parallel checks read.

#include "meshplan/core/detail/public_begin.hpp"

#include <cstddef>
#include <span>
#include <string_view>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/mesh/mesh_spec.hpp"
#include "meshplan/model/detail/flow.hpp"
#include "meshplan/model/inventory.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/plan/detail/activation_check.hpp"
#include "meshplan/plan/detail/mesh_view.hpp"
#include "meshplan/plan/detail/param_placement.hpp"
#include "meshplan/plan/plan.hpp"
#include "meshplan/plan/plan_rules.hpp"
#include "meshplan/plan/validate.hpp"

namespace meshplan {

class PlanWalk {
 public:
  /// Validates the plan (RuleViolation if it breaks a rule).
  PlanWalk(const ModelSpec& model, const MeshSpec& mesh, std::span<const EntrySpec> plan)
      : model_(model), view_(mesh), plan_(plan), params_(inventory(model)), flow_(activation_flow(model)) {
    validate(model, mesh, plan);
    entry_of_.resize(params_.size());
    for (std::size_t i = 0; i < params_.size(); ++i) entry_of_[i] = match_param(params_[i].name, plan).first;
  }

  /// Calls visit(StepOnAxis) for every step of the flow on every axis.
  template <class Visit>
  void walk(Visit&& visit) const {
    enforce(walk_activation_flow(model_, view_.view(), plan_, params_, entry_of_, flow_, visit));
  }

  const std::vector<ParamInfo>& params() const noexcept { return params_; }
  const std::vector<FlowStep>& flow() const noexcept { return flow_; }
  std::size_t entry_of(std::size_t param) const noexcept { return entry_of_[param]; }
  MeshView mesh() const noexcept { return view_.view(); }
  /// Whether some style splits model tensors on axis `a` (tokens replicated there).
  bool model_axis(std::size_t a) const noexcept { return detail::axis_splits_model(plan_, view_.names[a]); }

 private:
  ModelSpec model_;
  MeshSpecView view_;
  std::span<const EntrySpec> plan_;
  std::vector<ParamInfo> params_;
  std::vector<FlowStep> flow_;
  std::vector<std::size_t> entry_of_;
};

/// The sequence-parallel axes: model axes on which the plan keeps the residual stream split
/// over tokens. (A token split inside the MoE block, as ep_tp's, takes any token count.)
inline std::vector<std::size_t> sequence_parallel_axes(const ModelSpec& model, const MeshSpec& mesh,
                                                       std::span<const EntrySpec> plan) {
  const PlanWalk walk(model, mesh, plan);
  std::vector<bool> split(mesh.ndim(), false);
  walk.walk([&](const StepOnAxis& s) {
    if (walk.flow()[s.step].out == "residual" && s.out == Act::shard_seq && walk.model_axis(s.axis))
      split[s.axis] = true;
  });
  std::vector<std::size_t> axes;
  for (std::size_t a = 0; a < split.size(); ++a)
    if (split[a]) axes.push_back(a);
  return axes;
}

/// Run-time check that `tokens` (held by one model-parallel group) split evenly over every
/// sequence-parallel axis.
inline void validate_tokens(const ModelSpec& model, const MeshSpec& mesh, std::span<const EntrySpec> plan,
                            index_t tokens) {
  index_t t = tokens;
  for (std::size_t a : sequence_parallel_axes(model, mesh, plan)) {
    enforce(plan_rules::sequence_divisible(mesh.axis_name(a), t, mesh.axis_size(a)));
    t /= mesh.axis_size(a);
  }
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
