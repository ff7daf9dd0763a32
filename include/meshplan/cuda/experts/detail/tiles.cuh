#pragma once
// How the fused expert kernels split their work: tile shapes as constexpr policies, one per
// shape class (CUB's habit), the choice of kernel path by compute capability, and the list
// of row tiles — every expert's rows cut into tiles of block_m rows, experts without rows
// left out — that the kernels' blocks take one each. Host logic only, so it is tested
// without a GPU.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <algorithm>
#include <climits>
#include <cstdint>
#include <span>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"

namespace meshplan::cuda {

/// A block's tile shape: block_m rows by block_n output columns, block_k deep per stage, a
/// warps_m x warps_n grid of warps, `stages` shared-memory stages in flight. A type, not a
/// value: nvcc's kernel stubs cannot spell class-type template arguments.
template <int BlockM, int BlockN, int BlockK, int WarpsM, int WarpsN, int Stages>
struct ExpertGemmPolicy {
  static constexpr int block_m = BlockM, block_n = BlockN, block_k = BlockK;
  static constexpr int warps_m = WarpsM, warps_n = WarpsN, stages = Stages;
  static constexpr int threads = WarpsM * WarpsN * 32;
};

/// The shape classes. Both keep block_k = 32 and sum k in the same order (mma k-steps of 16,
/// in order), so the class never changes a result, only the speed.
struct ExpertGemmPolicies {
  // gate_up + SwiGLU: block_n columns of gate and the same of up per block.
  using gate_up_small = ExpertGemmPolicy<64, 32, 32, 2, 2, 3>;
  using gate_up_large = ExpertGemmPolicy<128, 64, 32, 2, 4, 3>;
  using down_small = ExpertGemmPolicy<64, 64, 32, 2, 2, 3>;
  using down_large = ExpertGemmPolicy<128, 128, 32, 2, 4, 3>;
  /// Experts averaging at least this many rows take the large tiles.
  static constexpr index_t large_from_rows = 128;
};

/// sm_90's shared memory: a block may opt in to 227 KiB; an SM holds 228 KiB, of which
/// every resident block also takes 1 KiB that the system reserves.
struct Sm90SharedMemory {
  static constexpr int per_block = 227 * 1024, per_sm = 228 * 1024, reserved_per_block = 1024;
  /// What each of `blocks` resident blocks of an SM may ask for.
  static constexpr int budget(int blocks) {
    const int share = per_sm / blocks - reserved_per_block;
    return share < per_block ? share : per_block;
  }
};

/// How many pipeline stages of `stage_bytes` fit in `budget` bytes next to `fixed_bytes`
/// (wgmma_gemm.cuh's 1 KiB to align the first stage to the swizzle).
constexpr int stages_that_fit(int budget, int stage_bytes, int fixed_bytes) {
  return (budget - fixed_bytes) / stage_bytes;
}

/// The sm_90 kernels' shape (wgmma_gemm.cuh): `warpgroups` warpgroups of 64 rows each, a
/// stage of 64 k (128 bytes of bf16 per row) for the rows and for 128 B rows (64 columns of
/// gate and of up, or 128 of down), and as many stages as fit in the shared memory of one
/// of `blocks_per_sm` blocks resident on an SM: more stages in flight hide more of the
/// memory latency, and the count is the budget's, computed here, never written by hand.
template <int WarpGroups, int BlocksPerSm>
struct WgmmaPolicy {
  static constexpr int warpgroups = WarpGroups, blocks_per_sm = BlocksPerSm;
  static constexpr int block_m = 64 * WarpGroups, block_k = 64, b_rows = 128;
  static constexpr int threads = 128 * WarpGroups;
  static constexpr int stage_bytes = (block_m + b_rows) * block_k * 2;
  static constexpr int align_bytes = 1024;  // the 128-byte swizzle repeats every 8 rows
  static constexpr int budget = Sm90SharedMemory::budget(BlocksPerSm);
  static constexpr int stages = stages_that_fit(budget, stage_bytes, align_bytes);
  static constexpr int shared_bytes = stages * stage_bytes + align_bytes;
  static_assert(stages >= 3, "a stage computing, one whose MMAs may still run, one loading");
  static_assert(shared_bytes <= budget, "the stages fit the block's share of the SM");
};

/// The sm_90 shape classes; the class changes no result (the same instruction and k order).
struct WgmmaPolicies {
  using small = WgmmaPolicy<1, 2>;  // 24 KiB stages, two blocks per SM: 4 stages (97 KiB)
  using large = WgmmaPolicy<2, 1>;  // 32 KiB stages, one block per SM: 7 stages (225 KiB)
};

/// The row tiles of the grouped kernels, 16 bytes each.
struct GemmTile {
  std::int32_t expert;     // local expert
  std::int32_t row_begin;  // first row, in the grouped (expert-major) order
  std::int32_t rows;       // 1..block_m
  std::int32_t pad = 0;
  friend constexpr bool operator==(const GemmTile&, const GemmTile&) = default;
};

/// The tiles of rows grouped by expert (`offsets`, E + 1 entries): each expert's rows in
/// runs of `block_m`, experts in order.
inline std::vector<GemmTile> expert_tiles(std::span<const index_t> offsets, index_t block_m) {
  std::vector<GemmTile> tiles;
  for (std::size_t e = 0; e + 1 < offsets.size(); ++e)
    for (index_t r = offsets[e]; r < offsets[e + 1]; r += block_m)
      tiles.push_back({static_cast<std::int32_t>(e), static_cast<std::int32_t>(r),
                       static_cast<std::int32_t>(std::min(block_m, offsets[e + 1] - r))});
  return tiles;
}

/// Whether the experts' rows are many enough for the large tiles.
inline bool large_tiles(std::span<const index_t> offsets) noexcept {
  index_t busy = 0;
  for (std::size_t e = 0; e + 1 < offsets.size(); ++e) busy += offsets[e + 1] > offsets[e];
  const index_t rows = offsets.empty() ? 0 : offsets.back() - offsets.front();
  return busy > 0 && rows >= ExpertGemmPolicies::large_from_rows * busy;
}

/// The work of block `block` of a fused kernel's launch: which row tile (an index into
/// expert_tiles' list) and which block of output columns. The column block runs fastest,
/// so the blocks running at the same time share their row tile: its A rows are read from
/// DRAM once and then from L2 by every column block, where a row-tile-fastest order would
/// stream all the rows again for every column block. The row tiles come expert by expert,
/// so an expert's weights also stay in L2 while its tiles pass. The same function on the
/// host (tests) and in the kernels.
struct TileWork {
  int tile;
  int column_block;
};
__host__ __device__ constexpr TileWork tile_work(unsigned block, unsigned column_blocks) {
  return {static_cast<int>(block / column_blocks), static_cast<int>(block % column_blocks)};
}

/// The blocks of a launch over `tiles` row tiles and `columns` output columns, `per_block`
/// at a time (one dimension: tile_work maps them).
constexpr index_t fused_blocks(index_t tiles, index_t columns, index_t per_block) {
  return tiles * ((columns + per_block - 1) / per_block);
}

/// The widest store (16, 8 or 4 bytes, else one element) that every chunk of 16 bytes of
/// every row of a [rows, columns] output of `element_bytes` elements at address `base` can
/// use: a row starts at base + row * columns * element_bytes, and the kernels' chunks start
/// at multiples of 16 bytes inside a row (their column blocks are multiples of 32 columns),
/// so a width w needs w | base and w | the row's bytes.
constexpr int row_store_bytes(std::uintptr_t base, index_t columns, int element_bytes) {
  for (int w = 16; w > element_bytes; w /= 2)
    if (base % static_cast<std::uintptr_t>(w) == 0 && (columns * element_bytes) % w == 0) return w;
  return element_bytes;
}

/// Which kernels compute the experts.
enum class ExpertPath {
  cublas,    // per-expert cuBLAS GEMMs: fp32 storage, or GPUs before sm_80
  mma_sync,  // the fused grouped kernels on mma.sync tensor cores: bf16 on sm_80 and newer
  wgmma,     // the fused grouped kernels on warpgroup MMA: bf16 on sm_90 with sm_90a code
};

constexpr const char* to_string(ExpertPath p) noexcept {
  return p == ExpertPath::wgmma ? "wgmma" : p == ExpertPath::mma_sync ? "mma.sync" : "cuBLAS";
}

/// The path for a device of compute capability `sm` (90 for sm_90), bf16 (or not) storage,
/// and whether the build holds sm_90a code for the device (wgmma_built()).
constexpr ExpertPath expert_path(int sm, bool bf16, bool wgmma_code) noexcept {
  if (!bf16 || sm < 80) return ExpertPath::cublas;
  return sm == 90 && wgmma_code ? ExpertPath::wgmma : ExpertPath::mma_sync;
}

/// The widest output the fused kernels take (65535 blocks of the narrowest tile, once
/// grid.y's limit): column arithmetic stays far inside int, and a launch's block count is
/// checked on its own (fused_grid).
inline constexpr index_t fused_max_width = 65535LL * 32;

namespace expert_rules {
/// One launch's blocks, in one grid dimension (tile_work), are at most 2^31 - 1.
inline Message fused_grid(index_t tiles, index_t columns, index_t per_block) {
  const index_t blocks = fused_blocks(tiles, columns, per_block);
  if (blocks > INT32_MAX)
    return Message::rule("device_size_range") << "the fused experts launch at most " << INT32_MAX << " blocks; here "
                                         << tiles << " row tiles times " << (columns + per_block - 1) / per_block
                                         << " column blocks of " << per_block << " columns";
  return {};
}

/// A buffer of the fused kernels must be aligned to its elements (their pair and 16-byte
/// stores assume it; cudaMalloc's memory always is).
inline Message fused_alignment(const char* what, const void* buffer, int element_bytes) {
  if (reinterpret_cast<std::uintptr_t>(buffer) % static_cast<std::uintptr_t>(element_bytes) != 0)
    return Message::rule("device_alignment") << "the fused experts' " << what << " must be aligned to its " << element_bytes
                                         << "-byte elements; it starts at address "
                                         << reinterpret_cast<std::uintptr_t>(buffer);
  return {};
}

inline Message fused_sizes(index_t rows, index_t hidden, index_t inter) {
  if (rows < 0 || rows > INT32_MAX || hidden < 1 || hidden > fused_max_width || inter < 1 || inter > fused_max_width)
    return Message::rule("device_size_range") << "the fused experts take 0 to " << INT32_MAX << " rows and widths of 1 to "
                                         << fused_max_width << "; here rows " << rows << ", hidden " << hidden
                                         << ", intermediate " << inter;
  return {};
}
}  // namespace expert_rules

}  // namespace meshplan::cuda
