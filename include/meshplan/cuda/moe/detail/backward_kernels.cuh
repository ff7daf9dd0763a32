#pragma once
// The kernels of the MoE block's backward on the GPU that are not cuBLAS products (the
// input gradients' GEMMs are: cuda/experts/detail/cublas_dgrad.cuh), each with its launcher, which
// checks sizes on the host and queues the kernel on the caller's stream (nothing here waits
// for the device):
//
//   find_non_finite    sets a flag at a NaN or an infinity (the output gradient's check)
//   combine_backward   row gradient w[t, s] dy[t] at the pair's sorted position, and the
//                      routing weight's gradient <y, dy>: one fmaf chain over h from +0
//   router_backward    the logits' gradient through the top-k weights, for every router
//                      kind, cpu::router_backward_row's expressions on the scores the
//                      forward's router kernel computed (recomputed from the kept logits
//                      with the same expressions, so the same bits)
//   swiglu_backward    dg = da u silu'(g), du = da silu(g), from the kept fp32 pre-activations
//   unpermute_add      a token's slot rows summed in slot order from +0
//   widen              T -> fp32 (the backward's products read fp32 weights)
//   accumulate_outer   c [p, q] += g^T x over rows in order: every output ONE chain of fmaf
//                      over the rows, continued from the value c holds (the weight gradients)
//
// The arithmetic is written with the _rn intrinsics (no contraction by the compiler), in the
// CPU backward's order (cpu/detail/backward.hpp); accumulate_outer gives the CPU's bits for the same
// inputs (cpu::accumulate_outer's defined order), which is what lets the ordered sums over
// ranks (comm/detail/ordered_sum.hpp) reproduce one rank's gradient.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/cuda/core/detail/device_types.cuh"
#include "meshplan/cuda/core/error.cuh"
#include "meshplan/cuda/core/detail/launch.cuh"
#include "meshplan/cuda/permute/detail/kernels.cuh"
#include "meshplan/cuda/router/device_router.cuh"
#include "meshplan/model/model_spec.hpp"

namespace meshplan::cuda {

/// One weight-gradient term for accumulate_outer: c [p, q] += g^T x over rows [0, n) of
/// g [n, p] (fp32, leading dimension ldg) and x [n, q], row r of x at
/// x + (index ? index[r] / index_div : r) * ldx (the routing's permutation: index[r] is a
/// (token, slot) pair, index_div the slots per token). c is row-major [p, q].
template <DeviceElement X>
struct DeviceOuterTerm {
  const float* g = nullptr;
  long long ldg = 0;
  const X* x = nullptr;
  long long ldx = 0;
  const std::int32_t* index = nullptr;
  int index_div = 1;
  long long n = 0, p = 0, q = 0;
  float* c = nullptr;
  bool fresh = false;  // c's contents are not read: every chain starts from +0
};

namespace kernels {

/// *flag = 1 where some v[i] is not finite (the caller zeroes it first).
__global__ inline void find_non_finite(const float* v, long long n, int* flag) {
  for (long long i = grid_start(); i < n; i += grid_stride())
    if (!isfinite(v[i])) atomicOr(flag, 1);
}

/// The combine's backward, one block per token (grid-stride over tokens): for each slot s
/// at sorted position i = inverse[t k + s], rows[i] = w[t, s] dy[t], and
/// dw[t, s] = <y[i], dy[t]>, one chain of fmaf over h from +0 (one thread per slot).
template <class Row>
__global__ void combine_backward(const Row* y, const std::int32_t* inverse, const float* weights, int tokens,
                                 int top_k, int hidden, const float* dy, float* rows, float* dw) {
  for (long long t = blockIdx.x; t < tokens; t += gridDim.x) {
    const float* g = dy + t * hidden;
    for (int s = 0; s < top_k; ++s) {
      const long long i = inverse[t * top_k + s];
      const float w = weights[t * top_k + s];
      float* out = rows + i * hidden;
      for (int h = threadIdx.x; h < hidden; h += blockDim.x) out[h] = __fmul_rn(w, g[h]);
    }
    for (int s = threadIdx.x; s < top_k; s += blockDim.x) {
      const Row* yi = y + static_cast<long long>(inverse[t * top_k + s]) * hidden;
      float d = 0.0f;
      for (int h = 0; h < hidden; ++h) d = __fmaf_rn(to_float(yi[h]), g[h], d);
      dw[t * top_k + s] = d;
    }
  }
}

/// The router kernel's sigmoid (cuda/router/device_router.cuh): the same expression, so the
/// same bits.
__device__ inline float router_sigmoid(float l) { return __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-l))); }

