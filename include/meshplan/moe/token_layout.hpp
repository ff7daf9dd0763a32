#pragma once
// Which tokens each rank holds where the MoE block begins (and, for every built-in plan,
// where it ends): split in mesh order over the axes on which the plan has tokens sharded
// there (data and expert parallel axes, and sequence-parallel model axes), replicated over
// the others. As a Layout of the token dim, so tests and tools can hand every rank its
// share of a batch with DTensor's torch.chunk rules.

#include <string_view>
#include <vector>

#include "meshplan/mesh/mesh_spec.hpp"
#include "meshplan/model/flow.hpp"
#include "meshplan/model/inventory.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/placement/layout_spec.hpp"
#include "meshplan/plan/plan_walk.hpp"

namespace meshplan {

/// The layout of `tokens` tokens at the input of the MoE block.
inline LayoutSpec moe_token_layout(const ModelSpec& model, const MeshSpec& mesh, std::span<const EntrySpec> plan,
                                   index_t tokens) {
  const PlanWalk walk(model, mesh, plan);
  std::vector<PlacementSpec> placements(mesh.ndim(), PlacementSpec::replicate());
  walk.walk([&](const StepOnAxis& s) {
    const FlowStep& step = walk.flow()[s.step];
    if (step.kind == FlowStepKind::scope_enter && step.name == "layers.*.mlp" &&
        step.section == FlowSection::moe_layer && s.in == Act::shard_seq)
      placements[s.axis] = PlacementSpec::shard(0);
  });
  return LayoutSpec(mesh, {tokens}, placements);
}

}  // namespace meshplan
