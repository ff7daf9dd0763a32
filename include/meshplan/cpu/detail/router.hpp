#pragma once
// The routers of the three MoE families, exactly as transformers computes them
// (docs/execution.md), in fp32. Ties between equal scores go to the lower expert index (and, for DeepSeek-V3's
// groups, to the lower group index); the k chosen experts are listed in descending score
// order, which is the slot order the combine sums in.
//
//   Mixtral:     softmax over all experts, top-k, weights renormalized to sum 1.
//   Qwen3-MoE:   softmax over all experts, top-k, renormalized only if norm_topk_prob.
//   DeepSeek-V3: s = sigmoid(logits); c = s + e_score_correction_bias (selection only);
//                group score = sum of the top 2 of c in each of n_group groups; keep the
//                topk_group best groups; top-k of c over the kept experts; weights = s at
//                those experts, normalized by (sum + 1e-20) if norm_topk_prob, times
//                routed_scaling_factor.
//
// Logits that are not finite (NaN or infinite) are refused with RuleViolation
// (router_logits_finite) naming the token: the scores would be meaningless.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/cpu/detail/linear.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/model/routing.hpp"

namespace meshplan {

namespace cpu {

/// The k largest of `scores` (ties to the lower index), in descending order.
inline void top_k(std::span<const float> scores, index_t k, std::span<std::int32_t> out) {
  std::vector<std::int32_t> idx(scores.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](std::int32_t a, std::int32_t b) {
    return scores[static_cast<std::size_t>(a)] > scores[static_cast<std::size_t>(b)] ||
           (scores[static_cast<std::size_t>(a)] == scores[static_cast<std::size_t>(b)] && a < b);
  });
  std::copy(idx.begin(), idx.begin() + k, out.begin());
}

/// Router logits [tokens, experts] in fp32: x [tokens, hidden] times gate [experts, hidden].
template <class T>
Tensor<float> router_logits(const Tensor<T>& x, const Tensor<T>& gate) {
  const index_t tokens = x.dim(0), hidden = x.dim(1), experts = gate.dim(0);
  gate.require_shape("the router weight", {experts, hidden});
  Tensor<float> logits({tokens, experts});
  linear<T, T>(x.span(), tokens, gate.span(), experts, hidden, logits.span());
  return logits;
}

/// One token's scores from its logits: sigmoids (DeepSeek-V3), or the softmax over all
/// experts (max subtracted, sums in expert order). The routing and its backward both read
/// them from here.
inline void router_scores(const ModelSpec& model, std::span<const float> l, std::span<float> scores) {
  const std::size_t E = l.size();
  if (model.router() == RouterKind::sigmoid_group_topk) {
    for (std::size_t e = 0; e < E; ++e) scores[e] = 1.0f / (1.0f + std::exp(-l[e]));
    return;
  }
  float max = l[0];
  for (std::size_t e = 1; e < E; ++e) max = std::max(max, l[e]);
  float total = 0.0f;
  for (std::size_t e = 0; e < E; ++e) total += (scores[e] = std::exp(l[e] - max));
  for (std::size_t e = 0; e < E; ++e) scores[e] /= total;
}

/// The first non-finite logit, or ok.
inline Message check_logits(const Tensor<float>& logits) {
  const index_t tokens = logits.rank() == 2 ? logits.dim(0) : 0, experts = logits.rank() == 2 ? logits.dim(1) : 0;
  for (index_t t = 0; t < tokens; ++t)
    for (index_t e = 0; e < experts; ++e)
      if (auto m = routing_rules::router_logits_finite(t, e, logits[t * experts + e]); !m.ok()) return m;
  return {};
}

/// The routing of every token from its logits, by the model's router.
inline Routing route(const ModelSpec& model, const Tensor<float>& logits, std::span<const float> correction_bias = {}) {
  const index_t tokens = logits.rank() == 2 ? logits.dim(0) : 0;
  const index_t E = model.num_experts, k = model.num_experts_per_tok;
  logits.require_shape("the router logits", {tokens, E});
  enforce(check_logits(logits));

  Routing r{tokens, k, std::vector<std::int32_t>(static_cast<std::size_t>(tokens * k)),
            std::vector<float>(static_cast<std::size_t>(tokens * k))};
  std::vector<float> scores(static_cast<std::size_t>(E));
  for (index_t t = 0; t < tokens; ++t) {
    std::span<const float> l = logits.row(t);
    std::span<std::int32_t> ids(r.experts.data() + t * k, static_cast<std::size_t>(k));
    std::span<float> w(r.weights.data() + t * k, static_cast<std::size_t>(k));

    router_scores(model, l, scores);
    if (model.router() == RouterKind::sigmoid_group_topk) {
      enforce(tensor_rules::shape_matches("e_score_correction_bias", {static_cast<index_t>(correction_bias.size())}, {E}));
      std::vector<float> choice(static_cast<std::size_t>(E));
      for (index_t e = 0; e < E; ++e) choice[e] = scores[e] + correction_bias[e];
      const index_t groups = model.n_group, per_group = E / groups;
      std::vector<float> group_score(static_cast<std::size_t>(groups));
      std::int32_t best2[2];
      for (index_t g = 0; g < groups; ++g) {
        top_k(std::span<const float>(choice).subspan(g * per_group, per_group), 2, best2);
        group_score[g] = choice[g * per_group + best2[0]] + choice[g * per_group + best2[1]];
      }
      std::vector<std::int32_t> kept(static_cast<std::size_t>(model.topk_group));
      top_k(group_score, model.topk_group, kept);
      std::vector<float> masked(static_cast<std::size_t>(E), -std::numeric_limits<float>::infinity());
      for (std::int32_t g : kept)
        for (index_t e = g * per_group; e < (g + 1) * per_group; ++e) masked[e] = choice[e];
      top_k(masked, k, ids);
      float sum = 0.0f;
      for (index_t s = 0; s < k; ++s) sum += (w[s] = scores[ids[s]]);
      for (index_t s = 0; s < k; ++s) {
        if (model.norm_topk_prob) w[s] /= sum + 1e-20f;
        w[s] *= static_cast<float>(model.routed_scaling_factor);
      }
      continue;
    }

    top_k(scores, k, ids);
    float sum = 0.0f;
    for (index_t s = 0; s < k; ++s) sum += (w[s] = scores[ids[s]]);
    if (model.router() == RouterKind::softmax_topk_renorm || model.norm_topk_prob)
      for (index_t s = 0; s < k; ++s) w[s] /= sum;
  }
  return r;
}

}  // namespace cpu
}  // namespace meshplan
