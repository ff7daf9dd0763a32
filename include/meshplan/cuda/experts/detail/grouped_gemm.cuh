#pragma once
// The fused expert kernels: a grouped GEMM over row tiles of many experts, bf16 in, fp32
// accumulation on tensor cores (mma.sync m16n8k16, operands through ldmatrix from shared
// memory filled by cp.async), in two epilogues:
//
//   gate_up_swiglu  act[r, i] = silu(x_r . gate_i) * (x_r . up_i), stored bf16 [rows, I];
//                   x_r read through the permutation (x[order[r] / k]) or from grouped rows
//   down            y[r, h] = act_r . down_h, stored as fp32 or bf16 [rows, H]
//
// Both operands are K-contiguous (rows [.., K], weights [N, K]), the "TN" GEMM that
// ldmatrix serves without transposes. A block takes one row tile (GemmTile) and one
// block_n slice of the outputs (tile_work: the slices of a row tile run together); its
// outputs go through shared memory to 16-byte stores (epilogue.cuh). Rows past the tile,
// columns past N and k past K are zeros in shared memory, so no size needs to be a
// multiple of a tile. Each output is summed in k order, 16 at a time, the same way in
// every block and position: a row's result does not depend on its neighbours or on its
// expert's load.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "meshplan/cuda/core/detail/device_types.cuh"
#include "meshplan/cuda/experts/detail/epilogue.cuh"
#include "meshplan/cuda/experts/detail/mma_layout.cuh"
#include "meshplan/cuda/experts/detail/tiles.cuh"

namespace meshplan::cuda::kernels {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define MESHPLAN_MMA_SYNC 1
#endif

__device__ inline unsigned shared_address(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }

/// 16 bytes global -> shared, asynchronously; zeros instead when !valid (src-size 0).
__device__ inline void cp_async_16(void* shared, const void* global, bool valid) {
#ifdef MESHPLAN_MMA_SYNC
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(shared)), "l"(global),
               "r"(valid ? 16 : 0));
#endif
}
__device__ inline void cp_async_commit() {
#ifdef MESHPLAN_MMA_SYNC
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int Pending>
__device__ inline void cp_async_wait() {
#ifdef MESHPLAN_MMA_SYNC
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending));
#endif
}

/// Four 8x8 b16 matrices; lane l gives the address of row l % 8 of matrix l / 8.
__device__ inline void ldmatrix_x4(unsigned (&r)[4], const void* shared) {
#ifdef MESHPLAN_MMA_SYNC
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(shared)));
#endif
}
/// Two 8x8 b16 matrices; lanes 0-15 give the addresses.
__device__ inline void ldmatrix_x2(unsigned (&r)[2], const void* shared) {
#ifdef MESHPLAN_MMA_SYNC
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(shared_address(shared)));
#endif
}

