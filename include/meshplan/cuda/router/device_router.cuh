#pragma once
// DeviceRouter: the routers of the three MoE families fused into one kernel: the logits of
// a token (x . gate_e for every expert e), then its top-k experts and weights, exactly as
// cpu/router.hpp and docs/execution.md define them.
//
// One block per token. Each thread computes whole logits, summing over the hidden dim in
// order with separate multiplies and adds (no fused multiply-add), as the CPU reference
// does: the logits are the reference's bit for bit, so the choice of experts is too, and a
// token's result never depends on the other tokens of the batch (which ranks hold which
// tokens cannot change a routing). The selection then runs on one thread per token, with
// ties to the lower index. A non-finite logit is reported through *first_bad (read by the
// caller at its one synchronization point; see bad_logit).

#include <cuda_runtime_api.h>

#include <cfloat>
#include <cstdint>
#include <limits>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/model/routing.hpp"
#include "meshplan/cuda/core/device_types.cuh"
#include "meshplan/cuda/core/error.cuh"
#include "meshplan/model/model_rules.hpp"
#include "meshplan/model/model_spec.hpp"

namespace meshplan::cuda {

/// The router's parameters, as plain values for the kernel.
struct RouterParams {
  int experts = 0;
  int top_k = 0;
  int hidden = 0;
  int kind = 0;  // RouterKind
  bool normalize = false;
  int groups = 1;
  int kept_groups = 1;
  float scaling = 1.0f;

