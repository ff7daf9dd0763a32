#pragma once
// Matrix products c = a b^T for the MoE block's experts, fast and bit-exact.
//
// The defined order, which every path reproduces bit for bit:
//
//     c[i][j] = 0.0f;  for k = 0 .. K-1:  c[i][j] = fmaf(a[i][k], b[j][k], c[i][j])
//
// (fp32, bf16 inputs widened exactly). Each output is one sequential chain of fused
// multiply-adds from +0, so the kernels may
//   - block over K: store the fp32 partial and continue the chain from it later;
//   - vectorize along the output columns j: every lane is its own chain and all lanes
//     step k together (never along k, which would split a chain into partial sums);
//   - run independent output tiles on different threads.
// The result is then the same whatever the rows, the blocking, the threads or the
// instruction set (cpu/isa.hpp).
//
// Structure (the Goto/BLIS decomposition, with the operands' roles chosen so that vectors
// run along the output columns):
//   - b is packed once into panels of 32 columns, [K][32] each (cpu/detail/packed_matrix.hpp);
//   - a tile is up to 128 rows of one product by a range of its panels. It first gathers
//     its rows of A, for all of K, into a packed fp32 block: one copy that fuses the gather
//     through a permutation of (token, slot) pairs and the bf16 widening;
//   - then, per column block of 8 panels, per K block of 256, per panel, per micro-panel of
//     MR rows, a register-tiled microkernel holds an MR x 32 block of c in registers and,
//     for each k, broadcasts MR values of a into the panel's row k (two zmm vectors on
//     AVX-512; two ymm vectors per half panel on AVX2). The panel's K block stays in L1
//     across the micro-panels, the packed A and the column block of c in L2, and the
//     kernel prefetches the next step's weights into L2 as it goes.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

// gemm_batch runs many independent products (one per expert) as one space of tiles, so
// that an expert with few rows does not leave threads idle.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/detail/macros.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/cpu/isa.hpp"
#include "meshplan/cpu/detail/packed_matrix.hpp"
#include "meshplan/cpu/thread_pool.hpp"

namespace meshplan::cpu {

/// Where row i of A lives: row r = i (or index[i] / index_div) starts at base + r * ld, and
/// its element k is at row(i)[k * step]. With an index, rows are read through a permutation
/// of (token, slot) pairs: index[i] is a pair, index_div the slots per token. With ld = 1
/// and step = the matrix's leading dimension, A is the transpose of a row-major matrix (the
/// backward's weight gradients read their output gradients that way, without a copy).
template <StorageType X>
struct RowSource {
  const X* base = nullptr;
  index_t ld = 0;
  const std::int32_t* index = nullptr;
  index_t index_div = 1;
  index_t step = 1;

