#pragma once
// The weights of one MoE block, under transformers-5 names (without the layer prefix):
//
//   gate.weight                    [E, H]        router            -> router
//   gate.e_score_correction_bias   [E] (fp32)    DeepSeek-V3 only  -> correction_bias
//   experts.gate_up_proj           [E, 2I, H]    gate rows, then up rows
//   experts.down_proj              [E, H, I]
//   shared_experts.gate_proj.weight [Is, H]      DeepSeek-V3 only (Is = I * n_shared_experts)
//   shared_experts.up_proj.weight   [Is, H]
//   shared_experts.down_proj.weight [H, Is]
//
// Full weights hold the whole block; a rank's weights hold its pieces (see MoEBlock).

#include "meshplan/core/detail/public_begin.hpp"

#include <cmath>
#include <cstdint>
#include <random>
#include <string_view>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/model/model_spec.hpp"

namespace meshplan {

template <StorageType T>
struct MoEWeights {
  Tensor<T> router;
  Tensor<float> correction_bias;
  Tensor<T> gate_up;
  Tensor<T> down;
  Tensor<T> shared_gate;
  Tensor<T> shared_up;
  Tensor<T> shared_down;

  bool has_shared() const noexcept { return !shared_down.empty(); }
};

/// The full shapes of a model's MoE block, checked against `w`.
template <StorageType T>
void check_full_weights(const ModelSpec& m, const MoEWeights<T>& w) {
  const index_t E = m.num_experts, H = m.hidden_size, I = m.moe_intermediate_size, S = m.shared_intermediate_size();
  w.router.require_shape("gate.weight", {E, H});
  if (m.router() == RouterKind::sigmoid_group_topk) w.correction_bias.require_shape("gate.e_score_correction_bias", {E});
  w.gate_up.require_shape("experts.gate_up_proj", {E, 2 * I, H});
  w.down.require_shape("experts.down_proj", {E, H, I});
  if (S > 0) {
    w.shared_gate.require_shape("shared_experts.gate_proj.weight", {S, H});
    w.shared_up.require_shape("shared_experts.up_proj.weight", {S, H});
    w.shared_down.require_shape("shared_experts.down_proj.weight", {H, S});
  }
}

/// Random weights for a model's MoE block: uniform in +-1/sqrt(fan_in) (PyTorch's default
/// for nn.Linear), a correction bias in +-0.1, fixed by `seed`.
template <StorageType T>
MoEWeights<T> random_moe_weights(const ModelSpec& m, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto fill = [&](std::vector<index_t> shape, index_t fan_in) {
    Tensor<T> t(std::move(shape));
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    const float scale = 1.0f / std::sqrt(static_cast<float>(fan_in));
    for (auto& v : t.vector()) v = from_float<T>(u(rng) * scale);
    return t;
  };
  const index_t E = m.num_experts, H = m.hidden_size, I = m.moe_intermediate_size, S = m.shared_intermediate_size();
  MoEWeights<T> w;
  w.router = fill({E, H}, H);
  if (m.router() == RouterKind::sigmoid_group_topk) {
    w.correction_bias = Tensor<float>({E});
    std::uniform_real_distribution<float> u(-0.1f, 0.1f);
    for (auto& v : w.correction_bias.vector()) v = u(rng);
  }
  w.gate_up = fill({E, 2 * I, H}, H);
  w.down = fill({E, H, I}, I);
  if (S > 0) {
    w.shared_gate = fill({S, H}, H);
    w.shared_up = fill({S, H}, H);
    w.shared_down = fill({H, S}, S);
  }
  return w;
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
