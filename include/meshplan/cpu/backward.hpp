#pragma once
// The CPU kernels of the MoE block's backward that are not plain products: the SwiGLU's
// derivative, the router's backward through its top-k weights, and the weight-gradient
// products G^T X accumulated onto what a gradient holds (so that a sum over rows split
// into segments, on one rank or over ranks, continues one chain: cpu/gemm.hpp's defined
// order). moe/reference_backward.hpp states the math; the reference and the CPU backend
// both call these, so a row's gradient has the same bits wherever it is computed.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/cpu/gemm.hpp"
#include "meshplan/cpu/linear.hpp"
#include "meshplan/cpu/packed_matrix.hpp"
#include "meshplan/cpu/thread_pool.hpp"
#include "meshplan/model/model_spec.hpp"

namespace meshplan::cpu {

/// d silu(g) / dg = sigma(g) (1 + g (1 - sigma(g))).
inline float silu_grad(float g) noexcept {
  const float sigma = 1.0f / (1.0f + std::exp(-g));
  return sigma * (1.0f + g * (1.0f - sigma));
}

/// One token's logit gradient from the gradients of its k routing weights: `scores` are
/// the router's scores (cpu::router_scores), `ids` and `w` the token's routing.
inline void router_backward_row(const ModelSpec& model, std::span<const float> scores, std::span<const std::int32_t> ids,
                                std::span<const float> w, std::span<const float> dw, std::span<float> dlogits) {
  const std::size_t k = ids.size(), E = scores.size();
  std::fill(dlogits.begin(), dlogits.end(), 0.0f);
  std::vector<float> dv(k);  // the gradient of each chosen score
  if (model.router() == RouterKind::sigmoid_group_topk) {
    const float scale = static_cast<float>(model.routed_scaling_factor);
    float denom = 0.0f;
    for (std::size_t s = 0; s < k; ++s) denom += scores[static_cast<std::size_t>(ids[s])];
    denom += 1e-20f;
    float weighted = 0.0f;  // sum_j dw'_j s_j / D
    for (std::size_t s = 0; s < k; ++s)
      weighted = std::fma(dw[s] * scale, scores[static_cast<std::size_t>(ids[s])] / denom, weighted);
    for (std::size_t s = 0; s < k; ++s) dv[s] = model.norm_topk_prob ? (dw[s] * scale - weighted) / denom : dw[s] * scale;
    for (std::size_t s = 0; s < k; ++s) {
      const float sig = scores[static_cast<std::size_t>(ids[s])];
      dlogits[static_cast<std::size_t>(ids[s])] = dv[s] * sig * (1.0f - sig);
    }
    return;
  }
  const bool renormalized = model.router() == RouterKind::softmax_topk_renorm || model.norm_topk_prob;
  float denom = 0.0f;
  for (std::size_t s = 0; s < k; ++s) denom += scores[static_cast<std::size_t>(ids[s])];
  float weighted = 0.0f;  // sum_j dw_j w_j
  for (std::size_t s = 0; s < k; ++s) weighted = std::fma(dw[s], w[s], weighted);
  for (std::size_t s = 0; s < k; ++s) dv[s] = renormalized ? (dw[s] - weighted) / denom : dw[s];
  float through = 0.0f;  // sum_s dv_s p_s: the softmax's shared term
  for (std::size_t s = 0; s < k; ++s) through = std::fma(dv[s], scores[static_cast<std::size_t>(ids[s])], through);
  for (std::size_t e = 0; e < E; ++e) dlogits[e] = scores[e] * (0.0f - through);
  for (std::size_t s = 0; s < k; ++s) {
    const auto e = static_cast<std::size_t>(ids[s]);
    dlogits[e] = scores[e] * (dv[s] - through);
  }
}

/// The SwiGLU's backward on rows: from the fp32 pre-activations gate_up [rows, 2I] (gate
/// columns first) and the activation's gradient da [rows, I], dgate_up [rows, 2I] with
/// dg = da u silu'(g) and du = da silu(g), the reference's expressions.
inline void swiglu_backward_rows(const float* gate_up, const float* da, index_t rows, index_t inter, float* dgate_up) {
  for (index_t r = 0; r < rows; ++r) {
    const float* g = gate_up + r * 2 * inter;
    const float* u = g + inter;
    const float* d = da + r * inter;
    float* dg = dgate_up + r * 2 * inter;
    float* du = dg + inter;
    for (index_t i = 0; i < inter; ++i) {
      dg[i] = d[i] * u[i] * silu_grad(g[i]);
      du[i] = d[i] * silu(g[i]);
    }
  }
}

/// Row source `a` from its row `first` on.
template <StorageType X>
RowSource<X> rows_from(RowSource<X> a, index_t first) noexcept {
  if (a.index != nullptr) a.index += first;
  else a.base += first * a.ld;
  return a;
}

/// One weight-gradient term c [p, q] += g^T x over rows [0, n) of g [n, p] (fp32, leading
/// dimension ldg) and x [n, q] (rows through `x`), each output one chain over the rows in
/// order, continued from what c holds.
template <StorageType X>
struct OuterTerm {
  const float* g = nullptr;
  index_t ldg = 0;
  RowSource<X> x;
  index_t n = 0, p = 0, q = 0;
  float* c = nullptr;
};

/// dst [cols, rows] = src [rows, cols]^T (src's leading dimension ld), in 32 x 32 tiles so
/// that both sides stay in cache.
inline void transpose(const float* src, index_t rows, index_t cols, index_t ld, float* dst) {
  constexpr index_t tile = 32;
  for (index_t r0 = 0; r0 < rows; r0 += tile)
    for (index_t c0 = 0; c0 < cols; c0 += tile)
      for (index_t c = c0; c < std::min(cols, c0 + tile); ++c)
        for (index_t r = r0; r < std::min(rows, r0 + tile); ++r) dst[c * rows + r] = src[r * ld + c];
}

/// Runs the terms as one batch of products on the pool: g is transposed and x packed
/// transposed (one term per thread at a time), so that each product is cpu/gemm.hpp's
/// c += a b^T with K = the rows.
template <StorageType X>
void accumulate_outer(std::span<const OuterTerm<X>> terms, ThreadPool& pool, Isa isa) {
  std::vector<std::vector<float>> gt(terms.size());
  std::vector<PackedMatrix<float>> xt(terms.size());
  pool.parallel_for(static_cast<index_t>(terms.size()), [&](index_t i) {
    const OuterTerm<X>& t = terms[static_cast<std::size_t>(i)];
    if (t.n == 0 || t.p == 0 || t.q == 0) return;
    std::vector<float>& g = gt[static_cast<std::size_t>(i)];
    g.resize(static_cast<std::size_t>(t.p * t.n));
    transpose(t.g, t.n, t.p, t.ldg, g.data());
    std::vector<X> rows(static_cast<std::size_t>(t.n * t.q));
    for (index_t r = 0; r < t.n; ++r) std::copy_n(t.x.row(r), t.q, rows.data() + r * t.q);
    xt[static_cast<std::size_t>(i)] = PackedMatrix<float>::pack_transposed(rows.data(), t.n, t.q, t.q);
  });
  std::vector<GemmTask<float>> tasks;
  for (std::size_t i = 0; i < terms.size(); ++i)
    if (!gt[i].empty()) tasks.push_back({{gt[i].data(), terms[i].n}, terms[i].p, &xt[i], terms[i].c, terms[i].q, true});
  gemm_batch<float>(tasks, pool, isa);
}

}  // namespace meshplan::cpu
