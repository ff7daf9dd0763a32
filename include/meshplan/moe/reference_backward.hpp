#pragma once
// The single-rank reference of the MoE block's backward, written as plainly as the math,
// beside the forward reference (moe/reference.hpp). It is what PyTorch autograd computes on
// transformers' own blocks (tests/data/golden/*/gradients.safetensors) for
// loss = sum(output * dy), in fp32, and it fixes the summation order of every gradient so
// that a distributed backward can reproduce it.
//
// Per token t, with the forward recomputed exactly as the reference computes it:
//   combine:  dw[t,s] = <y[t,s], dy[t]> over h in order (y as stored in T);
//             the row gradient of slot s is w[t,s] * dy[t].
//   expert e = expert(t, s), a = T(silu(g) * u), g = gate_e x, u = up_e x:
//             da = down_e^T (w dy);  dg = da * u * silu'(g);  du = da * silu(g);
//             dx_s = gate_up_e^T [dg; du] (one chain over the 2I rows, gate rows first).
//   router:   from dw through the top-k weights only (the selection has no gradient, and
//             DeepSeek-V3's correction bias is a buffer):
//               softmax families: v = p[chosen], w = v / D (D = sum v) when renormalized,
//                 dv_s = (dw_s - sum_j dw_j w_j) / D (or dw_s), dl_e = p_e (dv_e - sum_s dv_s v_s);
//               DeepSeek-V3: dw' = dw * routed_scaling_factor, with D = sum s + 1e-20 when
//                 normalized ds_s = (dw'_s - sum_j dw'_j s_j / D) / D (else dw'_s),
//                 dl_e = ds_e s_e (1 - s_e) at the chosen experts;
//             dx_router = router^T dl (one chain over the experts).
//   shared experts (DeepSeek-V3): the dense SwiGLU MLP's backward with dy itself.
//   dx[t] = (((dx_0 + dx_1 + ...) in slot order) + dx_shared) + dx_router, each term its
//           own chain from 0, so a term does not depend on where it was computed.
// Parameter gradients sum their per-row terms over tokens in ascending order, slots in
// order (for an expert: its rows in sorted pair order), each as one chain of fused
// multiply-adds from 0.

#include "meshplan/core/detail/public_begin.hpp"

#include <cmath>
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/cpu/detail/backward.hpp"
#include "meshplan/cpu/detail/experts.hpp"
#include "meshplan/cpu/detail/linear.hpp"
#include "meshplan/cpu/detail/router.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/moe/moe_gradients.hpp"
#include "meshplan/moe/moe_weights.hpp"