/// d += a . b for a 16x16 bf16 A (row), 16x8 bf16 B (col), fp32 accumulators.
__device__ inline void mma_bf16_16816(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
#ifdef MESHPLAN_MMA_SYNC
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

/// Where a tile's A rows come from: `rows` [.., K] directly, or, with `gather`, token rows
/// of `rows` chosen by gather[r] / top_k (the permutation, read in place).
struct ARows {
  const __nv_bfloat16* rows;
  const std::int32_t* gather;
  int top_k;
};

/// The B operands of an expert: weights [N, K] at `base[b] + expert * expert_stride`
/// (gate and up for the first kernel, down for the second).
struct BOperands {
  const __nv_bfloat16* base[2];
  long long expert_stride;
};

/// Row `row` of the tile's A operand: where it starts (the token's row when read through
/// the permutation), and in `ok` whether the tile has that row (else the tile's first row
/// stands in, a valid address for zero-fill copies).
__device__ inline const __nv_bfloat16* a_row(const GemmTile& tile, const ARows& a, int row, int k, bool& ok) {
  ok = row < tile.rows;
  const long long r = tile.row_begin + (ok ? row : 0);
  const long long src = a.gather ? a.gather[r] / a.top_k : r;
  return a.rows + src * k;
}

/// Elements kk..kk+7 of the row at `src` (K = k) into 16 bytes of shared memory at `dst`:
/// zeros past k or for a missing row (`ok` false). By cp.async with `vectors` (K % 8 == 0,
/// 16-byte aligned operands), else element by element.
__device__ inline void load_chunk(void* dst, const __nv_bfloat16* src, bool ok, int kk, int k, bool vectors) {
  if (vectors) {
    const bool inside = ok && kk < k;  // a zero-fill copy still names an address: keep it in the buffer
    cp_async_16(dst, inside ? src + kk : src, inside);
  } else {
    auto* out = static_cast<__nv_bfloat16*>(dst);
#pragma unroll
    for (int e = 0; e < 8; ++e) out[e] = ok && kk + e < k ? src[kk + e] : __float2bfloat16_rn(0.0f);
  }
}

/// The shared memory of policy P's main loop with NB B operands.
template <class P, int NB>
constexpr int gemm_shared_bytes() {
  return P::stages * (P::block_m + NB * P::block_n) * (P::block_k + 8) * 2;
}

/// The staged output tile of policy P: block_m x block_n of Out (a gate_up block's
/// block_n columns of the activation, a down block's of y).
template <class P, class Out>
using GemmStagedTile = StagedTile<Out, P::block_m, P::block_n>;

/// The shared memory a block of policy P needs: the main loop's stages, or the staged
/// output tile that reuses them, whichever is larger (down_large's fp32 tile is).
template <class P, int NB, class Out>
constexpr int gemm_block_shared_bytes() {
  constexpr int stages = gemm_shared_bytes<P, NB>(), tile = GemmStagedTile<P, Out>::bytes;
  return stages > tile ? stages : tile;
}

/// The block's tile of the product, accumulated in registers: acc[b][mi][ni][4] for B
/// operand b, the warp's m16 fragment mi and n8 fragment ni (mma's C layout).
template <class P, int NB>
struct GemmAccumulators {
  static constexpr int warp_m = P::block_m / P::warps_m, warp_n = P::block_n / P::warps_n;
  static constexpr int mi = warp_m / 16, ni = warp_n / 8;
  float acc[NB][mi][ni][4];
};

/// The main loop: the tile's rows times the block's slice of N, over all of K.
/// `vectors`: K % 8 == 0 and 16-byte aligned operands (cp.async); otherwise element loads.
template <class P, int NB>
__device__ inline void gemm_mainloop(const GemmTile& tile, int column_block, const ARows& a, const BOperands& b, int n,
                                     int k, bool vectors, __nv_bfloat16* shared, GemmAccumulators<P, NB>& out) {
  using G = GemmAccumulators<P, NB>;
  constexpr int BM = P::block_m, BN = P::block_n, BK = P::block_k, LDS = BK + 8, STAGES = P::stages;
  constexpr int threads = P::threads, chunks_per_row = BK / 8;
  constexpr int a_chunks = BM * chunks_per_row / threads, b_chunks = BN * chunks_per_row / threads;
  static_assert(BM * chunks_per_row % threads == 0 && BN * chunks_per_row % threads == 0, "whole chunks per thread");
  static_assert(BK % 16 == 0 && G::warp_m % 16 == 0 && G::warp_n % 8 == 0, "tiles of whole mma fragments");
  constexpr int stage_elems = (BM + NB * BN) * LDS;

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp / P::warps_n, wn = warp % P::warps_n;
  const int n0 = column_block * BN;

  // The rows and weight rows this thread copies, fixed for the whole K loop.
  const __nv_bfloat16* a_src[a_chunks];
  bool a_ok[a_chunks];
#pragma unroll
  for (int c = 0; c < a_chunks; ++c) a_src[c] = a_row(tile, a, (tid + c * threads) / chunks_per_row, k, a_ok[c]);
  const __nv_bfloat16* b_src[NB][b_chunks];
  bool b_ok[b_chunks];
#pragma unroll
  for (int c = 0; c < b_chunks; ++c) {
    const int row = (tid + c * threads) / chunks_per_row;
    b_ok[c] = n0 + row < n;
    const long long nr = b_ok[c] ? n0 + row : 0;
#pragma unroll
    for (int op = 0; op < NB; ++op) b_src[op][c] = b.base[op] + tile.expert * b.expert_stride + nr * k;
  }

  auto load_stage = [&](int stage, int kt) {
    __nv_bfloat16* s = shared + stage * stage_elems;
    const int k0 = kt * BK;
#pragma unroll
    for (int c = 0; c < a_chunks; ++c) {
      const int id = tid + c * threads, row = id / chunks_per_row, kc = (id % chunks_per_row) * 8;
      load_chunk(s + row * LDS + kc, a_src[c], a_ok[c], k0 + kc, k, vectors);
    }
#pragma unroll
    for (int op = 0; op < NB; ++op)
#pragma unroll
      for (int c = 0; c < b_chunks; ++c) {
        const int id = tid + c * threads, row = id / chunks_per_row, kc = (id % chunks_per_row) * 8;
        load_chunk(s + (BM + op * BN + row) * LDS + kc, b_src[op][c], b_ok[c], k0 + kc, k, vectors);
      }
  };

#pragma unroll
  for (int op = 0; op < NB; ++op)
#pragma unroll
    for (int i = 0; i < G::mi; ++i)
#pragma unroll
      for (int j = 0; j < G::ni; ++j)
#pragma unroll
        for (int v = 0; v < 4; ++v) out.acc[op][i][j][v] = 0.0f;

  const int k_tiles = (k + BK - 1) / BK;
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < k_tiles) load_stage(s, s);
    cp_async_commit();
  }
  for (int kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    // Refill the stage every warp finished with in the previous iteration.
    if (const int next = kt + STAGES - 1; next < k_tiles) load_stage(next % STAGES, next);
    cp_async_commit();

    const __nv_bfloat16* s = shared + (kt % STAGES) * stage_elems;
#pragma unroll
    for (int ks = 0; ks < BK; ks += 16) {
      unsigned af[G::mi][4];
#pragma unroll
      for (int i = 0; i < G::mi; ++i) {
        const mma_layout::Coord at = mma_layout::a_ldmatrix_row(lane);
        ldmatrix_x4(af[i], s + (wm * G::warp_m + i * 16 + at.row) * LDS + ks + at.k);
      }
#pragma unroll
      for (int op = 0; op < NB; ++op)
#pragma unroll
        for (int j = 0; j < G::ni; ++j) {
          unsigned bf[2];
          const mma_layout::Coord at = mma_layout::b_ldmatrix_row(lane);
          const int row = BM + op * BN + wn * G::warp_n + j * 8 + at.row;
          ldmatrix_x2(bf, s + row * LDS + ks + at.k);
#pragma unroll
          for (int i = 0; i < G::mi; ++i) mma_bf16_16816(out.acc[op][i][j], af[i], bf);
        }
    }
  }
  cp_async_wait<0>();
}

