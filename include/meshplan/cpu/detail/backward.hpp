#pragma once
// The CPU kernels of the MoE block's backward that are not plain products: the SwiGLU's
// derivative, the router's backward through its top-k weights, and the weight-gradient
// products G^T X accumulated onto what a gradient holds (so that a sum over rows split
// into segments, on one rank or over ranks, continues one chain: cpu/detail/gemm.hpp's defined
// order). moe/reference_backward.hpp states the math; the reference and the CPU backend
// both call these, so a row's gradient has the same bits wherever it is computed.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/cpu/detail/fast_math.hpp"
#include "meshplan/cpu/detail/gemm.hpp"
#include "meshplan/cpu/isa.hpp"
#include "meshplan/cpu/detail/linear.hpp"
#include "meshplan/cpu/detail/packed_matrix.hpp"
#include "meshplan/cpu/thread_pool.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/model/routing.hpp"

namespace meshplan::cpu {

/// d silu(g) / dg, on exp_fixed (cpu/detail/fast_math.hpp): the bits of every vector path.
inline float silu_grad(float g) noexcept { return silu_grad_fixed(g); }

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

namespace backward_detail {
// The routing weights' gradients of one token: dw[s] = one fma chain over h of
// y_s[h] dy[h], for its k slots (rows y_s). The k chains run side by side (up to 8 at a
// time) so that the processor overlaps their latencies; each stays one chain in h order.
template <class Row>
inline void slot_dots(const Row* const* y, index_t k, const float* dy, index_t hidden, float* dw) {
  constexpr index_t lanes = 8;
  for (index_t s0 = 0; s0 < k; s0 += lanes) {
    const index_t n = std::min(lanes, k - s0);
    float acc[lanes] = {};
    for (index_t h = 0; h < hidden; ++h)
      for (index_t s = 0; s < n; ++s) acc[s] = std::fma(to_float(y[s0 + s][h]), dy[h], acc[s]);
    for (index_t s = 0; s < n; ++s) dw[s0 + s] = acc[s];
  }
}
#if defined(__x86_64__)
// The same chains with the fma instruction inlined (std::fma is a library call where the
// baseline target has no fma); fma is exact either way, so the bits are the same.
template <class Row>
__attribute__((target("fma"))) void slot_dots_fma(const Row* const* y, index_t k, const float* dy, index_t hidden,
                                                  float* dw) {
  slot_dots(y, k, dy, hidden, dw);
}
#endif
}  // namespace backward_detail

/// The combine's backward for tokens [t0, t1): for each pair (t, s) at sorted position
/// i = inverse[t k + s], the row gradient rows[i] = w[t, s] dy[t] and the routing weight's
/// gradient dw[t k + s] = <y[i], dy[t]>, one chain over h.
template <class Row>
void combine_backward_tokens(const Routing& routing, const Row* y, std::span<const std::int32_t> inverse,
                             const float* dy, index_t hidden, float* rows, float* dw, index_t t0, index_t t1, Isa isa) {
  const index_t k = routing.top_k;
  std::vector<const Row*> slot_rows(static_cast<std::size_t>(k));
  for (index_t t = t0; t < t1; ++t) {
    const float* g = dy + t * hidden;
    for (index_t s = 0; s < k; ++s) {
      const index_t i = inverse[static_cast<std::size_t>(t * k + s)];
      const float w = routing.weight(t, s);
      float* out = rows + i * hidden;
      for (index_t h = 0; h < hidden; ++h) out[h] = w * g[h];
      slot_rows[static_cast<std::size_t>(s)] = y + i * hidden;
    }
#if defined(__x86_64__)
    if (isa != Isa::portable) {
      backward_detail::slot_dots_fma(slot_rows.data(), k, g, hidden, dw + t * k);
      continue;
    }
#endif
    (void)isa;
    backward_detail::slot_dots(slot_rows.data(), k, g, hidden, dw + t * k);
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
/// order, continued from what c holds; with `fresh`, c = g^T x with every chain from +0
/// (what c held is not read; zeros where n = 0).
template <StorageType X>
struct OuterTerm {
  const float* g = nullptr;
  index_t ldg = 0;
  RowSource<X> x;
  index_t n = 0, p = 0, q = 0;
  float* c = nullptr;
  bool fresh = false;
};

/// Runs the terms as one batch of products on the pool, each cpu/detail/gemm.hpp's c += a b^T
/// with K = the rows: a is g read transposed in place (RowSource::transposed), b is x's
/// rows packed as the transpose (one term per thread at a time, or one term over all the
/// threads). `packs` holds the packings from one call to the next: fresh ones would fault
/// their pages in at every step.
template <StorageType X>
void accumulate_outer(std::span<const OuterTerm<X>> terms, ThreadPool& pool, Isa isa,
                      std::vector<PackedMatrix<float>>& packs) {
  if (packs.size() < terms.size()) packs.resize(terms.size());
  auto empty = [](const OuterTerm<X>& t) { return t.n == 0 || t.p == 0 || t.q == 0; };
  auto pack = [&](std::size_t i, ThreadPool* panels_on) {
    const OuterTerm<X>& t = terms[i];
    if (!empty(t)) packs[i].assign_transposed([&](index_t r) { return t.x.row(r); }, t.n, t.q, panels_on);
  };
  if (static_cast<index_t>(terms.size()) < pool.size())
    for (std::size_t i = 0; i < terms.size(); ++i) pack(i, &pool);
  else
    pool.parallel_for(static_cast<index_t>(terms.size()), [&](index_t i) { pack(static_cast<std::size_t>(i), nullptr); });
  std::vector<GemmTask<float>> tasks;
  for (std::size_t i = 0; i < terms.size(); ++i) {
    const OuterTerm<X>& t = terms[i];
    if (!empty(t))
      tasks.push_back({RowSource<float>::transposed(t.g, t.ldg), t.p, &packs[i], t.c, t.q, !t.fresh});
    else if (t.fresh && t.p > 0 && t.q > 0)
      std::fill(t.c, t.c + t.p * t.q, 0.0f);  // the sum of no rows
  }
  gemm_batch<float>(tasks, pool, isa);
}

}  // namespace meshplan::cpu
