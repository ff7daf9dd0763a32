#pragma once
// The permutation kernels: row gathers and block copies (teams of threads per row, several
// rows' loads in flight per thread, the widest vector access the rows allow), the
// inverse permutation, the weighted combine (fixed slot order, no atomics), the SwiGLU
// activation between the experts' two GEMMs, and a range check of expert ids.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cuda_runtime_api.h>

#include <cstdint>

#include "meshplan/cuda/core/detail/device_types.cuh"

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

/// n / d for 0 <= n < 2^31 without a division instruction (an integer division is a
/// long instruction sequence on the GPU): d's multiplier and shift are found once on the
/// host (Granlund and Montgomery's round-up method), then each quotient is a multiply-high,
/// an add and a shift. Exact for every such n and every d in [1, 2^31); the callers refuse
/// d = 0 before (DevicePermute::gather_rows: top_k below 1).
struct FastDivide {
  std::uint32_t divisor = 1, multiplier = 1, shift = 0;

  static constexpr FastDivide of(std::uint32_t d) noexcept {
    std::uint32_t s = 0;
    while ((std::uint64_t{1} << s) < d) ++s;  // s = ceil(log2 d)
    const std::uint64_t m = ((std::uint64_t{1} << 32) * ((std::uint64_t{1} << s) - d)) / d + 1;
    return {d, static_cast<std::uint32_t>(m), s};
  }

  // m * n / 2^32 < n, so the sum stays below 2n < 2^32.
  __host__ __device__ constexpr std::uint32_t operator()(std::uint32_t n) const noexcept {
    const auto high = static_cast<std::uint32_t>((static_cast<std::uint64_t>(n) * multiplier) >> 32);
    return (high + n) >> shift;
  }
};

/// Loads each thread of the row kernels keeps in flight: `Rows` rows times 8 / Rows
/// columns, all issued before any store (16-byte vectors: 128 bytes a thread).
inline constexpr int row_loads = 8;

/// The row kernels' thread layout: a team of 2^lanes_log2 consecutive threads moves a row
/// (lane c takes the row's vectors c, c + lanes, ...: each access of a team is contiguous),
/// and each team moves `Rows` rows at a time, grid-striding over groups of Rows rows. No
/// per-row division: a row's team, lane and columns come from shifts and masks.
struct RowTeam {
  int lane;
  long long team, teams;

  /// Thread `thread` of block `block`, in a grid of `blocks` blocks of `threads` (a power
  /// of two, at least 2^lanes_log2: no team straddles two blocks).
  __host__ __device__ static constexpr RowTeam of(long long block, unsigned thread, unsigned threads,
                                                  long long blocks, int lanes_log2) noexcept {
    return {static_cast<int>(thread & ((1u << lanes_log2) - 1)), (block * threads + thread) >> lanes_log2,
            (blocks * threads) >> lanes_log2};
  }
  __device__ static RowTeam mine(int lanes_log2) {
    return of(blockIdx.x, threadIdx.x, blockDim.x, gridDim.x, lanes_log2);
  }
};

/// Moves Rows rows of `vectors` V each: from[r] of `in` to to[r] of `out` (-1: no row).
/// Every load of the group is issued before the first store.
template <class V, int Rows>
__device__ inline void move_rows(const V* in, const long long (&from)[Rows], V* out, const long long (&to)[Rows],
                                 int vectors, int lane, int lanes) {
  constexpr int Cols = row_loads / Rows;
  for (int c0 = lane; c0 < vectors; c0 += lanes * Cols) {
    V v[Rows][Cols];
#pragma unroll
    for (int i = 0; i < Rows; ++i)
#pragma unroll
      for (int j = 0; j < Cols; ++j)
        if (from[i] >= 0 && c0 + j * lanes < vectors) v[i][j] = __ldg(in + from[i] * vectors + c0 + j * lanes);
#pragma unroll
    for (int i = 0; i < Rows; ++i)
#pragma unroll
      for (int j = 0; j < Cols; ++j)
        if (from[i] >= 0 && c0 + j * lanes < vectors) out[to[i] * vectors + c0 + j * lanes] = v[i][j];
  }
}

/// out[i] = x[order[i] / top_k]: the rows of the (token, slot) pairs in expert order, each
/// row `vectors` accesses of V (16, 8, 4, 2 or 1 bytes: what the row size and both bases
/// allow). A team loads its Rows indices first, then moves the rows.
template <class V, int Rows>
__global__ void gather_rows(const V* x, const std::int32_t* order, FastDivide top_k, int rows, int vectors,
                            int lanes_log2, V* out) {
  const RowTeam me = RowTeam::mine(lanes_log2);
  for (long long first = me.team * Rows; first < rows; first += me.teams * Rows) {
    long long from[Rows], to[Rows];
#pragma unroll
    for (int i = 0; i < Rows; ++i) {
      to[i] = first + i;
      from[i] = to[i] < rows ? static_cast<long long>(top_k(static_cast<std::uint32_t>(__ldg(order + to[i])))) : -1LL;
    }
    move_rows<V, Rows>(x, from, out, to, vectors, me.lane, 1 << lanes_log2);
  }
}

