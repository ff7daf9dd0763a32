#pragma once
// The single-rank reference of an MoE block, written as plainly as the math: route every
// token, run its k experts on it one row at a time, add the weighted outputs in slot order,
// add the shared experts. This is the function every distributed plan must reproduce (bit
// for bit where the plan only moves data), and the one checked against transformers.
//
// Storage semantics (float or bfloat16; fp32 arithmetic): each expert's output row is
// stored in T; the routed sum is stored in T; the shared experts' output is stored in T;
// the block's output is their sum, stored in T.

#include "meshplan/core/detail/public_begin.hpp"

#include <cmath>
#include <span>
#include <vector>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/cpu/detail/experts.hpp"
#include "meshplan/cpu/detail/router.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/moe/moe_weights.hpp"

namespace meshplan {

template <StorageType T>
Tensor<T> reference_moe_forward(const ModelSpec& model, const MoEWeights<T>& w, const Tensor<T>& x,
                                Routing* routing_out = nullptr) {
  check_full_weights(model, w);
  const index_t H = model.hidden_size, I = model.moe_intermediate_size;
  const index_t tokens = x.rank() == 2 ? x.dim(0) : 0;
  x.require_shape("the hidden states", {tokens, H});
  Routing routing = cpu::route(model, cpu::router_logits(x, w.router), w.correction_bias.span());

  Tensor<T> out({tokens, H});
  std::vector<float> y(static_cast<std::size_t>(H)), shared(static_cast<std::size_t>(H));
  std::vector<T> act;
  for (index_t t = 0; t < tokens; ++t) {
    std::vector<float> routed(static_cast<std::size_t>(H), 0.0f);
    for (index_t s = 0; s < routing.top_k; ++s) {
      const index_t e = routing.expert(t, s);
      const T* gate = w.gate_up.data() + e * 2 * I * H;
      cpu::mlp_row(x.data() + t * H, gate, gate + I * H, w.down.data() + e * H * I, H, I, y.data(), act);
      for (index_t h = 0; h < H; ++h) routed[h] = std::fma(routing.weight(t, s), to_float(from_float<T>(y[h])), routed[h]);
    }
    if (w.has_shared()) {
      const index_t S = w.shared_gate.dim(0);
      cpu::mlp_row(x.data() + t * H, w.shared_gate.data(), w.shared_up.data(), w.shared_down.data(), H, S,
                   shared.data(), act);
    }
    for (index_t h = 0; h < H; ++h) {
      float v = to_float(from_float<T>(routed[h]));
      if (w.has_shared()) v += to_float(from_float<T>(shared[h]));
      out[t * H + h] = from_float<T>(v);
    }
  }
  if (routing_out) *routing_out = std::move(routing);
  return out;
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
