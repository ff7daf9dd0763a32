#pragma once
// The permutation kernels: row gathers and block copies with 16-byte vector accesses, the
// inverse permutation, the weighted combine (fixed slot order, no atomics), the SwiGLU
// activation between the experts' two GEMMs, and a range check of expert ids.

#include <cuda_runtime_api.h>

#include <cstdint>

#include "meshplan/cuda/core/device_types.cuh"

namespace meshplan::cuda::kernels {

/// The first index and the stride of a grid-stride loop, in 64 bits: with up to 2^31 - 1
/// items, an int index plus the stride could pass INT32_MAX.
__device__ inline long long grid_start() { return blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; }
__device__ inline long long grid_stride() { return static_cast<long long>(gridDim.x) * blockDim.x; }

/// out[i] = i.
__global__ inline void iota(std::int32_t* out, int n) {
  for (long long i = grid_start(); i < n; i += grid_stride()) out[i] = static_cast<std::int32_t>(i);
}

/// Sets *flag when an expert id is outside [0, experts).
__global__ inline void check_expert_ids(const std::int32_t* ids, int n, int experts, int* flag) {
  for (long long i = grid_start(); i < n; i += grid_stride())
    if (ids[i] < 0 || ids[i] >= experts) atomicOr(flag, 1);
}

/// inverse[order[i]] = i.
__global__ inline void inverse_permutation(const std::int32_t* order, int n, std::int32_t* inverse) {
  for (long long i = grid_start(); i < n; i += grid_stride()) inverse[order[i]] = static_cast<std::int32_t>(i);
}

/// Copies one row of `bytes` bytes, in 16-byte vectors when both rows allow it.
__device__ inline void copy_row(const void* from, void* to, int bytes, bool vectors) {
  if (vectors) {
    const uint4* src = static_cast<const uint4*>(from);
    uint4* dst = static_cast<uint4*>(to);
    for (int v = threadIdx.x; v < bytes / 16; v += blockDim.x) dst[v] = src[v];
  } else {
    const unsigned char* src = static_cast<const unsigned char*>(from);
    unsigned char* dst = static_cast<unsigned char*>(to);
    for (int b = threadIdx.x; b < bytes; b += blockDim.x) dst[b] = src[b];
  }
}

/// out[i] = x[order[i] / top_k]: the rows of the (token, slot) pairs in expert order.
/// Each block copies `rows_per_block` rows.
__global__ inline void gather_rows(const unsigned char* x, const std::int32_t* order, int top_k, int rows,
                                   int row_bytes, bool vectors, int rows_per_block, unsigned char* out) {
  for (long long base = static_cast<long long>(blockIdx.x) * rows_per_block; base < rows;
       base += static_cast<long long>(gridDim.x) * rows_per_block)
    for (long long r = base; r < rows && r < base + rows_per_block; ++r) {
      const int token = order[r] / top_k;
      copy_row(x + static_cast<long long>(token) * row_bytes, out + static_cast<long long>(r) * row_bytes, row_bytes,
               vectors);
    }
}

/// A block of rows moved by a regroup: [from, from + rows) -> [to, to + rows).
struct RowBlock {
  long long from;
  long long to;
  long long rows;
};

/// Moves the rows of `blocks` (sorted by `to`, covering [0, total)); with `inverse`, back.
/// Each destination row finds its block by binary search.
__global__ inline void regroup_rows(const unsigned char* in, unsigned char* out, const RowBlock* blocks, int count,
                                    int total, int row_bytes, bool vectors, bool inverse, int rows_per_block) {
  for (long long base = static_cast<long long>(blockIdx.x) * rows_per_block; base < total;
       base += static_cast<long long>(gridDim.x) * rows_per_block)
    for (long long r = base; r < total && r < base + rows_per_block; ++r) {
      int lo = 0, hi = count - 1;
      while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (blocks[mid].to <= r)
          lo = mid;
        else
          hi = mid - 1;
      }
      const long long source = blocks[lo].from + (r - blocks[lo].to);
      const long long a = inverse ? r : source, b = inverse ? source : r;
      copy_row(in + a * row_bytes, out + b * row_bytes, row_bytes, vectors);
    }
}

/// N values of T moved as one aligned access (16 bytes for the inputs of the vector paths).
template <class T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

/// out[t, h] = sum over slots s (in order) of weights[t, s] * y[inverse[t * k + s], h], in
/// fp32 with separate multiplies and adds (as the CPU reference: no fused multiply-add),
/// stored as Out. One block per token; each thread owns whole packs of N columns, so no
/// two threads add into one value and the order of the sum is fixed. N = 1 is the scalar
/// path; a larger N needs hidden % N == 0 and rows aligned to the packs.
template <class Y, class Out, int N>
__global__ void combine(const Y* y, const std::int32_t* inverse, const float* weights, int tokens, int top_k,
                        int hidden, Out* out) {
  const int t = blockIdx.x;
  if (t >= tokens) return;
  const int packs = hidden / N;
  for (int c = threadIdx.x; c < packs; c += blockDim.x) {
    float acc[N];
    for (int i = 0; i < N; ++i) acc[i] = 0.0f;
    for (int s = 0; s < top_k; ++s) {
      const long long row = inverse[t * top_k + s];
      const float w = weights[t * top_k + s];
      const Pack<Y, N> p = reinterpret_cast<const Pack<Y, N>*>(y + row * hidden)[c];
      for (int i = 0; i < N; ++i) acc[i] = __fmaf_rn(w, to_float(p.v[i]), acc[i]);  // the CPU's fused order
    }
    Pack<Out, N> o;
    for (int i = 0; i < N; ++i) o.v[i] = from_float<Out>(acc[i]);
    reinterpret_cast<Pack<Out, N>*>(out + static_cast<long long>(t) * hidden)[c] = o;
  }
}

/// act[r, i] = silu(h[r, i]) * h[r, I + i], stored as T: the activation between the experts'
/// gate_up and down GEMMs (h is the fp32 output of gate_up, gate columns first).
template <class T>
__global__ void swiglu(const float* h, int rows, int inter, T* act) {
  const long long n = static_cast<long long>(rows) * inter;
  for (long long i = grid_start(); i < n; i += grid_stride()) {
    const long long r = i / inter, c = i % inter;
    const float g = h[r * 2 * inter + c], u = h[r * 2 * inter + inter + c];
    act[i] = from_float<T>(__fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), u));
  }
}

/// Converts fp32 values to T (rounding to nearest even).
template <class T>
__global__ void round_to(const float* in, long long n, T* out) {
  for (long long i = grid_start(); i < n; i += grid_stride()) out[i] = from_float<T>(in[i]);
}

/// a[i] += b[i] (fp32, no fused multiply-add): partial sums of the routed and the shared
/// experts added before one reduction.
__global__ inline void add_into(float* a, const float* b, long long n) {
  for (long long i = grid_start(); i < n; i += grid_stride()) a[i] = __fadd_rn(a[i], b[i]);
}

/// out[i] = to_float(from_float<T>(a[i])) + to_float(from_float<T>(b[i])), stored as T: the
/// routed and the shared experts' outputs added as the reference adds them.
template <class T>
__global__ void add_rounded(const float* a, const float* b, long long n, T* out) {
  for (long long i = grid_start(); i < n; i += grid_stride())
    out[i] = from_float<T>(__fadd_rn(to_float(from_float<T>(a[i])), to_float(from_float<T>(b[i]))));
}

}  // namespace meshplan::cuda::kernels
