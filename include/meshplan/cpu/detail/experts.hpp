#pragma once
// The expert MLP with SwiGLU: y = down(silu(gate(x)) * up(x)), fp32 accumulation.
//
// One row at a time, in a fixed order: gate and up as dot products over the hidden dim,
// the activation silu(g) * u rounded to the storage type (as a kernel would store it),
// then down as a dot product over the intermediate dim. A row's output is therefore the
// same on every rank. With the intermediate dim split (expert tensor parallelism) a rank
// computes the partial sum over its slice; the partials add up to the full sum.
//
// Fused experts as in transformers 5: gate_up [E, 2I, H] (gate rows first, then up rows),
// down [E, H, I].

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cstddef>
#include <span>
#include <vector>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/cpu/detail/linear.hpp"
#include "meshplan/core/tensor.hpp"

namespace meshplan::cpu {

/// y[H] (fp32) for one row x[H]: gate [I, H], up [I, H], down [H, I], all of type T.
/// `act` gets the stored activation; `pre_gate` and `pre_up`, when given, the fp32
/// pre-activations [I] (what the backward needs).
template <class T>
void mlp_row(const T* x, const T* gate, const T* up, const T* down, index_t hidden, index_t inter, float* y,
             std::vector<T>& act, float* pre_gate = nullptr, float* pre_up = nullptr) {
  act.resize(static_cast<std::size_t>(inter));
  for (index_t i = 0; i < inter; ++i) {
    float g = dot(x, gate + i * hidden, hidden);
    float u = dot(x, up + i * hidden, hidden);
    act[static_cast<std::size_t>(i)] = from_float<T>(silu(g) * u);
    if (pre_gate) pre_gate[i] = g;
    if (pre_up) pre_up[i] = u;
  }
  for (index_t h = 0; h < hidden; ++h) y[h] = dot(act.data(), down + h * inter, inter);
}

/// Grouped expert MLP: rows [N, H] grouped by local expert (group j holds rows
/// [offsets[j], offsets[j+1])), gate_up [E_l, 2I_l, H], down [E_l, H, I_l]; y [N, H] fp32.
template <class T>
void grouped_expert_mlp(std::span<const T> rows, std::span<const index_t> offsets, const Tensor<T>& gate_up,
                        const Tensor<T>& down, std::span<float> y) {
  const index_t experts = gate_up.dim(0), inter = gate_up.dim(1) / 2, hidden = gate_up.dim(2);
  down.require_shape("the experts' down_proj", {experts, hidden, inter});
  std::vector<T> act;
  for (index_t j = 0; j < experts; ++j) {
    const T* gate = gate_up.data() + j * 2 * inter * hidden;
    const T* up = gate + inter * hidden;
    const T* d = down.data() + j * hidden * inter;
    for (index_t r = offsets[j]; r < offsets[j + 1]; ++r)
      mlp_row(rows.data() + r * hidden, gate, up, d, hidden, inter, y.data() + r * hidden, act);
  }
}

/// A dense SwiGLU MLP (DeepSeek-V3's shared experts) on x [T, H]: gate, up [I, H], down
/// [H, I]; y [T, H] fp32.
template <class T>
void dense_mlp(const Tensor<T>& x, const Tensor<T>& gate, const Tensor<T>& up, const Tensor<T>& down,
               std::span<float> y) {
  const index_t tokens = x.dim(0), hidden = x.dim(1), inter = gate.dim(0);
  std::vector<T> act;
  for (index_t t = 0; t < tokens; ++t)
    mlp_row(x.data() + t * hidden, gate.data(), up.data(), down.data(), hidden, inter, y.data() + t * hidden, act);
}

}  // namespace meshplan::cpu
