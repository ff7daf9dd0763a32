#pragma once
// The fused expert kernels for sm_90 (H100, H200): the same two grouped GEMMs as the
// mma.sync path (grouped_gemm.cuh: the row tiles, the operands, the zero-filled edges, the
// epilogues), computed by warpgroup MMA. Each warpgroup of a block owns 64 rows of the row
// tile and issues wgmma.m64n128k16 with both operands in shared memory:
//
//   gate_up_swiglu_wgmma  the 128 B rows of a stage are 64 gate rows then the same 64 up
//                         rows, so one instruction computes both and the thread holding
//                         gate column c also holds up column c (accumulator + 32)
//   down_wgmma            the 128 B rows are 128 rows of down
//
// Stages of 64 k are filled by cp.async into the 128-byte swizzle (wgmma_layout.cuh), which
// also lets the A rows be gathered through the permutation (TMA cannot gather rows on
// sm_90); as many stages as the policy's shared-memory budget holds (tiles.cuh: 7 for the
// large tile at one block per SM, 4 for the small at two). The k order of every output is
// fixed (64-wide stages, k16 steps in order), so neither the tile class, nor the stage
// count, nor a row's place in its tile changes a result.
//
// A block's work is one row tile and one block of columns (tile_work: column blocks
// fastest); its outputs go through shared memory to 16-byte stores (epilogue.cuh).
//
// wgmma exists only in sm_90a code: built for another architecture the kernels trap, and
// wgmma_built() tells the host not to choose them.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <mutex>
#include <vector>

#include "meshplan/cuda/core/buffer.cuh"
#include "meshplan/cuda/core/error.cuh"
#include "meshplan/cuda/experts/detail/epilogue.cuh"
#include "meshplan/cuda/experts/detail/grouped_gemm.cuh"
#include "meshplan/cuda/experts/detail/tiles.cuh"
#include "meshplan/cuda/experts/detail/wgmma_layout.cuh"