namespace meshplan {

namespace cpu {

/// The backward of one row through a SwiGLU MLP (gate, up [I, H], down [H, I] of type T),
/// given the row x [H], its forward's pre-activations g, u [I] and stored activation act
/// [I] (cpu::mlp_row hands them out), and the output gradient dout [H]: accumulates
/// dgate, dup [I, H] and ddown [H, I] (fp32, one fma per term onto what they hold) and
/// writes dx [H] as a fresh chain.
template <class T>
void mlp_row_backward(const T* x, const T* gate, const T* up, const T* down, index_t hidden, index_t inter,
                      const float* g, const float* u, const T* act, const float* dout, float* dgate, float* dup,
                      float* ddown, float* dx) {
  std::vector<float> dg(static_cast<std::size_t>(inter)), du(dg);
  for (index_t h = 0; h < hidden; ++h)
    for (index_t i = 0; i < inter; ++i)
      ddown[h * inter + i] = std::fma(dout[h], to_float(act[i]), ddown[h * inter + i]);
  for (index_t i = 0; i < inter; ++i) {
    float da = 0.0f;
    for (index_t h = 0; h < hidden; ++h) da = std::fma(dout[h], to_float(down[h * inter + i]), da);
    dg[i] = da * u[i] * silu_grad(g[i]);
    du[i] = da * silu(g[i]);
  }
  for (index_t i = 0; i < inter; ++i)
    for (index_t h = 0; h < hidden; ++h) {
      dgate[i * hidden + h] = std::fma(dg[i], to_float(x[h]), dgate[i * hidden + h]);
      dup[i * hidden + h] = std::fma(du[i], to_float(x[h]), dup[i * hidden + h]);
    }
  for (index_t h = 0; h < hidden; ++h) {
    float acc = 0.0f;
    for (index_t i = 0; i < inter; ++i) acc = std::fma(dg[i], to_float(gate[i * hidden + h]), acc);
    for (index_t i = 0; i < inter; ++i) acc = std::fma(du[i], to_float(up[i * hidden + h]), acc);
    dx[h] = acc;
  }
}

}  // namespace cpu


/// d(sum(output * dy)) with respect to the input and every parameter of the block, for
/// the forward of reference_moe_forward(model, w, x).
template <StorageType T>
MoEGradients reference_moe_backward(const ModelSpec& model, const MoEWeights<T>& w, const Tensor<T>& x,
                                    const Tensor<float>& dy) {
  check_full_weights(model, w);
  const index_t H = model.hidden_size, I = model.moe_intermediate_size, E = model.num_experts;
  const index_t tokens = x.rank() == 2 ? x.dim(0) : 0;
  x.require_shape("the hidden states", {tokens, H});
  enforce(moe_rules::grad_output_shape(dy.shape(), {tokens, H}));
  const Tensor<float> logits = cpu::router_logits(x, w.router);
  const Routing routing = cpu::route(model, logits, w.correction_bias.span());
  const index_t k = routing.top_k;

  MoEGradients g;
  g.hidden_states = Tensor<float>({tokens, H});
  g.router = Tensor<float>({E, H});
  g.gate_up = Tensor<float>({E, 2 * I, H});
  g.down = Tensor<float>({E, H, I});
  const index_t S = w.has_shared() ? w.shared_gate.dim(0) : 0;
  if (w.has_shared()) {
    g.shared_gate = Tensor<float>({S, H});
    g.shared_up = Tensor<float>({S, H});
    g.shared_down = Tensor<float>({H, S});
  }

  std::vector<float> y(static_cast<std::size_t>(H)), drow(y), dx_part(y), scores(static_cast<std::size_t>(E));
  std::vector<float> pre_gate(static_cast<std::size_t>(std::max(I, S))), pre_up(pre_gate);
  std::vector<float> dw(static_cast<std::size_t>(k)), dlogits(scores);
  std::vector<T> act;
  for (index_t t = 0; t < tokens; ++t) {
    const T* xt = x.data() + t * H;
    const float* dyt = dy.data() + t * H;
    float* dxt = g.hidden_states.data() + t * H;
    for (index_t s = 0; s < k; ++s) {
      const index_t e = routing.expert(t, s);
      const T* gate = w.gate_up.data() + e * 2 * I * H;
      const T* down = w.down.data() + e * H * I;
      cpu::mlp_row(xt, gate, gate + I * H, down, H, I, y.data(), act, pre_gate.data(), pre_up.data());
      float d = 0.0f;
      for (index_t h = 0; h < H; ++h) d = std::fma(to_float(from_float<T>(y[h])), dyt[h], d);
      dw[s] = d;
      for (index_t h = 0; h < H; ++h) drow[h] = routing.weight(t, s) * dyt[h];
      float* dgate = g.gate_up.data() + e * 2 * I * H;
      cpu::mlp_row_backward(xt, gate, gate + I * H, down, H, I, pre_gate.data(), pre_up.data(), act.data(),
                            drow.data(), dgate, dgate + I * H, g.down.data() + e * H * I, dx_part.data());
      for (index_t h = 0; h < H; ++h) dxt[h] += dx_part[h];
    }
    if (w.has_shared()) {
      cpu::mlp_row(xt, w.shared_gate.data(), w.shared_up.data(), w.shared_down.data(), H, S, y.data(), act,
                   pre_gate.data(), pre_up.data());
      cpu::mlp_row_backward(xt, w.shared_gate.data(), w.shared_up.data(), w.shared_down.data(), H, S,
                            pre_gate.data(), pre_up.data(), act.data(), dyt, g.shared_gate.data(),
                            g.shared_up.data(), g.shared_down.data(), dx_part.data());
      for (index_t h = 0; h < H; ++h) dxt[h] += dx_part[h];
    }
    cpu::router_scores(model, logits.row(t), scores);
    cpu::router_backward_row(model, scores, std::span(routing.experts).subspan(static_cast<std::size_t>(t * k), k),
                             std::span(routing.weights).subspan(static_cast<std::size_t>(t * k), k), dw, dlogits);
    for (index_t e = 0; e < E; ++e)
      for (index_t h = 0; h < H; ++h)
        g.router[e * H + h] = std::fma(dlogits[e], to_float(xt[h]), g.router[e * H + h]);
    for (index_t h = 0; h < H; ++h) {
      float acc = 0.0f;
      for (index_t e = 0; e < E; ++e) acc = std::fma(dlogits[e], to_float(w.router[e * H + h]), acc);
      dxt[h] += acc;
    }
  }
  return g;
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
