#pragma once
// Shared by the ThreadComm and the MPI tests of the MoE block: weights and batches whose
// routing has a chosen shape, mesh sizes, and the comparison of the ranks' outputs with
// the single-rank reference.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "meshplan/core/tensor.hpp"
#include "meshplan/moe/moe_weights.hpp"
#include "meshplan/moe/token_layout.hpp"
#include "meshplan/placement/layout_spec.hpp"

namespace moe_cases {

namespace mp = meshplan;
using mp::index_t;

enum class RoutingKind { uniform, skewed, one_expert, idle_experts };
constexpr RoutingKind all_routings[] = {RoutingKind::uniform, RoutingKind::skewed, RoutingKind::one_expert,
                                        RoutingKind::idle_experts};

inline const char* name(RoutingKind k) {
  switch (k) {
    case RoutingKind::uniform: return "uniform";
    case RoutingKind::skewed: return "skewed";
    case RoutingKind::one_expert: return "one expert";
    case RoutingKind::idle_experts: return "idle experts";
  }
  return "?";
}

/// Weights and a batch whose routing has the wanted shape. Hidden dim 0 of every token is
/// positive, so the router weights on it steer the choice: a decaying bias (skewed), one
/// expert far ahead (one_expert), the upper half far behind (idle_experts).
template <class T>
std::pair<mp::MoEWeights<T>, mp::Tensor<T>> make_case(const mp::ModelSpec& m, RoutingKind kind, index_t tokens,
                                                      std::uint64_t seed) {
  auto w = mp::random_moe_weights<float>(m, seed);
  const index_t H = m.hidden_size, E = m.num_experts;
  mp::Tensor<float> x({tokens, H});
  std::mt19937 rng(static_cast<unsigned>(seed) + 17);
  std::normal_distribution<float> normal;
  for (auto& v : x.vector()) v = normal(rng);
  for (index_t t = 0; t < tokens; ++t) x[t * H] = 1.0f + std::abs(x[t * H]);
  for (index_t e = 0; e < E; ++e) {
    float bias = 0;
    if (kind == RoutingKind::skewed) bias = 4.0f * std::exp(-0.5f * static_cast<float>(e));
    if (kind == RoutingKind::one_expert) bias = e == E / 2 + 1 ? 20.0f : 0.0f;
    if (kind == RoutingKind::idle_experts) bias = e >= E / 2 ? -20.0f : 0.0f;
    w.router[e * H] += bias;
    // DeepSeek-V3 chooses by sigmoid score plus its correction bias: steer that too, since a
    // saturated sigmoid no longer ranks the experts.
    if (!w.correction_bias.empty()) w.correction_bias[e] += bias;
  }
  if constexpr (std::is_same_v<T, float>) {
    return {std::move(w), std::move(x)};
  } else {
    mp::MoEWeights<T> b{mp::convert<T>(w.router),      w.correction_bias,           mp::convert<T>(w.gate_up),
                        mp::convert<T>(w.down),        mp::convert<T>(w.shared_gate), mp::convert<T>(w.shared_up),
                        mp::convert<T>(w.shared_down)};
    return {std::move(b), mp::convert<T>(x)};
  }
}

/// Sizes of a dp x ep x tp mesh.
struct Sizes {
  index_t dp = 1, ep = 1, tp = 1;
  index_t world() const { return dp * ep * tp; }
  std::string text() const {
    return "dp=" + std::to_string(dp) + ",ep=" + std::to_string(ep) + ",tp=" + std::to_string(tp);
  }
};

/// How a rank's output compares with the reference rows of the tokens it holds.
struct Comparison {
  index_t mismatches = 0;  // elements not bit-identical
  double max_diff = 0;     // largest |difference|
  double max_ref = 0;      // largest |reference|
  bool shape_ok = true;
};

template <class T>
void compare_rows(const mp::Tensor<T>& out, const mp::Tensor<T>& ref, const mp::LayoutSpec& tokens, index_t rank,
                  Comparison& c) {
  const index_t H = ref.dim(1);
  if (out.shape() != std::vector<index_t>{tokens.local_extent(0, rank), H}) {
    c.shape_ok = false;
    return;
  }
  index_t row = 0;
  for (const auto& run : tokens.held_indices(0, rank))
    for (index_t t = run.begin; t < run.begin + run.size; ++t, ++row)
      for (index_t h = 0; h < H; ++h) {
        const float a = mp::to_float(out[row * H + h]), b = mp::to_float(ref[t * H + h]);
        c.mismatches += !(out[row * H + h] == ref[t * H + h]);
        c.max_diff = std::max(c.max_diff, static_cast<double>(std::abs(a - b)));
        c.max_ref = std::max(c.max_ref, static_cast<double>(std::abs(b)));
      }
}

/// How a whole batch's output compares with the reference.
template <class T>
Comparison compare_whole(const mp::Tensor<T>& out, const mp::Tensor<T>& ref) {
  Comparison c;
  c.shape_ok = out.shape() == ref.shape();
  for (index_t i = 0; c.shape_ok && i < ref.numel(); ++i) {
    const float a = mp::to_float(out[i]), b = mp::to_float(ref[i]);
    c.mismatches += !(out[i] == ref[i]);
    c.max_diff = std::max(c.max_diff, static_cast<double>(std::abs(a - b)));
    c.max_ref = std::max(c.max_ref, static_cast<double>(std::abs(b)));
  }
  return c;
}

/// The rows of `x` a rank holds.
template <class T>
mp::Tensor<T> rows_of(const mp::Tensor<T>& x, const mp::LayoutSpec& tokens, index_t rank) {
  return mp::held_rows(tokens, x, rank);
}

/// The tolerance of plans that split a sum over ranks (see moe_block_test.cpp).
template <class T>
constexpr double split_sum_rtol() {
  return std::is_same_v<T, float> ? 1e-5 : 1.6e-2;
}

}  // namespace moe_cases
