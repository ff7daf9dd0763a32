#pragma once
// Which mesh axes a parameter's gradient is summed over, read from the plan: the axes on
// which the parameter is replicated while the tokens its module reads differ between ranks
// (data-parallel axes, expert-parallel axes for the router and shared experts, an axis that
// splits or shards the tokens inside the MoE block, head-sharded norms). Over the other
// axes the ranks either hold different pieces of the parameter (their gradients are
// different pieces too) or read the same tokens (their gradients are already equal).
//
// The cost model charges these reductions (grad_sync) and the MoE block runs them
// (moe_block.hpp's backward): both read this one function. DeepSeek-V3's correction bias
// is a buffer, not a parameter: it has no gradient and no reduction.

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "meshplan/mesh/mesh_spec.hpp"
#include "meshplan/model/flow.hpp"
#include "meshplan/model/inventory.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/plan/lower.hpp"
#include "meshplan/plan/plan.hpp"
#include "meshplan/plan/plan_walk.hpp"

namespace meshplan {

struct GradientReduction {
  LoweredParam param;
  std::vector<std::size_t> axes;  // mesh axes, in mesh order; empty: nothing to reduce
};

/// Every parameter of the model with the axes its gradient is reduced over, as lowered for
/// `rank` (the axes are the same on every rank).
inline std::vector<GradientReduction> gradient_reductions(const ModelSpec& model, const MeshSpec& mesh,
                                                          std::span<const EntrySpec> plan, index_t rank = 0) {
  const PlanWalk walk(model, mesh, plan);
  const std::size_t nax = mesh.ndim();
  // The tokens each param step reads, per axis: sharded (different on each member) or not.
  std::vector<std::vector<bool>> sharded_in(walk.flow().size(), std::vector<bool>(nax, false));
  walk.walk([&](const StepOnAxis& s) { sharded_in[s.step][s.axis] = s.in != Act::replicate; });

  auto module_of = [](std::string_view name) { return name.substr(0, name.rfind('.')); };
  std::vector<GradientReduction> out;
  for (LoweredParam& l : lower(model, mesh, plan, rank)) {
    GradientReduction r{std::move(l), {}};
    if (r.param.info.kind != ParamKind::router_bias) {
      // The first step of the parameter's module shows what its inputs look like.
      for (std::size_t i = 0; i < walk.flow().size(); ++i) {
        const FlowStep& step = walk.flow()[i];
        if (step.kind != FlowStepKind::param || module_of(step.name) != r.param.info.module()) continue;
        for (std::size_t a = 0; a < nax; ++a)
          if (sharded_in[i][a] && r.param.placements[a].is_replicate() && mesh.axis_size(a) > 1) r.axes.push_back(a);
        break;
      }
    }
    out.push_back(std::move(r));
  }
  return out;
}

/// The axes of the parameter called `name` (a plan-level name, "layers.*.mlp.gate.weight").
inline std::vector<std::size_t> gradient_reduction_axes(std::span<const GradientReduction> all, std::string_view name) {
  for (const GradientReduction& r : all)
    if (r.param.info.name == name) return r.axes;
  return {};
}

}  // namespace meshplan