/// Calls store(i, j, half, row, col) for the pairs of outputs the thread holds: mma's C
/// layout, accumulators 2 * half and 2 * half + 1 of fragment (i, j) are the block's
/// (row, col) and (row, col + 1), both inside the block's block_m x block_n tile; rows past
/// the row tile are left out, columns are not.
template <class P, class G, class Store>
__device__ inline void for_each_output_pair(const GemmTile& tile, Store&& store) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int wm = warp / P::warps_n, wn = warp % P::warps_n;
#pragma unroll
  for (int i = 0; i < G::mi; ++i)
#pragma unroll
    for (int j = 0; j < G::ni; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const mma_layout::Coord at = mma_layout::accumulator(lane, 2 * half);
        const int row = wm * G::warp_m + i * 16 + at.row;
        const int col = wn * G::warp_n + j * 8 + at.k;
        if (row < tile.rows) store(i, j, half, row, col);
      }
}

/// act[r, i] = silu(gate) * up for the block's tile; `act` has `inter` columns.
/// `store_bytes` is row_store_bytes(act).
template <class P>
__global__ void __launch_bounds__(P::threads)
    gate_up_swiglu(const GemmTile* tiles, ARows a, BOperands b, int inter, int hidden, bool vectors, __nv_bfloat16* act,
                   int store_bytes) {
#ifdef MESHPLAN_MMA_SYNC
  extern __shared__ __align__(16) unsigned char gemm_shared[];
  using G = GemmAccumulators<P, 2>;
  using Tile = GemmStagedTile<P, __nv_bfloat16>;
  const TileWork work = tile_work(blockIdx.x, static_cast<unsigned>((inter + P::block_n - 1) / P::block_n));
  const GemmTile tile = tiles[work.tile];
  G g;
  gemm_mainloop<P, 2>(tile, work.column_block, a, b, inter, hidden, vectors,
                      reinterpret_cast<__nv_bfloat16*>(gemm_shared), g);
  // The stages become the output tile once every warp is done reading them.
  __syncthreads();
  auto* staged = reinterpret_cast<__nv_bfloat16*>(gemm_shared);
  for_each_output_pair<P, G>(tile, [&](int i, int j, int half, int row, int col) {
    const float gate[2] = {g.acc[0][i][j][half * 2], g.acc[0][i][j][half * 2 + 1]};
    const float up[2] = {g.acc[1][i][j][half * 2], g.acc[1][i][j][half * 2 + 1]};
    stage_swiglu_pair<Tile>(staged, row, col, gate, up);
  });
  __syncthreads();
  const int n0 = work.column_block * P::block_n;
  store_staged_tile<Tile, P::threads>(staged, tile.rows, inter - n0 < P::block_n ? inter - n0 : P::block_n,
                                      act + static_cast<long long>(tile.row_begin) * inter + n0, inter, store_bytes);
#else
  __trap();
#endif
}

