#pragma once
// The gradients of an MoE block's loss, fp32, under the shapes of MoEWeights (transformers'
// fused names): the whole block's (reference_backward.hpp) or one rank's pieces (an
// MoEBlock's backward), and plain SGD on a block's weights with them.
//
// BasicMoEGradients<FloatTensor> holds them in a backend's fp32 tensors: MoEGradients is
// the host's (Tensor<float>: the reference, the CPU backend, the runner); a CUDA block's
// backward returns them in device memory (cuda::DeviceMoEGradients, brought to the host by
// cuda::to_host).

#include "meshplan/core/detail/public_begin.hpp"

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/moe/moe_weights.hpp"

namespace meshplan {

template <class FloatTensor>
struct BasicMoEGradients {
  FloatTensor hidden_states;  // [tokens, H]: the input's gradient
  FloatTensor router;         // gate.weight [E, H]
  FloatTensor gate_up;        // experts.gate_up_proj [E, 2I, H]
  FloatTensor down;           // experts.down_proj [E, H, I]
  FloatTensor shared_gate;    // shared_experts.gate_proj.weight [S, H]
  FloatTensor shared_up;      // shared_experts.up_proj.weight [S, H]
  FloatTensor shared_down;    // shared_experts.down_proj.weight [H, S]

  /// The parameter gradients with transformers' names (the correction bias has none).
  std::vector<std::pair<std::string, const FloatTensor*>> named() const {
    std::vector<std::pair<std::string, const FloatTensor*>> out{
        {"gate.weight", &router}, {"experts.gate_up_proj", &gate_up}, {"experts.down_proj", &down}};
    if (shared_gate.numel() > 0) {
      out.emplace_back("shared_experts.gate_proj.weight", &shared_gate);
      out.emplace_back("shared_experts.up_proj.weight", &shared_up);
      out.emplace_back("shared_experts.down_proj.weight", &shared_down);
    }
    return out;
  }
};

/// The gradients on the host.
using MoEGradients = BasicMoEGradients<Tensor<float>>;

/// Every tensor of `g` passed through f (e.g. a copy from the device to the host).
template <class To, class From, class F>
BasicMoEGradients<To> map_gradients(const BasicMoEGradients<From>& g, F&& f) {
  return {f(g.hidden_states), f(g.router),    f(g.gate_up),    f(g.down),
          f(g.shared_gate),   f(g.shared_up), f(g.shared_down)};
}

namespace moe_rules {
inline Message grad_output_shape(const std::vector<index_t>& got, const std::vector<index_t>& expected) {
  if (got == expected) return {};
  return Message::rule("shape_matches") << "the output gradient has shape " << got << " where the block's output "
                                        << expected << " is expected";
}
}  // namespace moe_rules

namespace detail {
template <StorageType T>
void sgd_tensor(Tensor<T>& w, const Tensor<float>& g, float lr, const char* what) {
  enforce(w.shape() == g.shape() ? Message{}
                                 : Message::rule("shape_matches") << "the gradient of " << what << " has shape "
                                                                  << g.shape() << ", the weight " << w.shape());
  for (index_t i = 0; i < w.numel(); ++i) w[i] = from_float<T>(to_float(w[i]) - lr * g[i]);
}
}  // namespace detail

/// w -= lr * g for every parameter (in fp32, rounded to T); the correction bias is a buffer
/// and stays.
template <StorageType T>
void sgd_update(MoEWeights<T>& w, const MoEGradients& g, float lr) {
  detail::sgd_tensor(w.router, g.router, lr, "gate.weight");
  detail::sgd_tensor(w.gate_up, g.gate_up, lr, "experts.gate_up_proj");
  detail::sgd_tensor(w.down, g.down, lr, "experts.down_proj");
  if (w.has_shared()) {
    detail::sgd_tensor(w.shared_gate, g.shared_gate, lr, "shared_experts.gate_proj.weight");
    detail::sgd_tensor(w.shared_up, g.shared_up, lr, "shared_experts.up_proj.weight");
    detail::sgd_tensor(w.shared_down, g.shared_down, lr, "shared_experts.down_proj.weight");
  }
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
