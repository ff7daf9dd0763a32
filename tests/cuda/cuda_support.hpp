#pragma once
// Helpers of the CUDA tests: host vectors to device buffers and back (on the legacy
// default stream, waiting), random data, and bit-level comparison of 16-bit types.

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <vector>

#include "meshplan/core/size.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/cuda/core/buffer.cuh"
#include "meshplan/model/model_spec.hpp"

namespace cuda_support {

namespace mp = meshplan;
using mp::index_t;

template <class T>
mp::cuda::DeviceBuffer<T> upload(const std::vector<T>& host) {
  mp::cuda::DeviceBuffer<T> d;
  d.upload(std::span<const T>(host), nullptr);
  MESHPLAN_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  return d;
}

template <class T>
std::vector<T> download(const mp::cuda::DeviceBuffer<T>& d) {
  return d.download(nullptr);
}

/// n values of T with random bits (any pattern: the row movers copy bits).
template <class T>
std::vector<T> random_bits(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<T> v(n);
  std::vector<unsigned char> bytes(n * sizeof(T));
  for (auto& b : bytes) b = static_cast<unsigned char>(rng());
  if (n > 0) std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

/// Whether two buffers hold the same bits.
template <class A, class B>
bool same_bits(const std::vector<A>& a, const std::vector<B>& b) {
  static_assert(sizeof(A) == sizeof(B));
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(A)) == 0);
}

/// Whether DeepSeek-V3's router could choose differently on the GPU for one token: at one
/// of its decisions (which groups are kept, which experts are chosen and in which slot
/// order) two candidates are within `gap` of each other. The logits are the same bits on
/// both sides, but the sigmoid goes through each side's own exp (a few ulp apart), so only
/// such near-ties can swap. Softmax routers rank by the logits themselves and never swap.
inline bool near_tie(const mp::ModelSpec& m, std::span<const float> logits, std::span<const float> bias,
                     double gap = 2e-6) {
  if (m.router() != mp::RouterKind::sigmoid_group_topk) return false;
  const index_t E = m.num_experts, groups = m.n_group, per = E / groups, k = m.num_experts_per_tok;
  std::vector<double> c(static_cast<std::size_t>(E));
  for (index_t e = 0; e < E; ++e) c[e] = 1.0 / (1.0 + std::exp(-static_cast<double>(logits[e]))) + bias[e];
  // The descending values' gaps from the first to the (count + 1)-th.
  auto close_at_top = [](std::vector<double> v, std::size_t count, double tol) {
    std::sort(v.rbegin(), v.rend());
    for (std::size_t i = 1; i < v.size() && i <= count; ++i)
      if (v[i - 1] - v[i] < tol) return true;
    return false;
  };
  std::vector<std::pair<double, index_t>> group_score;
  for (index_t g = 0; g < groups; ++g) {
    std::vector<double> in(c.begin() + g * per, c.begin() + (g + 1) * per);
    std::sort(in.rbegin(), in.rend());
    group_score.emplace_back(in[0] + in[1], g);
  }
  std::sort(group_score.rbegin(), group_score.rend());
  std::vector<double> scores;
  for (const auto& [score, g] : group_score) scores.push_back(score);
  if (close_at_top(scores, static_cast<std::size_t>(m.topk_group), 2 * gap)) return true;
  std::vector<double> eligible;
  for (index_t i = 0; i < m.topk_group; ++i) {
    const index_t g = group_score[static_cast<std::size_t>(i)].second;
    eligible.insert(eligible.end(), c.begin() + g * per, c.begin() + (g + 1) * per);
  }
  return close_at_top(eligible, static_cast<std::size_t>(k), gap);
}

/// Whether any token of `logits` [tokens, E] has a near_tie.
inline bool any_near_tie(const mp::ModelSpec& m, const mp::Tensor<float>& logits, std::span<const float> bias) {
  for (index_t t = 0; t < (logits.rank() == 2 ? logits.dim(0) : 0); ++t)
    if (near_tie(m, logits.row(t), bias)) return true;
  return false;
}

}  // namespace cuda_support
