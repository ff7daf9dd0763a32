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

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "meshplan/mesh/group.hpp"
#include "meshplan/mesh/mesh_spec.hpp"
#include "meshplan/model/detail/flow.hpp"
#include "meshplan/model/inventory.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/plan/lower.hpp"
#include "meshplan/plan/plan.hpp"
#include "meshplan/plan/plan_walk.hpp"

namespace meshplan {

struct GradientReduction {
  LoweredParam param;
  std::vector<std::size_t> axes;        // mesh axes, in mesh order; empty: nothing to reduce
  std::vector<std::size_t> token_axes;  // the axes whose ranks hold different tokens there (a superset)
};

/// How an ordered sum (comm/detail/ordered_sum.hpp) runs one parameter's reduction on one rank:
/// the tokens of the ranks along `token_axes`, in mesh order (the global token order), are
/// the segments; each is summed by the member of the reduction group that holds this
/// rank's piece and computes those tokens' rows (for experts under EP, the member of the
/// same expert slice that received them).
struct GradientChain {
  Group group;                   // the ranks holding the same piece, over the reduced axes
  std::vector<index_t> owners;   // per segment: its member in `group`
  std::vector<index_t> sources;  // per segment: its rank's coordinate on `source_axis`
  /// Times the running sum changes hands.
  index_t hand_overs() const noexcept {
    index_t n = 0;
    for (std::size_t i = 1; i < owners.size(); ++i) n += owners[i] != owners[i - 1];
    return n;
  }
  /// Bytes per member on average for a sum of `bytes`: the hand-overs and the broadcast.
  double sent_bytes(double bytes) const noexcept {
    const index_t n = group.size();
    return n > 1 ? bytes * static_cast<double>(hand_overs() + n - 1) / static_cast<double>(n) : 0.0;
  }
};

inline GradientChain gradient_chain(const MeshSpec& mesh, index_t rank, const GradientReduction& r,
                                    std::size_t source_axis) {
  auto names_of = [&](const std::vector<std::size_t>& axes) {
    std::vector<std::string_view> n;
    for (std::size_t a : axes) n.push_back(mesh.axis_name(a));
    return n;
  };
  GradientChain c;
  c.group = r.axes.empty() ? Group{{rank}, 0} : mesh.group(rank, names_of(r.axes));
  const std::vector<index_t> me = mesh.coordinates(rank);
  const Group segments = r.token_axes.empty() ? Group{{rank}, 0} : mesh.group(rank, names_of(r.token_axes));
  for (index_t s : segments.members) {
    const std::vector<index_t> at = mesh.coordinates(s);
    std::vector<index_t> owner = me;
    for (std::size_t a : r.axes) owner[a] = at[a];
    const index_t owner_rank = mesh.rank_of(owner);
    index_t member = 0;
    while (c.group.members[static_cast<std::size_t>(member)] != owner_rank) ++member;
    c.owners.push_back(member);
    c.sources.push_back(source_axis < mesh.ndim() ? at[source_axis] : 0);
  }
  return c;
}

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
    GradientReduction r{std::move(l), {}, {}};
    if (r.param.info.kind != ParamKind::router_bias) {
      // The first step of the parameter's module shows what its inputs look like.
      for (std::size_t i = 0; i < walk.flow().size(); ++i) {
        const FlowStep& step = walk.flow()[i];
        if (step.kind != FlowStepKind::param || module_of(step.name) != r.param.info.module()) continue;
        for (std::size_t a = 0; a < nax; ++a) {
          if (!sharded_in[i][a] || mesh.axis_size(a) == 1) continue;
          r.token_axes.push_back(a);
          if (r.param.placements[a].is_replicate()) r.axes.push_back(a);
        }
        break;
      }
    }
    out.push_back(std::move(r));
  }
  return out;
}

/// The reduction of the parameter called `name` (a plan-level name, "layers.*.mlp.gate.weight").
inline const GradientReduction* find_gradient_reduction(std::span<const GradientReduction> all, std::string_view name) {
  for (const GradientReduction& r : all)
    if (r.param.info.name == name) return &r;
  return nullptr;
}

}  // namespace meshplan