/// The logits' gradient [tokens, E] from the routing weights' gradient dw [tokens, k], one
/// thread per token: cpu::router_backward_row's expressions. The scores are the router
/// kernel's (softmax with the max subtracted and sums in expert order, or sigmoids),
/// recomputed from the kept logits.
__global__ inline void router_backward(const float* logits, const std::int32_t* ids, const float* weights,
                                       const float* dw, RouterParams p, int tokens, float* dlogits) {
  const int E = p.experts, k = p.top_k;
  for (long long t = grid_start(); t < tokens; t += grid_stride()) {
    const float* l = logits + t * E;
    const std::int32_t* id = ids + t * k;
    const float* w = weights + t * k;
    const float* d = dw + t * k;
    float* out = dlogits + t * E;
    if (p.kind == static_cast<int>(RouterKind::sigmoid_group_topk)) {
      const float scale = p.scaling;
      for (int e = 0; e < E; ++e) out[e] = 0.0f;
      float denom = 0.0f;
      for (int s = 0; s < k; ++s) denom = __fadd_rn(denom, router_sigmoid(l[id[s]]));
      denom = __fadd_rn(denom, 1e-20f);
      float weighted = 0.0f;  // sum_j dw'_j s_j / D
      for (int s = 0; s < k; ++s)
        weighted = __fmaf_rn(__fmul_rn(d[s], scale), __fdiv_rn(router_sigmoid(l[id[s]]), denom), weighted);
      for (int s = 0; s < k; ++s) {
        const float sig = router_sigmoid(l[id[s]]);
        const float dv = p.normalize ? __fdiv_rn(__fsub_rn(__fmul_rn(d[s], scale), weighted), denom)
                                     : __fmul_rn(d[s], scale);
        out[id[s]] = __fmul_rn(__fmul_rn(dv, sig), __fsub_rn(1.0f, sig));
      }
      continue;
    }
    float max = l[0];
    for (int e = 1; e < E; ++e) max = fmaxf(max, l[e]);
    float total = 0.0f;
    for (int e = 0; e < E; ++e) total = __fadd_rn(total, expf(__fsub_rn(l[e], max)));
    auto score = [&](int e) { return __fdiv_rn(expf(__fsub_rn(l[e], max)), total); };
    const bool renormalized = p.kind == static_cast<int>(RouterKind::softmax_topk_renorm) || p.normalize;
    float denom = 0.0f;
    for (int s = 0; s < k; ++s) denom = __fadd_rn(denom, score(id[s]));
    float weighted = 0.0f;  // sum_j dw_j w_j
    for (int s = 0; s < k; ++s) weighted = __fmaf_rn(d[s], w[s], weighted);
    auto dv = [&](int s) { return renormalized ? __fdiv_rn(__fsub_rn(d[s], weighted), denom) : d[s]; };
    float through = 0.0f;  // sum_s dv_s p_s
    for (int s = 0; s < k; ++s) through = __fmaf_rn(dv(s), score(id[s]), through);
    for (int e = 0; e < E; ++e) out[e] = __fmul_rn(score(e), __fsub_rn(0.0f, through));
    for (int s = 0; s < k; ++s) out[id[s]] = __fmul_rn(score(id[s]), __fsub_rn(dv(s), through));
  }
}

/// dgate_up [rows, 2I] from the pre-activations gate_up [rows, 2I] (gate columns first) and
/// da [rows, I]: dg = da u silu'(g), du = da silu(g), silu as the forward's kernel computes it.
__global__ inline void swiglu_backward(const float* gate_up, const float* da, long long rows, int inter,
                                       float* dgate_up) {
  const long long n = rows * inter;
  for (long long i = grid_start(); i < n; i += grid_stride()) {
    const long long r = i / inter, c = i % inter;
    const float g = gate_up[r * 2 * inter + c], u = gate_up[r * 2 * inter + inter + c], d = da[i];
    const float e = __fadd_rn(1.0f, expf(-g));
    const float sigma = __fdiv_rn(1.0f, e), silu = __fdiv_rn(g, e);
    const float grad = __fmul_rn(sigma, __fadd_rn(1.0f, __fmul_rn(g, __fsub_rn(1.0f, sigma))));
    dgate_up[r * 2 * inter + c] = __fmul_rn(__fmul_rn(d, u), grad);
    dgate_up[r * 2 * inter + inter + c] = __fmul_rn(d, silu);
  }
}