/// A block of rows moved by a regroup: [from, from + rows) -> [to, to + rows).
struct RowBlock {
  long long from;
  long long to;
  long long rows;
};

/// Moves the rows of `blocks` (sorted by `to`, covering [0, total); empty blocks allowed);
/// with `inverse`, back. A team finds the block of its first row by binary search and
/// walks on from there for the next ones (its rows are consecutive).
template <class V, int Rows>
__global__ void regroup_rows(const V* in, V* out, const RowBlock* blocks, int count, int total, int vectors,
                             bool inverse, int lanes_log2) {
  const RowTeam me = RowTeam::mine(lanes_log2);
  for (long long first = me.team * Rows; first < total; first += me.teams * Rows) {
    int b = 0, hi = count - 1;  // the last block starting at or before `first`
    while (b < hi) {
      const int mid = (b + hi + 1) / 2;
      if (blocks[mid].to <= first)
        b = mid;
      else
        hi = mid - 1;
    }
    long long from[Rows], to[Rows];
#pragma unroll
    for (int i = 0; i < Rows; ++i) {
      const long long r = first + i;
      if (r >= total) {
        from[i] = to[i] = -1;
        continue;
      }
      while (b + 1 < count && r >= blocks[b].to + blocks[b].rows) ++b;
      const long long source = blocks[b].from + (r - blocks[b].to);
      from[i] = inverse ? r : source;
      to[i] = inverse ? source : r;
    }
    move_rows<V, Rows>(in, from, out, to, vectors, me.lane, 1 << lanes_log2);
  }
}

/// N values of T moved as one aligned access (16 bytes for the inputs of the vector paths).
template <class T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

/// Slots of a token whose rows the combine loads at once, and packs each thread sums.
inline constexpr int combine_slots = 8;
inline constexpr int combine_packs = 2;

/// out[t, h] = sum over slots s (in order) of weights[t, s] * y[inverse[t * k + s], h], in
/// fp32 with fused multiply-adds from 0 (the CPU's order, cpu/detail/combine.hpp), stored as Out.
/// A team of 2^lanes_log2 threads per token; each thread owns whole packs of N columns, so
/// no two threads add into one value and the order of the sum is fixed. Per group of
/// combine_slots slots, a thread loads the slots' rows and weights, then all their packs,
/// then adds them in slot order. N = 1 is the scalar path; a larger N needs hidden % N == 0
/// and rows aligned to the packs.
template <class Y, class Out, int N>
__global__ void combine(const Y* y, const std::int32_t* inverse, const float* weights, int tokens, int top_k,
                        int packs, int lanes_log2, Out* out) {
  const RowTeam me = RowTeam::mine(lanes_log2);
  const int lanes = 1 << lanes_log2;
  const auto* rows = reinterpret_cast<const Pack<Y, N>*>(y);
  auto* sums = reinterpret_cast<Pack<Out, N>*>(out);
  for (long long t = me.team; t < tokens; t += me.teams)
    for (int c0 = me.lane; c0 < packs; c0 += lanes * combine_packs) {
      float acc[combine_packs][N];
#pragma unroll
      for (int j = 0; j < combine_packs; ++j)
#pragma unroll
        for (int i = 0; i < N; ++i) acc[j][i] = 0.0f;
      for (int s0 = 0; s0 < top_k; s0 += combine_slots) {
        long long row[combine_slots];
        float w[combine_slots];
#pragma unroll
        for (int s = 0; s < combine_slots; ++s) {
          const bool slot = s0 + s < top_k;
          row[s] = slot ? __ldg(inverse + t * top_k + s0 + s) : 0;
          w[s] = slot ? __ldg(weights + t * top_k + s0 + s) : 0.0f;
        }
        Pack<Y, N> p[combine_slots][combine_packs];
#pragma unroll
        for (int s = 0; s < combine_slots; ++s)
#pragma unroll
          for (int j = 0; j < combine_packs; ++j)
            if (s0 + s < top_k && c0 + j * lanes < packs) p[s][j] = rows[row[s] * packs + c0 + j * lanes];
#pragma unroll
        for (int s = 0; s < combine_slots; ++s)
          if (s0 + s < top_k)
#pragma unroll
            for (int j = 0; j < combine_packs; ++j)
              if (c0 + j * lanes < packs)
#pragma unroll
                for (int i = 0; i < N; ++i) acc[j][i] = __fmaf_rn(w[s], to_float(p[s][j].v[i]), acc[j][i]);
      }
#pragma unroll
      for (int j = 0; j < combine_packs; ++j)
        if (c0 + j * lanes < packs) {
          Pack<Out, N> o;
#pragma unroll
          for (int i = 0; i < N; ++i) o.v[i] = from_float<Out>(acc[j][i]);
          sums[t * packs + c0 + j * lanes] = o;
        }
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