  const X* row(index_t i) const noexcept {
    index_t r = index != nullptr ? static_cast<index_t>(index[i]) / index_div : i;
    return base + r * ld;
  }
  /// A [rows, cols] as the transpose of m [cols, rows] (leading dimension ld_m).
  static RowSource transposed(const X* m, index_t ld_m) noexcept { return {m, 1, nullptr, 1, ld_m}; }
};

/// One product: c [m, N] (leading dimension ldc) = a [m, K] b^T, b packed [N, K]. With
/// `accumulate`, every chain starts from what c holds instead of +0: c += a b^T in the
/// defined order, so a sum split over calls (over rows of a weight gradient, or over ranks)
/// continues one chain and has the bits of a single call.
template <StorageType X>
struct GemmTask {
  RowSource<X> a;
  index_t m = 0;
  const PackedMatrix<float>* b = nullptr;
  float* c = nullptr;
  index_t ldc = 0;
  bool accumulate = false;
};

namespace gemm_detail {

// Register blocking of each path: MR rows by the 32 columns of a panel.
//   AVX-512: 12 x 32 = 24 zmm accumulators, 2 for the panel row, 1 for the broadcast.
//   AVX2:    6 x 16 (half a panel at a time) = 12 ymm accumulators, 2 + 1 more.
//   portable: 4 x 32 in arrays, for the compiler to do what it can.
template <Isa I>
inline constexpr int micro_rows = I == Isa::avx512 ? 12
                                  : I == Isa::avx2 ? 6
                                                   : 4;

// K block: one panel's K block (256 x 32 x 4 bytes = 32 KiB) stays in the 48 KiB L1 of
// current x86 cores next to the micro-panel in use (12 x 256 x 4 = 12 KiB). 512 measured
// the same on large K and worse on the MoE batch; 128 pays more for reloading c.
inline constexpr index_t k_block = 256;
// Row stride of the packed A block: a K block plus one cache line, so that the rows of a
// micro-panel, read together, fall into different L1 sets.
inline constexpr index_t a_stride = k_block + 16;
// Panels per column block of a tile (256 columns): its c block (rows x 256 x 4 bytes)
// stays in L2 across the K blocks.
inline constexpr index_t column_block = 8;
// Rows per tile at most (fewer for long K, see max_rows_for): a tile packs its rows of A for
// the whole of K once (128 x 1024 x 4 bytes = 512 KiB at K = 1024), which then stays in L2,
// next to the column block of c and the weights streaming through, while the tile walks
// its panels. 256 rows measured 5% slower on the MoE batch (L2 thrashes), 64 slower too (the
// weights are read more often).
inline constexpr index_t max_tile_rows = 128;

// The valid columns of a panel that starts at `first` of n.
inline int panel_columns(index_t first, index_t n) noexcept {
  return static_cast<int>(std::min<index_t>(panel_width, n - first));
}

inline void prefetch_l2(const float* p) noexcept {
#if defined(__GNUC__)
  __builtin_prefetch(p, 0, 2);
#else
  (void)p;
#endif
}

// ---- Microkernels ------------------------------------------------------------------------
// c[r][j] for r < MR, j < cols (<= 32) of a block of c at `c` (leading dimension ldc):
//   acc = accumulate ? c : 0;  for k < kc: acc[r][j] = fma(a[r * a_stride + k], b[k * 32 + j], acc[r][j]);  c = acc.
// a is a micro-panel of the packed A block (row r at a + r * a_stride); b a panel's K block
// [kc][32], 64-byte aligned. While it computes, the kernel fetches `ahead_lines` cache lines
// from `ahead` into L2, one per 4 steps of k (see run_tile).

template <int MR>
void kernel_portable(const float* a, const float* b, index_t kc, float* c, index_t ldc, int cols, bool accumulate,
                     const float* /*ahead*/, index_t /*ahead_lines*/) {
  float acc[MR][panel_width];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < panel_width; ++j) acc[r][j] = accumulate && j < cols ? c[r * ldc + j] : 0.0f;
  for (index_t k = 0; k < kc; ++k) {
    const float* bk = b + k * panel_width;
    for (int r = 0; r < MR; ++r) {
      float ar = a[r * a_stride + k];
      for (int j = 0; j < panel_width; ++j) acc[r][j] = std::fma(ar, bk[j], acc[r][j]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < cols; ++j) c[r * ldc + j] = acc[r][j];
}

#if defined(__x86_64__)
#define MESHPLAN_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define MESHPLAN_TARGET_AVX2 __attribute__((target("avx2,fma")))

template <int MR>
MESHPLAN_TARGET_AVX512 void kernel_avx512(const float* a, const float* b, index_t kc, float* c, index_t ldc, int cols,
                                          bool accumulate, const float* ahead, index_t ahead_lines) {
  const __mmask16 mask0 = cols >= 16 ? __mmask16(0xffff) : __mmask16((1u << cols) - 1);
  const __mmask16 mask1 = cols >= 32   ? __mmask16(0xffff)
                          : cols <= 16 ? __mmask16(0)
                                       : __mmask16((1u << (cols - 16)) - 1);
  __m512 acc0[MR], acc1[MR];
  MESHPLAN_UNROLL(12)
  for (int r = 0; r < MR; ++r) {
    if (accumulate) {
      acc0[r] = _mm512_maskz_loadu_ps(mask0, c + r * ldc);
      acc1[r] = _mm512_maskz_loadu_ps(mask1, c + r * ldc + 16);
    } else {
      acc0[r] = _mm512_setzero_ps();
      acc1[r] = _mm512_setzero_ps();
    }
  }
  const float* ahead_end = ahead + ahead_lines * 16;
  for (index_t k = 0; k < kc; ++k) {
    if ((k & 3) == 0 && ahead < ahead_end) {
      prefetch_l2(ahead);
      ahead += 16;
    }
    const __m512 b0 = _mm512_load_ps(b + k * panel_width);
    const __m512 b1 = _mm512_load_ps(b + k * panel_width + 16);
  MESHPLAN_UNROLL(12)
    for (int r = 0; r < MR; ++r) {
      const __m512 ar = _mm512_set1_ps(a[r * a_stride + k]);
      acc0[r] = _mm512_fmadd_ps(ar, b0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(ar, b1, acc1[r]);
    }
  }
  for (; ahead < ahead_end; ahead += 16) prefetch_l2(ahead);
  MESHPLAN_UNROLL(12)
  for (int r = 0; r < MR; ++r) {
    _mm512_mask_storeu_ps(c + r * ldc, mask0, acc0[r]);
    _mm512_mask_storeu_ps(c + r * ldc + 16, mask1, acc1[r]);
  }
}

// Half a panel (16 columns at b, row stride 32) per call; cols <= 16.
template <int MR>
MESHPLAN_TARGET_AVX2 void kernel_avx2_half(const float* a, const float* b, index_t kc, float* c, index_t ldc, int cols,
                                           bool accumulate, const float* ahead, index_t ahead_lines) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i mask0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols), lane);
  const __m256i mask1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols - 8), lane);
  __m256 acc0[MR], acc1[MR];
  MESHPLAN_UNROLL(6)
  for (int r = 0; r < MR; ++r) {
    if (accumulate) {
      acc0[r] = _mm256_maskload_ps(c + r * ldc, mask0);
      acc1[r] = _mm256_maskload_ps(c + r * ldc + 8, mask1);
    } else {
      acc0[r] = _mm256_setzero_ps();
      acc1[r] = _mm256_setzero_ps();
    }
  }
  const float* ahead_end = ahead + ahead_lines * 16;
  for (index_t k = 0; k < kc; ++k) {
    if ((k & 3) == 0 && ahead < ahead_end) {
      prefetch_l2(ahead);
      ahead += 16;
    }
    const __m256 b0 = _mm256_load_ps(b + k * panel_width);
    const __m256 b1 = _mm256_load_ps(b + k * panel_width + 8);
  MESHPLAN_UNROLL(6)
    for (int r = 0; r < MR; ++r) {
      const __m256 ar = _mm256_broadcast_ss(a + r * a_stride + k);
      acc0[r] = _mm256_fmadd_ps(ar, b0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(ar, b1, acc1[r]);
    }
  }
  for (; ahead < ahead_end; ahead += 16) prefetch_l2(ahead);
  MESHPLAN_UNROLL(6)
  for (int r = 0; r < MR; ++r) {
    _mm256_maskstore_ps(c + r * ldc, mask0, acc0[r]);
    _mm256_maskstore_ps(c + r * ldc + 8, mask1, acc1[r]);
  }
}