namespace meshplan::cuda::kernels {

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MESHPLAN_WGMMA 1
#endif

/// Orders the thread's generic-proxy writes to shared memory (cp.async, stores) before
/// wgmma's async-proxy reads of it.
__device__ inline void fence_async_shared() {
#ifdef MESHPLAN_WGMMA
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
__device__ inline void wgmma_fence() {
#ifdef MESHPLAN_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ inline void wgmma_commit() {
#ifdef MESHPLAN_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
/// Waits until at most `Pending` committed groups of this warpgroup's MMAs are in flight.
template <int Pending>
__device__ inline void wgmma_wait() {
#ifdef MESHPLAN_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(Pending) : "memory");
#endif
}
/// Keeps the compiler from moving accumulator reads or writes across the asynchronous MMA.
__device__ inline void fence_accumulators(float (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

#define MESHPLAN_F8(d, i) \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])

/// d (64 x 128, this thread's 64 accumulators) += A (64 x 16) . B (128 x 16)^T, both K-major
/// bf16 in shared memory.
__device__ inline void wgmma_m64n128k16(float (&d)[64], std::uint64_t a, std::uint64_t b) {
#ifdef MESHPLAN_WGMMA
  asm volatile(
      "{\n.reg .pred accumulate;\nsetp.ne.b32 accumulate, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, "
      "%23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, "
      "%45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "%64, %65, accumulate, 1, 1, 0, 0;\n}\n"
      : MESHPLAN_F8(d, 0), MESHPLAN_F8(d, 8), MESHPLAN_F8(d, 16), MESHPLAN_F8(d, 24), MESHPLAN_F8(d, 32),
        MESHPLAN_F8(d, 40), MESHPLAN_F8(d, 48), MESHPLAN_F8(d, 56)
      : "l"(a), "l"(b), "r"(1));
#endif
}
#undef MESHPLAN_F8

/// The shared memory of a block of policy P: its stages, and 1 KiB to align the first to
/// the swizzle's 1024 bytes (the policy's arithmetic, checked against the layout's here).
template <class P>
constexpr int wgmma_shared_bytes() {
  static_assert(P::stage_bytes == (P::block_m + P::b_rows) * wgmma_layout::row_bytes &&
                    P::block_k == wgmma_layout::tile_k && P::align_bytes == wgmma_layout::group_bytes,
                "the policy's stages are the layout's tiles");
  return P::shared_bytes;
}

/// The main loop: this warpgroup's 64 rows of the tile times the stage's 128 B rows, over
/// all of K. B row r of a stage is row (n0 + r % per_op) of operand r / per_op, where
/// per_op = 128 / NB and n0 = column_block * per_op; rows past `n` are zeros.
template <class P, int NB>
__device__ inline void wgmma_mainloop(const GemmTile& tile, int column_block, const ARows& a, const BOperands& b, int n,
                                      int k, bool vectors, unsigned char* shared, float (&acc)[64]) {
  namespace wl = wgmma_layout;
  constexpr int BM = P::block_m, BR = P::b_rows, STAGES = P::stages, threads = P::threads, chunks = wl::tile_k / 8;
  constexpr int per_op = BR / NB, a_chunks = BM * chunks / threads, b_chunks = BR * chunks / threads;
  static_assert(BM * chunks % threads == 0 && BR * chunks % threads == 0, "whole chunks per thread");
  constexpr int a_bytes = BM * wl::row_bytes, stage_bytes = (BM + BR) * wl::row_bytes;
  static_assert(a_bytes % wl::group_bytes == 0 && stage_bytes % wl::group_bytes == 0, "swizzle-aligned tiles");

  const int tid = threadIdx.x, warpgroup = tid / 128;
  const int n0 = column_block * per_op;

  const __nv_bfloat16* a_src[a_chunks];
  bool a_ok[a_chunks];
#pragma unroll
  for (int c = 0; c < a_chunks; ++c) a_src[c] = a_row(tile, a, (tid + c * threads) / chunks, k, a_ok[c]);
  const __nv_bfloat16* b_src[b_chunks];
  bool b_ok[b_chunks];
#pragma unroll
  for (int c = 0; c < b_chunks; ++c) {
    const int row = (tid + c * threads) / chunks, op = row / per_op, nr = n0 + row % per_op;
    b_ok[c] = nr < n;
    const __nv_bfloat16* base = op == 0 ? b.base[0] : b.base[1];  // no run-time index: b stays in registers
    b_src[c] = base + tile.expert * b.expert_stride + static_cast<long long>(b_ok[c] ? nr : 0) * k;
  }

  auto load_stage = [&](int stage, int kt) {
    unsigned char* s = shared + stage * stage_bytes;
    const int k0 = kt * wl::tile_k;
#pragma unroll
    for (int c = 0; c < a_chunks; ++c) {
      const int id = tid + c * threads, row = id / chunks, chunk = id % chunks;
      load_chunk(s + wl::swizzled_chunk(row, chunk), a_src[c], a_ok[c], k0 + chunk * 8, k, vectors);
    }
#pragma unroll
    for (int c = 0; c < b_chunks; ++c) {
      const int id = tid + c * threads, row = id / chunks, chunk = id % chunks;
      load_chunk(s + a_bytes + wl::swizzled_chunk(row, chunk), b_src[c], b_ok[c], k0 + chunk * 8, k, vectors);
    }
  };

#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.0f;

  // One group of MMAs stays in flight while the next stage is waited for: stage kt is
  // computed while kt - 1's MMAs may still run, so the stage refilled at step kt is
  // kt - 2's, and STAGES - 2 stages are loaded ahead (5 of the large tile's 7). The wait
  // depth follows: one cp.async group is committed per step, so stage kt has landed when
  // at most STAGES - 3 newer groups are pending.
  static_assert(STAGES >= 3, "a stage computing, one in flight, one loading");
  const int k_tiles = (k + wl::tile_k - 1) / wl::tile_k;
#pragma unroll
  for (int s = 0; s < STAGES - 2; ++s) {
    if (s < k_tiles) load_stage(s, s);
    cp_async_commit();
  }
  for (int kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<STAGES - 3>();  // stage kt has landed (one group is committed per step)
    fence_async_shared();
    __syncthreads();
    // Every warpgroup has passed wgmma_wait<1> of step kt - 1: kt - 2's MMAs are done.
    if (const int next = kt + STAGES - 2; next < k_tiles) load_stage(next % STAGES, next);
    cp_async_commit();

    const auto stage = static_cast<std::uint32_t>(__cvta_generic_to_shared(shared + (kt % STAGES) * stage_bytes));
    const std::uint32_t a_tile = stage + warpgroup * 64 * wl::row_bytes, b_tile = stage + a_bytes;
    fence_accumulators(acc);
    wgmma_fence();
#pragma unroll
    for (int step = 0; step < wl::tile_k / wl::mma_k; ++step)
      wgmma_m64n128k16(acc, wl::k_major_descriptor(a_tile, step), wl::k_major_descriptor(b_tile, step));
    wgmma_commit();
    wgmma_wait<1>();
    fence_accumulators(acc);
  }
  wgmma_wait<0>();
  fence_accumulators(acc);
  cp_async_wait<0>();
}

/// The block's shared memory, aligned up to the swizzle's 1024 bytes.
__device__ inline unsigned char* swizzle_aligned(unsigned char* p) {
  const auto offset = static_cast<unsigned>(__cvta_generic_to_shared(p)) % wgmma_layout::group_bytes;
  return offset == 0 ? p : p + (wgmma_layout::group_bytes - offset);
}

/// Calls store(reg, row, col) for every pair of accumulators (reg, reg + 1) among the first
/// `regs` the thread holds: the warpgroup's tile position (row, col), (row, col + 1); rows
/// past the tile are left out.
template <int Regs, class Store>
__device__ inline void for_each_wgmma_pair(const GemmTile& tile, Store&& store) {
  const int warpgroup = threadIdx.x / 128, thread = threadIdx.x % 128;
#pragma unroll
  for (int reg = 0; reg < Regs; reg += 2) {
    const wgmma_layout::Coord at = wgmma_layout::accumulator(thread, reg);
    const int row = warpgroup * 64 + at.row;
    if (row < tile.rows) store(reg, row, at.col);
  }
}

/// The staged output tile of policy P's kernels: Cols columns of Out per block, in the
/// stages' memory once the main loop is done with it.
template <class P, class Out, int Cols>
using WgmmaStagedTile = StagedTile<Out, P::block_m, Cols>;

/// act[r, i] = silu(gate) * up for the block's tile and 64 columns of I. The column of
/// every (row tile, column block) is tile_work's; `store_bytes` is row_store_bytes(act).
template <class P>
__global__ void __launch_bounds__(P::threads, P::blocks_per_sm)
    gate_up_swiglu_wgmma(const GemmTile* tiles, ARows a, BOperands b, int inter, int hidden, bool vectors,
                         __nv_bfloat16* act, int store_bytes) {
#ifdef MESHPLAN_WGMMA
  extern __shared__ __align__(16) unsigned char wgmma_shared[];
  constexpr int columns = P::b_rows / 2;
  using Tile = WgmmaStagedTile<P, __nv_bfloat16, columns>;
  static_assert(Tile::bytes <= P::stages * P::stage_bytes, "the output tile fits in the stages");
  const TileWork work = tile_work(blockIdx.x, static_cast<unsigned>((inter + columns - 1) / columns));
  const GemmTile tile = tiles[work.tile];
  unsigned char* shared = swizzle_aligned(wgmma_shared);
  float acc[64];
  wgmma_mainloop<P, 2>(tile, work.column_block, a, b, inter, hidden, vectors, shared, acc);
  // The stages become the output tile once every warpgroup's MMAs are done reading them.
  __syncthreads();
  auto* staged = reinterpret_cast<__nv_bfloat16*>(shared);
  for_each_wgmma_pair<32>(tile, [&](int reg, int row, int col) {
    const float gate[2] = {acc[reg], acc[reg + 1]}, up[2] = {acc[reg + 32], acc[reg + 33]};
    stage_swiglu_pair<Tile>(staged, row, col, gate, up);
  });
  __syncthreads();
  const int n0 = work.column_block * columns;
  store_staged_tile<Tile, P::threads>(staged, tile.rows, inter - n0 < columns ? inter - n0 : columns,
                                      act + static_cast<long long>(tile.row_begin) * inter + n0, inter, store_bytes);
#else
  __trap();
#endif
}

/// y[r, h] = act_r . down_h for the block's tile and 128 columns of H, stored as Out;
/// `store_bytes` is row_store_bytes(y).
template <class P, class Out>
__global__ void __launch_bounds__(P::threads, P::blocks_per_sm)
    down_wgmma(const GemmTile* tiles, ARows a, BOperands b, int hidden, int inter, bool vectors, Out* y,
               int store_bytes) {
#ifdef MESHPLAN_WGMMA
  extern __shared__ __align__(16) unsigned char wgmma_shared[];
  constexpr int columns = P::b_rows;
  using Tile = WgmmaStagedTile<P, Out, columns>;
  static_assert(Tile::bytes <= P::stages * P::stage_bytes, "the output tile fits in the stages");
  const TileWork work = tile_work(blockIdx.x, static_cast<unsigned>((hidden + columns - 1) / columns));
  const GemmTile tile = tiles[work.tile];
  unsigned char* shared = swizzle_aligned(wgmma_shared);
  float acc[64];
  wgmma_mainloop<P, 1>(tile, work.column_block, a, b, hidden, inter, vectors, shared, acc);
  __syncthreads();  // as above: the stages become the output tile
  auto* staged = reinterpret_cast<Out*>(shared);
  for_each_wgmma_pair<64>(
      tile, [&](int reg, int row, int col) { stage_pair<Tile>(staged, row, col, acc[reg], acc[reg + 1]); });
  __syncthreads();
  const int n0 = work.column_block * columns;
  store_staged_tile<Tile, P::threads>(staged, tile.rows, hidden - n0 < columns ? hidden - n0 : columns,
                                      y + static_cast<long long>(tile.row_begin) * hidden + n0, hidden, store_bytes);
#else
  __trap();
#endif
}

/// Writes 1 where the code running is sm_90a code (it has wgmma), else 0. A template, so
/// that every translation unit may define it.
template <int = 0>
__global__ void wgmma_probe(int* built) {
#ifdef MESHPLAN_WGMMA
  *built = 1;
#else
  *built = 0;
#endif
}

}  // namespace meshplan::cuda::kernels

#undef MESHPLAN_WGMMA

namespace meshplan::cuda {

/// Whether the current device can run the wgmma kernels of this build: an sm_90 device and
/// sm_90a code for it (CMAKE_CUDA_ARCHITECTURES 90a). Asked of the device once per device,
/// by a probe kernel on the default stream (so not inside a stream capture). The probe
/// answers for the translation units of the program alike: build all of them for the same
/// architectures.
inline bool wgmma_built() {
  int device = 0;
  MESHPLAN_CUDA_CHECK(cudaGetDevice(&device));
  static std::mutex mutex;
  static std::vector<int> known;  // per device: -1 not asked yet, else the answer
  const std::lock_guard lock(mutex);
  if (known.size() <= static_cast<std::size_t>(device)) known.resize(static_cast<std::size_t>(device) + 1, -1);
  int& answer = known[static_cast<std::size_t>(device)];
  if (answer < 0) {
    int built = 0;
    if (current_sm() == 90) {
      DeviceBuffer<int> flag(1);
      kernels::wgmma_probe<><<<1, 1>>>(flag.data());
      const cudaError_t launched = cudaGetLastError();
      // No code in this build for the device at all: certainly no wgmma.
      if (launched != cudaErrorNoKernelImageForDevice && launched != cudaErrorInvalidDeviceFunction) {
        MESHPLAN_CUDA_CHECK(launched);
        built = flag.download(nullptr)[0];
      }
    }
    answer = built;  // kept only once known: a failure above throws and asks again next time
  }
  return answer == 1;
}

}  // namespace meshplan::cuda