/// dx[t, h] = sum over slots in order, from +0, of rows[inverse[t k + s], h].
__global__ inline void unpermute_add(const float* rows, const std::int32_t* inverse, int tokens, int top_k,
                                     int hidden, float* dx) {
  const long long n = static_cast<long long>(tokens) * hidden;
  for (long long i = grid_start(); i < n; i += grid_stride()) {
    const long long t = i / hidden, h = i % hidden;
    float acc = 0.0f;
    for (int s = 0; s < top_k; ++s) acc = __fadd_rn(acc, rows[static_cast<long long>(inverse[t * top_k + s]) * hidden + h]);
    dx[i] = acc;
  }
}

/// out[i] = in[i] widened to fp32 (exact).
template <class T>
__global__ void widen(const T* in, long long n, float* out) {
  for (long long i = grid_start(); i < n; i += grid_stride()) out[i] = to_float(in[i]);
}

/// accumulate_outer's tile: 32 x 32 outputs per block of 256 threads (4 per thread), the
/// rows staged 32 at a time in shared memory.
inline constexpr int outer_tile = 32, outer_rows = 32, outer_threads = 256;

/// c [p, q] += g^T x (DeviceOuterTerm): block (bx, by) owns outputs [by 32, +32) x
/// [bx 32, +32); thread (tx = lane, ty = warp) owns c[by 32 + ty + 8 j][bx 32 + tx],
/// j = 0..3. Each output is one chain c = fmaf(g[r][p], x[r][q], c) over r = 0..n-1 in
/// order, from the value c held (or +0 where o.fresh): the rows past n are never applied (an
/// fmaf of zeros would turn a -0 into +0).
template <class X>
__global__ void __launch_bounds__(outer_threads) accumulate_outer(DeviceOuterTerm<X> o) {
  __shared__ float gs[outer_rows][outer_tile];
  __shared__ float xs[outer_rows][outer_tile];
  const long long p0 = static_cast<long long>(blockIdx.y) * outer_tile;
  const long long q0 = static_cast<long long>(blockIdx.x) * outer_tile;
  const int tx = static_cast<int>(threadIdx.x) % outer_tile, ty = static_cast<int>(threadIdx.x) / outer_tile;
  constexpr int per_thread = outer_tile * outer_tile / outer_threads;  // 4
  constexpr int row_step = outer_threads / outer_tile;                 // 8
  const long long q = q0 + tx;
  float acc[per_thread];
  for (int j = 0; j < per_thread; ++j) {
    const long long p = p0 + ty + row_step * j;
    acc[j] = !o.fresh && p < o.p && q < o.q ? o.c[p * o.q + q] : 0.0f;
  }
  for (long long r0 = 0; r0 < o.n; r0 += outer_rows) {
    const int rows = static_cast<int>(o.n - r0 < outer_rows ? o.n - r0 : outer_rows);
    for (int e = static_cast<int>(threadIdx.x); e < outer_rows * outer_tile; e += outer_threads) {
      const int rr = e / outer_tile, cc = e % outer_tile;
      float gv = 0.0f, xv = 0.0f;
      if (rr < rows) {
        const long long r = r0 + rr;
        if (p0 + cc < o.p) gv = o.g[r * o.ldg + p0 + cc];
        if (q0 + cc < o.q) {
          const long long row = o.index ? static_cast<long long>(o.index[r] / o.index_div) : r;
          xv = to_float(o.x[row * o.ldx + q0 + cc]);
        }
      }
      gs[rr][cc] = gv;
      xs[rr][cc] = xv;
    }
    __syncthreads();
    for (int rr = 0; rr < rows; ++rr) {
      const float xv = xs[rr][tx];
      for (int j = 0; j < per_thread; ++j) acc[j] = __fmaf_rn(gs[rr][ty + row_step * j], xv, acc[j]);
    }
    __syncthreads();
  }
  for (int j = 0; j < per_thread; ++j) {
    const long long p = p0 + ty + row_step * j;
    if (p < o.p && q < o.q) o.c[p * o.q + q] = acc[j];
  }
}

}  // namespace kernels

namespace backward_rules {
inline Message size_valid(std::string_view what, long long n) {
  if (n >= 0 && n <= INT32_MAX) return {};
  return Message::rule("device_size_range") << what << " is " << n << "; the backward's kernels take 0 to " << INT32_MAX;
}
inline Message outer_fits(long long p) {
  if (p <= 65535LL * kernels::outer_tile) return {};
  return Message::rule("device_size_range") << "a weight gradient of " << p << " rows; the chain kernel takes up to "
                                       << 65535LL * kernels::outer_tile;
}
}  // namespace backward_rules