template <int MR>
void kernel_avx2(const float* a, const float* b, index_t kc, float* c, index_t ldc, int cols, bool accumulate,
                 const float* ahead, index_t ahead_lines) {
  const index_t first_half = ahead_lines / 2;
  kernel_avx2_half<MR>(a, b, kc, c, ldc, std::min(cols, 16), accumulate, ahead, first_half);
  if (cols > 16)
    kernel_avx2_half<MR>(a, b + 16, kc, c + 16, ldc, cols - 16, accumulate, ahead + first_half * 16,
                         ahead_lines - first_half);
  else
    for (index_t line = first_half; line < ahead_lines; ++line) prefetch_l2(ahead + line * 16);
}
#endif

using Kernel = void (*)(const float*, const float*, index_t, float*, index_t, int, bool, const float*, index_t);

template <Isa I, int MR>
constexpr Kernel kernel_for() {
#if defined(__x86_64__)
  if constexpr (I == Isa::avx512) return &kernel_avx512<MR>;
  if constexpr (I == Isa::avx2) return &kernel_avx2<MR>;
#endif
  return &kernel_portable<MR>;
}

// kernels<I>[r - 1]: the microkernel for a micro-panel of r rows (r <= micro_rows<I>), so
// that the last rows of a tile cost what they compute.
template <Isa I, std::size_t... R>
constexpr std::array<Kernel, sizeof...(R)> make_kernels(std::index_sequence<R...>) {
  return {kernel_for<I, static_cast<int>(R) + 1>()...};
}
template <Isa I>
inline constexpr auto kernels = make_kernels<I>(std::make_index_sequence<micro_rows<I>>{});

// ---- Packing A ---------------------------------------------------------------------------
// Rows [row0, row0 + rows) by columns [k0, k0 + kc) of the task's A, in fp32, row i of the
// tile at out + i * a_stride: a gather of contiguous runs, each widened with the path's
// vectors (bf16 to fp32 is a 16-bit shift, exact). The kernels' broadcasts then read row r
// of a micro-panel at the constant offset r * a_stride * 4 bytes.
template <StorageType X>
void widen_row_portable(const X* src, index_t count, float* dst) {
  for (index_t k = 0; k < count; ++k) dst[k] = to_float(src[k]);
}

