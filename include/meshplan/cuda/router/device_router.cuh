#pragma once
// DeviceRouter: the routers of the three MoE families fused into one kernel: the logits of
// a token (x . gate_e for every expert e), then its top-k experts and weights, as
// cpu/detail/router.hpp and docs/execution.md define them.
//
// The logits are a small GEMM (tokens x hidden times hidden x experts), and at real sizes
// (32K tokens, 128 experts, hidden 2048) its cost is what matters. A block takes a tile of
// tokens and, one tile of experts after another, stages the tokens' rows and the gate's rows
// through shared memory a chunk of the hidden dim at a time (16-byte loads where the rows
// allow), so every gate element read from memory serves the whole token tile and every
// token element the whole expert tile; each thread keeps 4 x 4 (token, expert) logits in
// registers. Each logit is still one fp32 accumulator that runs over h = 0..H-1 in order
// with fused multiply-adds, as cpu/detail/linear.hpp's dot does, so the logits are the CPU's bit for
// bit, whatever the tiles, and a token's logits never depend on the other tokens of the
// batch (which ranks hold which tokens cannot change a routing). The block then keeps its
// tokens' logits in shared memory and one warp per token selects: scores, warp-wide arg
// maxima (ties to the lower index), and sums in the CPU's order. A non-finite logit is
// reported through *first_bad (read by the caller at its one synchronization point; see
// bad_logit).
//
// What holds against the CPU router (see router_agreement below for the bounds):
//  - the logits are bit-identical;
//  - the scores go through exp, CUDA's expf (within 2 ulp) on the GPU and glibc's (within
//    1 ulp) on the CPU, so they may differ by a few ulp. The choice (the experts and their
//    slot order) is the CPU's whenever every decision the CPU takes is won by more than
//    router_agreement's rank bound: softmax routers, consecutive scores among the top k + 1
//    differ by more than rank_bound relative; DeepSeek-V3, consecutive choice values
//    (sigmoid + bias) among the kept experts' top k + 1 by more than rank_bound absolute,
//    and the last kept and the first dropped group score by more than group_bound (two
//    experts with the same bits of logit, and of bias, are equal on both sides and go to
//    the lower index: they decide nothing). Below the bound the GPU may pick the other of
//    two near-tied experts or groups; for scores in fp32's normal range (above 2^-126)
//    nothing else can differ;
//  - where the choice is the same, the weights are within router_agreement::weight_bound of
//    the CPU's, relative (again for scores in the normal range).

#include "meshplan/core/detail/public_begin.hpp"

#include <cuda_runtime_api.h>

#include <cfloat>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/model/routing.hpp"
#include "meshplan/cuda/core/detail/device_types.cuh"
#include "meshplan/cuda/core/error.cuh"
#include "meshplan/model/detail/model_rules.hpp"
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

/// How the router kernel cuts its work, from the parameters alone, so that the host checks
/// the shared memory before anything is launched. A thread holds micro x micro logits; a
/// block of `threads` covers tokens_tile tokens x experts_tile experts per pass over the
/// hidden dim, and passes over the expert tiles until all experts are done. Few experts get
/// narrow, tall tiles (the token rows are then the traffic to share); many get wide ones.
struct RouterTiles {
  static constexpr int micro = 4;   // a thread's logits: micro tokens x micro experts
  static constexpr int chunk = 16;  // hidden elements staged per step
  static constexpr int pad = 4;     // floats after each staged row: float4-aligned, fewer bank conflicts
  /// Every device gives a block this much without an opt-in, so the check needs no GPU.
  static constexpr std::size_t shared_limit = 48 * 1024;

  int experts_tile = 0;
  int threads = 0;
  int tokens_tile = 0;
  std::size_t shared_bytes = 0;

  __host__ __device__ static constexpr int round4(long long floats) noexcept { return static_cast<int>((floats + 3) / 4 * 4); }
  /// Offsets, in floats, of the shared memory's parts: the tile's logits [tokens_tile][E],
  /// DeepSeek-V3's bias [E], then the staging area (tokens' chunk [chunk][tokens_tile + pad],
  /// gate's chunk [chunk][experts_tile + pad]), reused after the logits by the warps' group
  /// scores [warps][groups].
  __host__ __device__ static constexpr int bias_offset(int tokens_tile, int experts) noexcept {
    return round4(static_cast<long long>(tokens_tile) * experts);
  }
  __host__ __device__ static constexpr int staging_offset(int tokens_tile, int experts) noexcept {
    return bias_offset(tokens_tile, experts) + round4(experts);
  }
  static constexpr int staging_floats(int tokens_tile, int experts_tile) noexcept {
    return chunk * (tokens_tile + pad + experts_tile + pad);
  }

