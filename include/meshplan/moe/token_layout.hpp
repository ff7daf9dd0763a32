#pragma once
// Which tokens each rank holds where the MoE block begins (and, for every built-in plan,
// where it ends): split in mesh order over the axes on which the plan has tokens sharded
// there (data and expert parallel axes, and sequence-parallel model axes), replicated over
// the others. As a Layout of the token dim, so tests and tools can hand every rank its
// share of a batch with DTensor's torch.chunk rules, and each rank's rows of a batch.

#include "meshplan/core/detail/public_begin.hpp"

#include <string_view>
#include <utility>
#include <vector>

#include "meshplan/core/tensor.hpp"
#include "meshplan/mesh/mesh_spec.hpp"
#include "meshplan/model/detail/flow.hpp"
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

/// The global token index of each row a rank holds, in row order.
inline std::vector<index_t> held_tokens(const LayoutSpec& tokens, index_t rank) {
  std::vector<index_t> rows;
  for (const auto& run : tokens.held_indices(0, rank))
    for (index_t t = run.begin; t < run.begin + run.size; ++t) rows.push_back(t);
  return rows;
}

/// The rows of x [tokens, width] a rank holds, in row order.
template <class U>
Tensor<U> held_rows(const LayoutSpec& tokens, const Tensor<U>& x, index_t rank) {
  const index_t width = x.dim(1);
  const std::vector<index_t> rows = held_tokens(tokens, rank);
  std::vector<U> data;
  data.reserve(rows.size() * static_cast<std::size_t>(width));
  for (index_t t : rows) data.insert(data.end(), x.data() + t * width, x.data() + (t + 1) * width);
  return Tensor<U>({static_cast<index_t>(rows.size()), width}, std::move(data));
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
