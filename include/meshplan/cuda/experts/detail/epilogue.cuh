#pragma once
// What both fused expert paths (mma.sync, wgmma) do with their accumulators: the SwiGLU
// activation, and the stores. Written once, so the two paths round alike.
//
// The accumulators hold pairs of adjacent columns, 8 bytes apart per thread at best, so
// storing them straight to global memory uses a quarter of each 32-byte sector a warp
// touches. Instead every pair goes (converted to the output type, once) into the block's
// tile in shared memory (StagedTile), and the block then copies whole rows out, 16 bytes
// per thread, consecutive threads along a row (store_staged_tile). Nothing here adds or
// reorders an operation on a value: an output's bits are its fp32 sum (k order, fp32
// accumulation: docs/cuda.md, "Exactness") rounded once to the output type, as before.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

namespace meshplan::cuda::kernels {

/// silu(gate) * up in fp32, each operation rounded as written (no contraction), the CPU
/// reference's order.
__device__ inline float swiglu(float gate, float up) {
  return __fmul_rn(__fdiv_rn(gate, __fadd_rn(1.0f, expf(-gate))), up);
}

/// A block's output tile of Rows x Cols elements of Out in shared memory, rows `pitch`
/// elements apart. The 8 elements of padding per row spread a warp's pair writes (8 rows,
/// 4 pairs each: the mma C fragment) over all 32 banks: bf16 rows of 64 or 32 columns are
/// then an odd number of 16-byte units apart, fp32 rows of 128 or 64 columns 8 banks
/// apart, so every write takes the fewest wavefronts its bytes need (tested on the host).
/// Rows stay 16-byte aligned for the copy out.
template <class Out, int Rows, int Cols>
struct StagedTile {
  static constexpr int rows = Rows, cols = Cols, pitch = Cols + 8;
  static constexpr int chunk = 16 / static_cast<int>(sizeof(Out));  // elements per 16-byte store
  static constexpr int bytes = Rows * pitch * static_cast<int>(sizeof(Out));
  static_assert(Cols % chunk == 0 && pitch * sizeof(Out) % 16 == 0, "16-byte aligned rows of whole chunks");

  /// The element offset of (row, col) in the tile.
  __host__ __device__ static constexpr int offset(int row, int col) { return row * pitch + col; }
};

/// Writes outputs (row, col) and (row, col + 1) of the tile, rounded to Out: one 4-byte
/// (bf16) or 8-byte (fp32) store, aligned because col is even and the pitch is even.
template <class Tile, class Out>
__device__ inline void stage_pair(Out* tile, int row, int col, float v0, float v1) {
  Out* at = tile + Tile::offset(row, col);
  if constexpr (std::is_same_v<Out, float>) {
    *reinterpret_cast<float2*>(at) = make_float2(v0, v1);
  } else {
    static_assert(std::is_same_v<Out, __nv_bfloat16>, "fp32 or bf16 outputs");
    *reinterpret_cast<__nv_bfloat162*>(at) = __halves2bfloat162(__float2bfloat16_rn(v0), __float2bfloat16_rn(v1));
  }
}

/// act (row, col), (row, col + 1) = silu(gate) * up, staged as bf16.
template <class Tile>
__device__ inline void stage_swiglu_pair(__nv_bfloat16* tile, int row, int col, const float (&gate)[2],
                                         const float (&up)[2]) {
  stage_pair<Tile>(tile, row, col, swiglu(gate[0], up[0]), swiglu(gate[1], up[1]));
}

/// Copies the staged tile's first `rows` rows and `cols` columns (the rest are past the
/// expert's rows or the output's width) to `out`, whose rows are `pitch` elements apart
/// and start `store_bytes`-aligned (row_store_bytes in tiles.cuh: 16, 8, 4 or one
/// element). Thread t of `Threads` takes 16-byte chunks t, t + Threads, ... in row order, so
/// a warp writes whole rows (fp32 rows of 128 columns: 512 contiguous bytes). Call after a
/// barrier that follows every thread's stage_pair.
template <class Tile, int Threads, class Out>
__device__ inline void store_staged_tile(const Out* tile, int rows, int cols, Out* out, long long pitch,
                                         int store_bytes) {
  constexpr int chunk = Tile::chunk, chunks = Tile::cols / chunk;
  for (int id = static_cast<int>(threadIdx.x); id < rows * chunks; id += Threads) {
    const int row = id / chunks, col = (id % chunks) * chunk;
    if (col >= cols) continue;
    const Out* from = tile + Tile::offset(row, col);
    Out* to = out + row * pitch + col;
    if (col + chunk <= cols && store_bytes == 16) {
      *reinterpret_cast<uint4*>(to) = *reinterpret_cast<const uint4*>(from);
    } else if (col + chunk <= cols && store_bytes == 8) {
      reinterpret_cast<uint2*>(to)[0] = reinterpret_cast<const uint2*>(from)[0];
      reinterpret_cast<uint2*>(to)[1] = reinterpret_cast<const uint2*>(from)[1];
    } else if (col + chunk <= cols && store_bytes == 4) {
#pragma unroll
      for (int w = 0; w < 4; ++w) reinterpret_cast<unsigned*>(to)[w] = reinterpret_cast<const unsigned*>(from)[w];
    } else {  // the last chunk of a row, or rows only element-aligned
      const int n = cols - col < chunk ? cols - col : chunk;
      for (int e = 0; e < n; ++e) to[e] = from[e];
    }
  }
}

}  // namespace meshplan::cuda::kernels