  /// Whether every row of x and of the gate starts on a 16-byte boundary, so the kernel may
  /// read them 16 bytes at a time (otherwise it reads element by element).
  static bool vector_rows(int hidden, std::size_t element_bytes, const void* x, const void* gate) noexcept {
    const auto aligned = [](const void* ptr) { return reinterpret_cast<std::uintptr_t>(ptr) % 16 == 0; };
    return static_cast<std::size_t>(hidden) * element_bytes % 16 == 0 && aligned(x) && aligned(gate);
  }

  static constexpr RouterTiles of(const RouterParams& p) noexcept {
    RouterTiles t;
    t.experts_tile = p.experts <= 16 ? 16 : p.experts <= 64 ? 64 : 128;
    t.threads = p.experts <= 256 ? 256 : 128;  // beyond 256 experts, fewer tokens per block
    t.tokens_tile = micro * t.threads / (t.experts_tile / micro);
    const long long groups = p.groups > 0 ? p.groups : 1;
    const long long scratch = static_cast<long long>(staging_floats(t.tokens_tile, t.experts_tile)) >
                                      t.threads / 32 * groups
                                  ? staging_floats(t.tokens_tile, t.experts_tile)
                                  : t.threads / 32 * groups;
    t.shared_bytes = sizeof(float) * static_cast<std::size_t>(staging_offset(t.tokens_tile, p.experts) + scratch);
    return t;
  }
};

/// What the device router promises against the CPU router (the header's comment says where
/// each bound applies). u is fp32's unit roundoff, 2^-24; the two sides' exp differ by at most
/// exp_gap relative (CUDA's expf within 2 ulp, glibc's within 1, an ulp at most 2^-23 of a
/// normal value). The bounds are first-order error analyses of the kernel's and the CPU's
/// identical sequences of fp32 operations, each with a few u more for the second-order terms.
namespace router_agreement {
inline constexpr double u = 0x1p-24;
inline constexpr double exp_gap = 6 * u;

/// How far apart one DeepSeek-V3 choice value, sigmoid + bias with |bias| <= max_abs_bias,
/// may be on the two sides, absolute: each sigmoid is within exp_gap + 4 u of the other
/// side's (a sigmoid is at most 1), and each side rounds the add of the bias.
inline double choice_gap(double max_abs_bias) { return exp_gap + 4 * u + 2 * u * (1 + max_abs_bias) + u; }

/// The margin above which each of the CPU's expert decisions is the GPU's: relative for the
/// softmax routers' scores (a ratio of two scores moves by the exps' gap twice and by a
/// rounding of each division on both sides: 2 exp_gap + 4 u), absolute for DeepSeek-V3's
/// choice values (two values cross only if they were within twice choice_gap).
inline double rank_bound(const RouterParams& p, double max_abs_bias = 0) {
  if (p.kind == static_cast<int>(RouterKind::sigmoid_group_topk)) return 2 * choice_gap(max_abs_bias);
  return 2 * exp_gap + 4 * u + 2 * u;
}

/// DeepSeek-V3's margin between the last kept and the first dropped group score, absolute:
/// a group score is the sum of two choice values, rounded on each side (|score| <= 2 + 2 bias).
inline double group_bound(double max_abs_bias = 0) {
  return 2 * (2 * choice_gap(max_abs_bias) + 2 * u * 2 * (1 + max_abs_bias));
}

/// The largest relative difference between a GPU weight and the CPU's. Softmax, renormalized:
/// the totals cancel, leaving 2 exp_gap + (2k + 4) u; not renormalized, the total of E exps
/// keeps each side's rounding of its sum, 2 exp_gap + 2E u. DeepSeek-V3: a sigmoid is within
/// exp_gap + 4 u; normalized, its sum over the k, the + 1e-20, the division and the scaling
/// add exp_gap + (2k + 10) u more; otherwise the scaling adds 2 u.
inline double weight_bound(const RouterParams& p) {
  const double k = p.top_k, E = p.experts;
  const auto kind = static_cast<RouterKind>(p.kind);
  if (kind == RouterKind::sigmoid_group_topk)
    return (p.normalize ? 2 * exp_gap + (2 * k + 18) * u : exp_gap + 6 * u) + 4 * u;
  if (kind == RouterKind::softmax_topk_renorm || p.normalize) return 2 * exp_gap + (2 * k + 4) * u + 4 * u;
  return 2 * exp_gap + 2 * E * u + 4 * u;
}
}  // namespace router_agreement