/// The launchers.
struct DeviceBackward {
  /// *flag = 1 where v [n] holds a NaN or an infinity (flag: device memory the caller zeroed).
  static void find_non_finite(const float* v, long long n, int* flag, cudaStream_t stream) {
    launch_elementwise(n, [&](unsigned blocks) {
      kernels::find_non_finite<<<blocks, elementwise_threads, 0, stream>>>(v, n, flag);
    });
  }

  /// rows [tokens k, H] (sorted order) and dw [tokens, k] from y [tokens k, H] (sorted
  /// order, Row = the storage type or fp32 partial sums) and dy [tokens, H].
  template <class Row>
  static void combine_backward(const Row* y, const std::int32_t* inverse, const float* weights, long long tokens,
                               long long top_k, long long hidden, const float* dy, float* rows, float* dw,
                               cudaStream_t stream) {
    enforce(first_of({backward_rules::size_valid("the token count", tokens),
                      backward_rules::size_valid("the pair count", tokens * top_k),
                      backward_rules::size_valid("the hidden size", hidden)}));
    if (tokens == 0 || top_k == 0) return;
    const auto grid = static_cast<unsigned>(std::min<long long>(tokens, 65535LL * 32));
    kernels::combine_backward<Row><<<grid, 128, 0, stream>>>(y, inverse, weights, static_cast<int>(tokens),
                                                             static_cast<int>(top_k), static_cast<int>(hidden), dy,
                                                             rows, dw);
    MESHPLAN_CUDA_CHECK(cudaGetLastError());
  }

  /// dlogits [tokens, E] from the kept logits [tokens, E], the routing (ids, weights
  /// [tokens, k]) and dw [tokens, k].
  static void router_backward(const float* logits, const std::int32_t* ids, const float* weights, const float* dw,
                              const RouterParams& p, long long tokens, float* dlogits, cudaStream_t stream) {
    enforce(router_rules::params_valid(p, tokens));
    if (tokens == 0) return;
    kernels::router_backward<<<grid_for(tokens, 128), 128, 0, stream>>>(logits, ids, weights, dw, p,
                                                                         static_cast<int>(tokens), dlogits);
    MESHPLAN_CUDA_CHECK(cudaGetLastError());
  }

  static void swiglu_backward(const float* gate_up, const float* da, long long rows, long long inter, float* dgate_up,
                              cudaStream_t stream) {
    enforce(backward_rules::size_valid("the intermediate size", inter));
    launch_elementwise(rows * inter, [&](unsigned blocks) {
      kernels::swiglu_backward<<<blocks, elementwise_threads, 0, stream>>>(gate_up, da, rows, static_cast<int>(inter),
                                                                            dgate_up);
    });
  }

  static void unpermute_add(const float* rows, const std::int32_t* inverse, long long tokens, long long top_k,
                            long long hidden, float* dx, cudaStream_t stream) {
    enforce(first_of({backward_rules::size_valid("the token count", tokens),
                      backward_rules::size_valid("the pair count", tokens * top_k),
                      backward_rules::size_valid("the hidden size", hidden)}));
    launch_elementwise(tokens * hidden, [&](unsigned blocks) {
      kernels::unpermute_add<<<blocks, elementwise_threads, 0, stream>>>(
          rows, inverse, static_cast<int>(tokens), static_cast<int>(top_k), static_cast<int>(hidden), dx);
    });
  }

  template <DeviceElement T>
  static void widen(const T* in, long long n, float* out, cudaStream_t stream) {
    launch_elementwise(n, [&](unsigned blocks) {
      kernels::widen<T><<<blocks, elementwise_threads, 0, stream>>>(in, n, out);
    });
  }

  /// c += g^T x for one term (nothing for n, p or q = 0: c keeps its values).
  template <DeviceElement X>
  static void accumulate_outer(const DeviceOuterTerm<X>& t, cudaStream_t stream) {
    enforce(first_of({backward_rules::size_valid("the rows of a weight gradient's sum", t.n),
                      backward_rules::outer_fits(t.p), backward_rules::size_valid("a weight gradient's width", t.q)}));
    if ((t.n == 0 && !t.fresh) || t.p == 0 || t.q == 0) return;  // fresh with no rows: the kernel writes zeros
    const dim3 grid(static_cast<unsigned>((t.q + kernels::outer_tile - 1) / kernels::outer_tile),
                    static_cast<unsigned>((t.p + kernels::outer_tile - 1) / kernels::outer_tile));
    kernels::accumulate_outer<X><<<grid, kernels::outer_threads, 0, stream>>>(t);
    MESHPLAN_CUDA_CHECK(cudaGetLastError());
  }
};

}  // namespace meshplan::cuda
