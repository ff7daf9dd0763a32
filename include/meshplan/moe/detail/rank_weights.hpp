#pragma once
// A rank's weights of one MoE block: the pieces its plan gives it of every block parameter,
// fetched through a loader (slices of full weights in memory, or reads from a checkpoint),
// each checked against the shape its layout says. Every backend's MoEBlock starts here.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <functional>
#include <string_view>
#include <utility>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/placement/detail/slice.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/mesh/mesh_spec.hpp"
#include "meshplan/model/detail/model_rules.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/moe/moe_weights.hpp"
#include "meshplan/placement/layout_spec.hpp"
#include "meshplan/plan/lower.hpp"
#include "meshplan/plan/validate.hpp"

namespace meshplan {

/// Where a rank's weights come from: each function returns the piece a layout gives `rank`
/// of a block parameter named as in transformers 5 without the layer prefix ("gate.weight",
/// "experts.gate_up_proj", ...); `bias` serves the fp32 "gate.e_score_correction_bias".
template <StorageType T>
struct MoEWeightLoader {
  std::function<Tensor<T>(std::string_view name, const LayoutSpec& layout, index_t rank)> weight;
  std::function<Tensor<float>(std::string_view name, const LayoutSpec& layout, index_t rank)> bias;
};

/// Slices the pieces from full block weights held in memory (which must outlive the loader).
template <StorageType T>
MoEWeightLoader<T> slice_of(const MoEWeights<T>& full) {
  auto tensor = [&full](std::string_view name) -> const Tensor<T>& {
    if (name == "gate.weight") return full.router;
    if (name == "experts.gate_up_proj") return full.gate_up;
    if (name == "experts.down_proj") return full.down;
    if (name == "shared_experts.gate_proj.weight") return full.shared_gate;
    if (name == "shared_experts.up_proj.weight") return full.shared_up;
    return full.shared_down;
  };
  return {[tensor](std::string_view name, const LayoutSpec& layout, index_t rank) {
            return local_piece(tensor(name), layout, rank);
          },
          [&full](std::string_view, const LayoutSpec& layout, index_t rank) {
            return local_piece(full.correction_bias, layout, rank);
          }};
}

/// The same, after checking the full weights' shapes against the model.
template <StorageType T>
MoEWeightLoader<T> slice_of(const ModelSpec& model, const MoEWeights<T>& full) {
  check_full_weights(model, full);
  return slice_of(full);
}

template <StorageType T>
struct RankWeights {
  MoEWeights<T> weights;
  index_t first_expert = 0;  // the global index of the rank's first local expert
};

namespace detail {
inline constexpr std::string_view moe_block_prefix = "layers.*.mlp.";

/// The router, the routed and the shared experts; not DeepSeek-V3's dense first-layer MLP.
constexpr bool is_moe_block_param(std::string_view name) noexcept {
  if (!name.starts_with(moe_block_prefix)) return false;
  const std::string_view local = name.substr(moe_block_prefix.size());
  return local.starts_with("gate.") || local.starts_with("experts.") || local.starts_with("shared_experts.");
}
}  // namespace detail

/// Checks that `model` has experts and that `plan` is legal for it on `mesh`, then loads
/// `rank`'s pieces of the block's parameters.
template <StorageType T>
RankWeights<T> load_rank_weights(const ModelSpec& model, const MeshSpec& mesh, std::span<const EntrySpec> plan,
                                 index_t rank, const MoEWeightLoader<T>& load) {
  enforce(model_rules::check_config(model));
  enforce(model_rules::has_experts(model, "an MoEBlock"));
  validate(model, mesh, plan);
  RankWeights<T> out;
  MoEWeights<T>& w = out.weights;
  for (const LoweredParam& p : lower(model, mesh, plan, rank)) {
    const std::string_view name = p.info.name;
    if (!detail::is_moe_block_param(name)) continue;
    const std::string_view local = name.substr(detail::moe_block_prefix.size());
    const LayoutSpec layout = p.layout(mesh);
    if (local == "gate.e_score_correction_bias") {
      w.correction_bias = load.bias(local, layout, rank);
      w.correction_bias.require_shape(name, layout.local_extents(rank));
      continue;
    }
    Tensor<T> piece = load.weight(local, layout, rank);
    piece.require_shape(name, layout.local_extents(rank));
    if (local == "gate.weight")
      w.router = std::move(piece);
    else if (local == "experts.gate_up_proj") {
      w.gate_up = std::move(piece);
      out.first_expert = layout.global_offsets(rank)[0];
    } else if (local == "experts.down_proj")
      w.down = std::move(piece);
    else if (local == "shared_experts.gate_proj.weight")
      w.shared_gate = std::move(piece);
    else if (local == "shared_experts.up_proj.weight")
      w.shared_up = std::move(piece);
    else if (local == "shared_experts.down_proj.weight")
      w.shared_down = std::move(piece);
  }
  return out;
}

}  // namespace meshplan