namespace kernels {

/// A candidate of an arg max: the largest value wins, ties to the lower index; index < 0 is
/// no candidate. The kernel's choices are the CPU's top_k exactly when the values are.
struct Candidate {
  float value;
  int index;
};

__device__ inline Candidate better(Candidate a, Candidate b) {
  if (b.index < 0) return a;
  if (a.index < 0) return b;
  return b.value > a.value || (b.value == a.value && b.index < a.index) ? b : a;
}

/// The warp's best candidate, the same in every lane (lane 0's, so that even NaNs, which
/// order nothing, cannot make two lanes disagree).
__device__ inline Candidate warp_best(Candidate c) {
  for (int offset = 16; offset > 0; offset /= 2)
    c = better(c, {__shfl_xor_sync(~0u, c.value, offset), __shfl_xor_sync(~0u, c.index, offset)});
  return {__shfl_sync(~0u, c.value, 0), __shfl_sync(~0u, c.index, 0)};
}

/// The warp's best of values(i) over the indices i = lane + 32 j (i < n) whose bit j is set
/// in the lane's `open`; the winner's bit is cleared in its lane.
template <class Values>
__device__ inline Candidate take_best(unsigned& open, int n, Values values) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  Candidate mine{0.0f, -1};
  for (int j = 0, i = lane; i < n; ++j, i += 32)
    if (open >> j & 1u) mine = better(mine, {values(i), i});
  const Candidate best = warp_best(mine);
  if (best.index >= 0 && best.index % 32 == lane) open &= ~(1u << (best.index / 32));
  return best;
}

/// The lane's bits for indices lane + 32 j < n (n <= 1024).
__device__ inline unsigned lane_bits(int n) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int mine = lane < n ? (n - lane + 31) / 32 : 0;
  return mine >= 32 ? ~0u : (1u << mine) - 1u;
}

/// dst[k][r] = src[r][h0 + k] as floats (dst's rows `stride` apart) for r < rows and
/// h0 + k < H, zero elsewhere: the zeros add fma(0, 0, acc) = acc, so a partial tile keeps
/// every sum's bits. With `vectors`, each row's chunk is read 16 bytes at a time.
template <class T, int ROWS, int THREADS>
__device__ inline void stage(const T* src, int rows, int H, int h0, float* dst, int stride, bool vectors) {
  constexpr int K = RouterTiles::chunk;
  constexpr int V = 16 / static_cast<int>(sizeof(T));
  static_assert(K % V == 0);
  if (vectors) {
    constexpr int per_row = K / V;
    for (int i = static_cast<int>(threadIdx.x); i < ROWS * per_row; i += THREADS) {
      const int r = i / per_row, k = i % per_row * V;
      const bool inside = r < rows && h0 + k < H;  // H % V == 0: the whole vector is inside
      uint4 raw = make_uint4(0, 0, 0, 0);
      if (inside) raw = *reinterpret_cast<const uint4*>(src + static_cast<long long>(r) * H + h0 + k);
      const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int j = 0; j < V; ++j) dst[(k + j) * stride + r] = inside ? to_float(v[j]) : 0.0f;
    }
    return;
  }
  for (int i = static_cast<int>(threadIdx.x); i < ROWS * K; i += THREADS) {
    const int r = i / K, k = i % K;
    dst[k * stride + r] = r < rows && h0 + k < H ? to_float(src[static_cast<long long>(r) * H + h0 + k]) : 0.0f;
  }
}