#if defined(__x86_64__)
template <StorageType X>
MESHPLAN_TARGET_AVX512 void widen_row_avx512(const X* src, index_t count, float* dst) {
  for (index_t k = 0; k < count; k += 16) {
    const __mmask16 mask = count - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (count - k)) - 1);
    if constexpr (std::is_same_v<X, float>) {
      _mm512_mask_storeu_ps(dst + k, mask, _mm512_maskz_loadu_ps(mask, src + k));
    } else {
      // The zero-masking forms with every lane on: the plain ones start from an "undefined"
      // register that g++ 12 reports as maybe uninitialized.
      const __m512i wide = _mm512_maskz_cvtepu16_epi32(0xffff, _mm256_maskz_loadu_epi16(mask, src + k));
      _mm512_mask_storeu_ps(dst + k, mask, _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xffff, wide, 16)));
    }
  }
}

template <StorageType X>
MESHPLAN_TARGET_AVX2 void widen_row_avx2(const X* src, index_t count, float* dst) {
  index_t k = 0;
  for (; k + 8 <= count; k += 8) {
    if constexpr (std::is_same_v<X, float>) {
      _mm256_storeu_ps(dst + k, _mm256_loadu_ps(src + k));
    } else {
      const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k)));
      _mm256_storeu_ps(dst + k, _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16)));
    }
  }
  widen_row_portable(src + k, count - k, dst + k);
}
#endif

// A transposed source (step > 1): its rows are columns of a row-major matrix, so the
// block is read k by k, each k a contiguous run across the tile's rows, and written down
// the packed rows; the tile's written lines (one per row) stay in L1 between steps.
template <StorageType X>
void pack_a_strided(const RowSource<X>& a, index_t row0, index_t rows, index_t k0, index_t kc, float* out) {
  if (a.index == nullptr && a.ld == 1) {
    for (index_t k = 0; k < kc; ++k) {
      const X* src = a.base + (k0 + k) * a.step + row0;
      for (index_t i = 0; i < rows; ++i) out[i * a_stride + k] = to_float(src[i]);
    }
    return;
  }
  for (index_t i = 0; i < rows; ++i) {
    const X* src = a.row(row0 + i);
    for (index_t k = 0; k < kc; ++k) out[i * a_stride + k] = to_float(src[(k0 + k) * a.step]);
  }
}

template <Isa I, StorageType X>
void pack_a(const RowSource<X>& a, index_t row0, index_t rows, index_t k0, index_t kc, float* out) {
  if (a.step != 1) return pack_a_strided(a, row0, rows, k0, kc, out);
  for (index_t i = 0; i < rows; ++i) {
    const X* src = a.row(row0 + i) + k0;
    float* dst = out + i * a_stride;
#if defined(__x86_64__)
    if constexpr (I == Isa::avx512) {
      widen_row_avx512(src, kc, dst);
      continue;
    } else if constexpr (I == Isa::avx2) {
      widen_row_avx2(src, kc, dst);
      continue;
    }
#endif
    widen_row_portable(src, kc, dst);
  }
}

// ---- Tiles -------------------------------------------------------------------------------
// A tile: rows [row0, row0 + rows) and panels [panel0, panel0 + panels) of one task.
struct Tile {
  index_t task, row0, rows, panel0, panels;
};

// Splits the tasks into tiles. A tile holds all of a task's columns unless that leaves
// threads idle, because each column block packs its rows of A again; splitting rows only
// re-reads weights, which stream from L3 at a small fraction of what the kernel takes.
//   - rows per tile at most max_rows_for(K): the tile's packed A stays in L2;
//   - with several threads and fewer tiles than 3 per thread (one task, or a few), each
//     task's rows split into one block per thread (equal in micro-panels), then the
//     columns into blocks of at least min_tile_panels panels, until there are 3 tiles per
//     thread: the atomic counter then evens out a thread slowed by its neighbour.
inline constexpr index_t min_tile_panels = 4;

inline index_t max_rows_for(index_t k) noexcept {
  // The tile's packed A (rows x K x 4 bytes) within about 512 KiB of L2.
  const index_t fit = (index_t{1} << 17) / std::max<index_t>(k, 1);
  return std::clamp<index_t>(fit, 4 * micro_rows<Isa::avx512>, max_tile_rows);
}

