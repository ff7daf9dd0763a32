#pragma once
// An MoE block's weights from a safetensors file: the full block on one rank, or each rank's
// pieces read straight from the file (shard-on-read). Block parameters are named as in
// transformers 5 under a prefix ("" for a block file, "model.layers.3.mlp." in a model
// checkpoint); fused experts may also be stored one tensor per expert (see shard_read.hpp).

#include "meshplan/core/detail/public_begin.hpp"

#include <string>
#include <string_view>
#include <vector>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/io/safetensors_view.hpp"
#include "meshplan/io/shard_read.hpp"
#include "meshplan/mesh/mesh_spec.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/moe/moe_weights.hpp"
#include "meshplan/placement/layout_spec.hpp"

namespace meshplan {

/// Shard-on-read: every rank reads only its pieces. The view must outlive the block's
/// construction.
template <StorageType T, TensorFile File>
MoEWeightLoader<T> moe_weights_from(const File& file, std::string prefix = "") {
  return {[&file, prefix](std::string_view name, const LayoutSpec& layout, index_t rank) {
            return read_block_piece<T>(file, prefix, name, layout, rank);
          },
          [&file, prefix](std::string_view name, const LayoutSpec& layout, index_t rank) {
            return read_piece<float>(file, prefix + std::string(name), layout, rank);
          }};
}

/// The whole block on one rank.
template <StorageType T>
MoEWeights<T> read_moe_weights(const SafetensorsView& file, const ModelSpec& m, std::string_view prefix = "") {
  const MeshSpec one{{"rank", 1}};
  auto whole = [&](std::string_view name, std::vector<index_t> shape) {
    return read_block_piece<T>(file, prefix, name, LayoutSpec(one, std::move(shape), {PlacementSpec::replicate()}), 0);
  };
  const index_t E = m.num_experts, H = m.hidden_size, I = m.moe_intermediate_size, S = m.shared_intermediate_size();
  MoEWeights<T> w;
  w.router = whole("gate.weight", {E, H});
  if (m.router() == RouterKind::sigmoid_group_topk)
    w.correction_bias = read_piece<float>(file, std::string(prefix) + "gate.e_score_correction_bias",
                                          LayoutSpec(one, {E}, {PlacementSpec::replicate()}), 0);
  w.gate_up = whole("experts.gate_up_proj", {E, 2 * I, H});
  w.down = whole("experts.down_proj", {E, H, I});
  if (S > 0) {
    w.shared_gate = whole("shared_experts.gate_proj.weight", {S, H});
    w.shared_up = whole("shared_experts.up_proj.weight", {S, H});
    w.shared_down = whole("shared_experts.down_proj.weight", {H, S});
  }
  return w;
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