/// One warp's routing of one token whose logits are `row` (shared memory, overwritten by
/// its scores), as cpu::route does it: the same operations in the same order, the arg
/// maxima over the warp.
__device__ inline void select_experts(float* row, const float* bias, float* group_score, const RouterParams& p,
                              std::int32_t* my_ids, float* my_weights) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int E = p.experts;
  if (p.kind == static_cast<int>(RouterKind::sigmoid_group_topk)) {
    // scores = sigmoid(logits); choice = scores + bias, kept only in the best groups.
    for (int e = lane; e < E; e += 32) row[e] = 1.0f / (1.0f + expf(-row[e]));
    __syncwarp();
    const int per_group = E / p.groups;
    for (int g = lane; g < p.groups; g += 32) {  // a group's score: the sum of its top 2 choices
      float first = -FLT_MAX, second = -FLT_MAX;
      for (int e = g * per_group; e < (g + 1) * per_group; ++e) {
        const float c = row[e] + bias[e];
        if (c > first) {
          second = first;
          first = c;
        } else if (c > second) {
          second = c;
        }
      }
      group_score[g] = first + second;
    }
    __syncwarp();
    unsigned open_groups = lane_bits(p.groups), eligible = 0;
    for (int kept = 0; kept < p.kept_groups; ++kept) {
      const int g = take_best(open_groups, p.groups, [&](int i) { return group_score[i]; }).index;
      for (int j = 0, e = lane; e < E; ++j, e += 32)
        if (e / per_group == g) eligible |= 1u << j;
    }
    __syncwarp();  // group_score is the next token's
    float sum = 0.0f;
    for (int s = 0; s < p.top_k; ++s) {
      const int best = take_best(eligible, E, [&](int e) { return row[e] + bias[e]; }).index;
      if (lane == 0) {
        my_ids[s] = best;
        sum += (my_weights[s] = row[best]);
      }
    }
    if (lane == 0)
      for (int s = 0; s < p.top_k; ++s) {
        if (p.normalize) my_weights[s] /= sum + 1e-20f;
        my_weights[s] *= p.scaling;
      }
    return;
  }
  // Softmax over all experts, max subtracted, the total summed in expert order.
  float max = row[0];
  for (int e = lane; e < E; e += 32) max = fmaxf(max, row[e]);
  for (int offset = 16; offset > 0; offset /= 2) max = fmaxf(max, __shfl_xor_sync(~0u, max, offset));
  for (int e = lane; e < E; e += 32) row[e] = expf(row[e] - max);
  __syncwarp();
  float total = 0.0f;
  if (lane == 0)
    for (int e = 0; e < E; ++e) total += row[e];
  total = __shfl_sync(~0u, total, 0);
  for (int e = lane; e < E; e += 32) row[e] /= total;
  __syncwarp();
  unsigned open = lane_bits(E);
  float sum = 0.0f;
  for (int s = 0; s < p.top_k; ++s) {
    const Candidate best = take_best(open, E, [&](int e) { return row[e]; });
    if (lane == 0) {
      my_ids[s] = best.index;
      sum += (my_weights[s] = row[best.index]);
    }
  }
  if (lane == 0 && (p.kind == static_cast<int>(RouterKind::softmax_topk_renorm) || p.normalize))
    for (int s = 0; s < p.top_k; ++s) my_weights[s] /= sum;
}

/// Blocks of RouterTiles' tokens_tile tokens; dynamic shared memory as RouterTiles lays it
/// out. `vectors`: the rows of x and gate may be read 16 bytes at a time (H a multiple of
/// 16 bytes' elements, both pointers 16-byte aligned).
template <class T, int EXPERTS_TILE, int THREADS>
__global__ void __launch_bounds__(THREADS)
    route(const T* x, const T* gate, const float* bias, RouterParams p, int tokens, bool vectors, std::int32_t* ids,
          float* weights, float* logits_out, unsigned long long* first_bad) {
  constexpr int M = RouterTiles::micro, K = RouterTiles::chunk;
  constexpr int ACROSS = EXPERTS_TILE / M;  // threads along the experts
  constexpr int TOKENS_TILE = M * THREADS / ACROSS;
  constexpr int XS = TOKENS_TILE + RouterTiles::pad, GS = EXPERTS_TILE + RouterTiles::pad;
  static_assert(THREADS % ACROSS == 0 && THREADS % 32 == 0);
  extern __shared__ float4 shared_words[];
  float* shared = reinterpret_cast<float*>(shared_words);
  const int E = p.experts, H = p.hidden;
  float* logits = shared;
  float* bias_s = shared + RouterTiles::bias_offset(TOKENS_TILE, E);
  float* x_s = shared + RouterTiles::staging_offset(TOKENS_TILE, E);
  float* gate_s = x_s + K * XS;

  const int tid = static_cast<int>(threadIdx.x), tx = tid % ACROSS, ty = tid / ACROSS;
  const long long t0 = static_cast<long long>(blockIdx.x) * TOKENS_TILE;
  const int rows = static_cast<int>(tokens - t0 < TOKENS_TILE ? tokens - t0 : TOKENS_TILE);
  const T* x_tile = x + t0 * H;
  if (p.kind == static_cast<int>(RouterKind::sigmoid_group_topk))
    for (int e = tid; e < E; e += THREADS) bias_s[e] = bias[e];

  for (int e0 = 0; e0 < E; e0 += EXPERTS_TILE) {
    const int experts_here = E - e0 < EXPERTS_TILE ? E - e0 : EXPERTS_TILE;
    float acc[M][M];
#pragma unroll
    for (int i = 0; i < M; ++i)
#pragma unroll
      for (int j = 0; j < M; ++j) acc[i][j] = 0.0f;
    for (int h0 = 0; h0 < H; h0 += K) {
      stage<T, TOKENS_TILE, THREADS>(x_tile, rows, H, h0, x_s, XS, vectors);
      stage<T, EXPERTS_TILE, THREADS>(gate + static_cast<long long>(e0) * H, experts_here, H, h0, gate_s, GS, vectors);
      __syncthreads();
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const float4 a = *reinterpret_cast<const float4*>(x_s + k * XS + ty * M);
        const float4 b = *reinterpret_cast<const float4*>(gate_s + k * GS + tx * M);
        const float av[M] = {a.x, a.y, a.z, a.w}, bv[M] = {b.x, b.y, b.z, b.w};
        // One accumulator per logit, h in order, fused as the CPU's dot: the same bits.
#pragma unroll
        for (int i = 0; i < M; ++i)
#pragma unroll
          for (int j = 0; j < M; ++j) acc[i][j] = __fmaf_rn(av[i], bv[j], acc[i][j]);
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < M; ++i)
#pragma unroll
      for (int j = 0; j < M; ++j) {
        const int m = ty * M + i, e = tx * M + j;
        if (m < rows && e < experts_here) logits[m * E + e0 + e] = acc[i][j];
      }
  }
  __syncthreads();

  constexpr int WARPS = THREADS / 32;
  const int warp = tid / 32, lane = tid % 32;
  float* group_score = x_s + warp * p.groups;  // the staging area is free now
  for (int m = warp; m < rows; m += WARPS) {
    const long long t = t0 + m;
    float* row = logits + m * E;
    for (int e = lane; e < E; e += 32) {
      const float l = row[e];
      if (logits_out) logits_out[t * E + e] = l;
      if (!isfinite(l))
        atomicMin(first_bad, (static_cast<unsigned long long>(t) * E + e) * 2 + (isnan(l) ? 1 : 0));
    }
    select_experts(row, bias_s, group_score, p, ids + t * p.top_k, weights + t * p.top_k);
  }
}

}  // namespace kernels