template <StorageType X>
std::vector<Tile> make_tiles(std::span<const GemmTask<X>> tasks, int threads, index_t micro) {
  const index_t wanted = threads > 1 ? 3 * static_cast<index_t>(threads) : 1;
  auto active = [&](std::size_t t) { return tasks[t].m > 0 && tasks[t].b->panels() > 0; };
  auto micro_panels = [&](std::size_t t) { return (tasks[t].m + micro - 1) / micro; };
  std::vector<index_t> blocks(tasks.size(), 0);
  index_t row_tiles = 0;
  for (std::size_t t = 0; t < tasks.size(); ++t)
    if (active(t))
      row_tiles += blocks[t] = (tasks[t].m + max_rows_for(tasks[t].b->cols()) - 1) / max_rows_for(tasks[t].b->cols());
  if (row_tiles == 0) return {};
  if (row_tiles < wanted) {
    row_tiles = 0;
    for (std::size_t t = 0; t < tasks.size(); ++t)
      if (active(t)) row_tiles += blocks[t] = std::max(blocks[t], std::min<index_t>(threads, micro_panels(t)));
  }
  const index_t col_split = row_tiles >= wanted ? 1 : (wanted + row_tiles - 1) / row_tiles;
  std::vector<Tile> tiles;
  for (std::size_t t = 0; t < tasks.size(); ++t) {
    if (!active(t)) continue;
    const index_t m = tasks[t].m, panels = tasks[t].b->panels();
    const index_t per_block = (micro_panels(t) + blocks[t] - 1) / blocks[t] * micro;
    const index_t splits = std::clamp<index_t>(std::min(col_split, panels / min_tile_panels), 1, panels);
    for (index_t r0 = 0; r0 < m; r0 += per_block)
      for (index_t s = 0; s < splits; ++s) {
        const index_t p0 = panels * s / splits, p1 = panels * (s + 1) / splits;
        tiles.push_back({static_cast<index_t>(t), r0, std::min(per_block, m - r0), p0, p1 - p0});
      }
  }
  return tiles;
}

// One step of a tile: the K block at k0 of panel p; the step after it in the tile's order
// (for each column block: for each K block: for each panel of the block).
struct Step {
  index_t k0, panel;
};

template <Isa I, StorageType X>
void run_tile(const GemmTask<X>& task, const Tile& tile, std::vector<float>& a_block) {
  constexpr int MR = micro_rows<I>;
  const PackedMatrix<float>& b = *task.b;
  const index_t n = b.rows(), k = b.cols();
  const index_t last_panel = tile.panel0 + tile.panels;
  if (k == 0) {  // the sum of nothing: every chain stays at its start
    if (task.accumulate) return;
    for (index_t r = 0; r < tile.rows; ++r)
      for (index_t p = tile.panel0; p < last_panel; ++p) {
        float* c = task.c + (tile.row0 + r) * task.ldc + p * panel_width;
        std::fill(c, c + panel_columns(p * panel_width, n), 0.0f);
      }
    return;
  }
  // A for the whole tile, once: K block after K block, each [rows][a_stride].
  const index_t k_blocks = (k + k_block - 1) / k_block;
  const index_t block_size = tile.rows * a_stride;
  a_block.resize(static_cast<std::size_t>(k_blocks * block_size));
  for (index_t kb = 0; kb < k_blocks; ++kb)
    pack_a<I>(task.a, tile.row0, tile.rows, kb * k_block, std::min(k_block, k - kb * k_block),
              a_block.data() + kb * block_size);

  const index_t micro_panels = (tile.rows + MR - 1) / MR;
  auto next_step = [&](Step s) -> std::optional<Step> {
    const index_t group_first = tile.panel0 + (s.panel - tile.panel0) / column_block * column_block;
    const index_t group_end = std::min(group_first + column_block, last_panel);
    if (s.panel + 1 < group_end) return Step{s.k0, s.panel + 1};
    if (s.k0 + k_block < k) return Step{s.k0 + k_block, group_first};
    if (group_end < last_panel) return Step{0, group_end};
    return std::nullopt;
  };
  // The column blocks keep their c block in L2 across the K blocks, and their weights
  // stream through once.
  for (index_t group = tile.panel0; group < last_panel; group += column_block) {
    const index_t group_end = std::min(group + column_block, last_panel);
    for (index_t k0 = 0; k0 < k; k0 += k_block) {
      const index_t kc = std::min(k_block, k - k0);
      const float* a = a_block.data() + k0 / k_block * block_size;
      for (index_t p = group; p < group_end; ++p) {
        const float* bp = b.panel(p) + k0 * panel_width;
        const int cols = panel_columns(p * panel_width, n);
        float* c_panel = task.c + tile.row0 * task.ldc + p * panel_width;
        // The weights of the next step, fetched into L2 a slice per micro-panel while this
        // step computes: each weight comes from memory once, and the first micro-panel of
        // each step would otherwise wait for it.
        std::optional<Step> next = next_step({k0, p});
        const float* ahead = next ? b.panel(next->panel) + next->k0 * panel_width : nullptr;
        const index_t ahead_lines = next ? std::min(k_block, k - next->k0) * panel_width / 16 : 0;
        for (index_t q = 0; q < micro_panels; ++q) {
          const index_t i = q * MR;
          const index_t mr = std::min<index_t>(MR, tile.rows - i);
          const index_t line0 = ahead_lines * q / micro_panels, line1 = ahead_lines * (q + 1) / micro_panels;
          kernels<I>[static_cast<std::size_t>(mr - 1)](a + i * a_stride, bp, kc, c_panel + i * task.ldc, task.ldc, cols,
                                                       k0 > 0 || task.accumulate, ahead + line0 * 16, line1 - line0);
        }
      }
    }
  }
}