/// y[r, h] = act_r . down_h for the block's tile, stored as Out (float or bf16); `y` has
/// `hidden` columns. `store_bytes` is row_store_bytes(y).
template <class P, class Out>
__global__ void __launch_bounds__(P::threads)
    down(const GemmTile* tiles, ARows a, BOperands b, int hidden, int inter, bool vectors, Out* y, int store_bytes) {
#ifdef MESHPLAN_MMA_SYNC
  extern __shared__ __align__(16) unsigned char gemm_shared[];
  using G = GemmAccumulators<P, 1>;
  using Tile = GemmStagedTile<P, Out>;
  const TileWork work = tile_work(blockIdx.x, static_cast<unsigned>((hidden + P::block_n - 1) / P::block_n));
  const GemmTile tile = tiles[work.tile];
  G d;
  gemm_mainloop<P, 1>(tile, work.column_block, a, b, hidden, inter, vectors,
                      reinterpret_cast<__nv_bfloat16*>(gemm_shared), d);
  __syncthreads();  // as above: the stages become the output tile
  auto* staged = reinterpret_cast<Out*>(gemm_shared);
  for_each_output_pair<P, G>(tile, [&](int i, int j, int half, int row, int col) {
    stage_pair<Tile>(staged, row, col, d.acc[0][i][j][half * 2], d.acc[0][i][j][half * 2 + 1]);
  });
  __syncthreads();
  const int n0 = work.column_block * P::block_n;
  store_staged_tile<Tile, P::threads>(staged, tile.rows, hidden - n0 < P::block_n ? hidden - n0 : P::block_n,
                                      y + static_cast<long long>(tile.row_begin) * hidden + n0, hidden, store_bytes);
#else
  __trap();
#endif
}

}  // namespace meshplan::cuda::kernels

#undef MESHPLAN_MMA_SYNC