namespace router_rules {
/// The model rules a router's parameters must meet (top-k within the experts; DeepSeek-V3's
/// groups), checked by the same functions as a config, and what the kernel's tiles can hold.
inline Message params_valid(const RouterParams& p, long long tokens) {
  if (tokens < 0 || tokens > INT32_MAX)
    return Message::rule("device_size_range") << "the token count " << tokens << " is outside 0.." << INT32_MAX;
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
  const RouterTiles tiles = RouterTiles::of(p);
  if (tiles.shared_bytes > RouterTiles::shared_limit) {
    RouterParams fewer = p;
    while (fewer.experts > 1 && RouterTiles::of(fewer).shared_bytes > RouterTiles::shared_limit) --fewer.experts;
    return Message::rule("router_shared_memory") << "the fused router keeps the logits of " << tiles.tokens_tile
                                         << " tokens over all " << p.experts << " experts in shared memory: "
                                         << tiles.shared_bytes << " bytes, more than the " << RouterTiles::shared_limit
                                         << " a block gets on every device (at most " << fewer.experts
                                         << " experts fit)";
  }
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
  /// non-finite logit. No tokens launch nothing.
  template <DeviceElement T>
  static void route(const T* x, const T* gate, const float* bias, const RouterParams& p, long long tokens,
                    std::int32_t* ids, float* weights, float* logits, unsigned long long* first_bad,
                    cudaStream_t stream) {
    enforce(router_rules::params_valid(p, tokens));
    if (p.kind == static_cast<int>(RouterKind::sigmoid_group_topk) && !bias)
      throw RuleViolation(Message::rule("router_bias_given") << "DeepSeek-V3's router needs e_score_correction_bias");
    if (tokens == 0) return;
    const RouterTiles tiles = RouterTiles::of(p);
    const bool vectors = RouterTiles::vector_rows(p.hidden, sizeof(T), x, gate);
    const auto blocks = static_cast<unsigned>((tokens + tiles.tokens_tile - 1) / tiles.tokens_tile);
    const auto go = [&](auto kernel) {
      kernel<<<blocks, static_cast<unsigned>(tiles.threads), tiles.shared_bytes, stream>>>(
          x, gate, bias, p, static_cast<int>(tokens), vectors, ids, weights, logits, first_bad);
    };
    if (tiles.experts_tile == 16)
      go(kernels::route<T, 16, 256>);
    else if (tiles.experts_tile == 64)
      go(kernels::route<T, 64, 256>);
    else if (tiles.threads == 256)
      go(kernels::route<T, 128, 256>);
    else
      go(kernels::route<T, 128, 128>);
    MESHPLAN_CUDA_CHECK(cudaGetLastError());
  }
};

}  // namespace meshplan::cuda

#include "meshplan/core/detail/public_end.hpp"