  static RouterParams of(const ModelSpec& m) {
    return {static_cast<int>(m.num_experts),
            static_cast<int>(m.num_experts_per_tok),
            static_cast<int>(m.hidden_size),
            static_cast<int>(m.router()),
            m.norm_topk_prob,
            static_cast<int>(m.n_group > 0 ? m.n_group : 1),
            static_cast<int>(m.topk_group > 0 ? m.topk_group : 1),
            static_cast<float>(m.routed_scaling_factor)};
  }
};

namespace kernels {

/// The index of the largest of v[0..n) not yet taken (ties to the lower index).
__device__ inline int arg_max(const float* v, int n, const bool* taken) {
  int best = -1;
  for (int e = 0; e < n; ++e)
    if (!taken[e] && (best < 0 || v[e] > v[best])) best = e;
  return best;
}

/// Dynamic shared memory: experts floats (logits), experts floats (scores), experts bools.
template <class T>
__global__ void route(const T* x, const T* gate, const float* bias, RouterParams p, int tokens, std::int32_t* ids,
                      float* weights, float* logits_out, unsigned long long* first_bad) {
  extern __shared__ float shared[];
  float* logits = shared;
  float* scores = shared + p.experts;
  bool* taken = reinterpret_cast<bool*>(scores + p.experts);
  const int t = blockIdx.x;
  if (t >= tokens) return;
  const T* row = x + static_cast<long long>(t) * p.hidden;
  for (int e = threadIdx.x; e < p.experts; e += blockDim.x) {
    const T* w = gate + static_cast<long long>(e) * p.hidden;
    float acc = 0.0f;
    for (int h = 0; h < p.hidden; ++h) acc = __fadd_rn(acc, __fmul_rn(to_float(row[h]), to_float(w[h])));
    logits[e] = acc;
    taken[e] = false;
    if (logits_out) logits_out[static_cast<long long>(t) * p.experts + e] = acc;
    if (!isfinite(acc))
      atomicMin(first_bad, (static_cast<unsigned long long>(t) * p.experts + e) * 2 + (isnan(acc) ? 1 : 0));
  }
  __syncthreads();
  if (threadIdx.x != 0) return;

  std::int32_t* my_ids = ids + static_cast<long long>(t) * p.top_k;
  float* my_weights = weights + static_cast<long long>(t) * p.top_k;
  if (p.kind == static_cast<int>(RouterKind::sigmoid_group_topk)) {
    // scores = sigmoid(logits); choice = scores + bias, kept only in the best groups.
    for (int e = 0; e < p.experts; ++e) scores[e] = 1.0f / (1.0f + expf(-logits[e]));
    const int per_group = p.experts / p.groups;
    // Group scores (top-2 sums of choice) written into logits[0..groups) (logits are done).
    for (int g = 0; g < p.groups; ++g) {
      float first = -FLT_MAX, second = -FLT_MAX;
      for (int e = g * per_group; e < (g + 1) * per_group; ++e) {
        const float c = scores[e] + bias[e];
        if (c > first) {
          second = first;
          first = c;
        } else if (c > second) {
          second = c;
        }
      }
      logits[g] = first + second;
    }
    for (int g = 0; g < p.groups; ++g) taken[g] = false;
    // Keep the best kept_groups groups: mark their experts eligible in taken[groups..].
    bool* eligible = taken + p.groups;
    for (int e = 0; e < p.experts; ++e) eligible[e] = false;
    for (int kept = 0; kept < p.kept_groups; ++kept) {
      const int g = arg_max(logits, p.groups, taken);
      taken[g] = true;
      for (int e = g * per_group; e < (g + 1) * per_group; ++e) eligible[e] = true;
    }
    float sum = 0.0f;
    for (int s = 0; s < p.top_k; ++s) {
      int best = -1;
      for (int e = 0; e < p.experts; ++e)
        if (eligible[e] && (best < 0 || scores[e] + bias[e] > scores[best] + bias[best])) best = e;
      eligible[best] = false;
      my_ids[s] = best;
      sum += (my_weights[s] = scores[best]);
    }
    for (int s = 0; s < p.top_k; ++s) {
      if (p.normalize) my_weights[s] /= sum + 1e-20f;
      my_weights[s] *= p.scaling;
    }
    return;
  }
  // Softmax over all experts, max subtracted, sums in expert order.
  float max = logits[0];
  for (int e = 1; e < p.experts; ++e) max = fmaxf(max, logits[e]);
  float total = 0.0f;
  for (int e = 0; e < p.experts; ++e) total += (scores[e] = expf(logits[e] - max));
  for (int e = 0; e < p.experts; ++e) scores[e] /= total;
  float sum = 0.0f;
  for (int s = 0; s < p.top_k; ++s) {
    const int best = arg_max(scores, p.experts, taken);
    taken[best] = true;
    my_ids[s] = best;
    sum += (my_weights[s] = scores[best]);
  }
  if (p.kind == static_cast<int>(RouterKind::softmax_topk_renorm) || p.normalize)
    for (int s = 0; s < p.top_k; ++s) my_weights[s] /= sum;
}

}  // namespace kernels

namespace router_rules {
/// The model rules a router's parameters must meet (top-k within the experts; DeepSeek-V3's
/// groups), checked by the same functions as a config, and what one block per token can hold.
inline Message params_valid(const RouterParams& p, long long tokens) {
  if (tokens < 0 || tokens > INT32_MAX)
    return Message::rule("device_sizes") << "the token count " << tokens << " is outside 0.." << INT32_MAX;
  const auto kind = static_cast<RouterKind>(p.kind);
  ModelSpec m{};
  m.family = kind == RouterKind::sigmoid_group_topk    ? Family::deepseek_v3
             : kind == RouterKind::softmax_topk_renorm ? Family::mixtral
                                                       : Family::qwen3_moe;
  m.num_experts = p.experts;
  m.num_experts_per_tok = p.top_k;
  m.n_group = p.groups;
  m.topk_group = p.kept_groups;
  if (Message problem =
          first_of({model_rules::positive("num_experts", p.experts), model_rules::positive("hidden_size", p.hidden),
                    model_rules::top_k_fits(m), model_rules::groups_consistent(m)});
      !problem.ok())
    return problem;
  if (2 * static_cast<long long>(p.experts) * sizeof(float) + 2 * p.experts > 48 * 1024)
    return Message::rule("device_sizes") << "the fused router keeps " << p.experts
                                         << " experts' scores in shared memory; at most about 5000 fit";
  return {};
}
}  // namespace router_rules

/// The first non-finite logit as the router kernel reports it: no_bad_logit, or
/// (token * experts + expert) * 2 + (1 if NaN).
inline constexpr unsigned long long no_bad_logit = ~0ULL;

/// The report of the router kernel as the CPU router's message (the same rule and text).
inline Message bad_logit(unsigned long long first_bad, int experts) {
  if (first_bad == no_bad_logit) return {};
  const auto at = static_cast<long long>(first_bad / 2);
  const float value = first_bad % 2 ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  return routing_rules::router_logits_finite(at / experts, at % experts, value);
}

struct DeviceRouter {
  /// ids [tokens, k], weights [tokens, k]; logits [tokens, E] if not null; bias [E] for
  /// DeepSeek-V3. *first_bad (set to no_bad_logit by the caller) receives the first
  /// non-finite logit.
  template <DeviceElement T>
  static void route(const T* x, const T* gate, const float* bias, const RouterParams& p, long long tokens,
                    std::int32_t* ids, float* weights, float* logits, unsigned long long* first_bad,
                    cudaStream_t stream) {
    enforce(router_rules::params_valid(p, tokens));
    if (p.kind == static_cast<int>(RouterKind::sigmoid_group_topk) && !bias)
      throw RuleViolation(Message::rule("device_sizes") << "DeepSeek-V3's router needs e_score_correction_bias");
    if (tokens == 0) return;
    const std::size_t shared = 2 * sizeof(float) * static_cast<std::size_t>(p.experts) +
                               2 * static_cast<std::size_t>(p.experts);  // bools: taken and eligible
    kernels::route<T><<<static_cast<unsigned>(tokens), 128, shared, stream>>>(
        x, gate, bias, p, static_cast<int>(tokens), ids, weights, logits, first_bad);
    MESHPLAN_CUDA_CHECK(cudaGetLastError());
  }
};

}  // namespace meshplan::cuda