template <Isa I, StorageType X>
void run_batch(std::span<const GemmTask<X>> tasks, ThreadPool& pool) {
  std::vector<Tile> tiles = make_tiles(tasks, pool.size(), micro_rows<I>);
  pool.parallel_for(static_cast<index_t>(tiles.size()), [&](index_t i) {
    static thread_local std::vector<float> a_block;  // reused: a fresh block would fault its pages in again
    const Tile& tile = tiles[static_cast<std::size_t>(i)];
    run_tile<I>(tasks[static_cast<std::size_t>(tile.task)], tile, a_block);
  });
}

template <StorageType X>
Message check_task(const GemmTask<X>& t, std::size_t which) {
  Message m = Message::rule("gemm_shape");
  if (t.b == nullptr) return m << "task " << static_cast<index_t>(which) << " has no weight";
  if (t.m < 0) return m << "task " << static_cast<index_t>(which) << " has " << t.m << " rows";
  if (t.m == 0 || t.b->rows() == 0) return {};
  if (t.c == nullptr || t.ldc < t.b->rows())
    return m << "task " << static_cast<index_t>(which) << ": c needs a leading dimension of at least " << t.b->rows()
             << ", not " << t.ldc;
  const bool rows_fit = t.a.index != nullptr || (t.a.step == 1 ? t.a.ld >= t.b->cols() : t.a.step >= t.m * t.a.ld);
  if (t.b->cols() > 0 && (t.a.base == nullptr || !rows_fit || t.a.index_div < 1 || t.a.step < 1))
    return m << "task " << static_cast<index_t>(which) << ": rows of a need " << t.b->cols()
             << " elements (leading dimension " << t.a.ld << ", element step " << t.a.step << ", index divisor "
             << t.a.index_div << ")";
  return {};
}

}  // namespace gemm_detail

/// Runs independent products as one space of tiles on the pool; each c gets exactly the
/// defined order's bits, on every path.
template <StorageType X>
void gemm_batch(std::span<const GemmTask<X>> tasks, ThreadPool& pool, Isa isa = active_isa()) {
  namespace d = gemm_detail;
  for (std::size_t t = 0; t < tasks.size(); ++t) enforce(d::check_task(tasks[t], t));
  enforce(isa_runnable(isa) ? Message{}
                            : Message::rule("cpu_isa") << "the " << to_string(isa) << " path cannot run on this CPU");
  switch (isa) {
    case Isa::avx512:
      d::run_batch<Isa::avx512>(tasks, pool);
      return;
    case Isa::avx2:
      d::run_batch<Isa::avx2>(tasks, pool);
      return;
    case Isa::portable:
      d::run_batch<Isa::portable>(tasks, pool);
      return;
  }
}

/// c [m, N] = a [m, K] b^T (or c += a b^T with task.accumulate) in the defined order.
template <StorageType X>
void gemm(const GemmTask<X>& task, ThreadPool& pool, Isa isa = active_isa()) {
  gemm_batch(std::span<const GemmTask<X>>(&task, 1), pool, isa);
}

}  // namespace meshplan::cpu
