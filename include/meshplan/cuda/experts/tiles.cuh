#pragma once
// How the fused expert kernels split their work: tile shapes as constexpr policies, one per
// shape class (CUB's habit), the choice of kernel path by compute capability, and the list
// of row tiles — every expert's rows cut into tiles of block_m rows, experts without rows
// left out — that the kernels' blocks take one each. Host logic only, so it is tested
// without a GPU.

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

/// The sm_90 kernels' shape (wgmma_gemm.cuh): `warpgroups` warpgroups of 64 rows each, a
/// stage of 64 k for the rows and for 128 B rows (64 columns of gate and of up, or 128 of
/// down), `stages` stages in flight.
template <int WarpGroups, int Stages>
struct WgmmaPolicy {
  static constexpr int warpgroups = WarpGroups, stages = Stages;
  static constexpr int block_m = 64 * WarpGroups, block_k = 64, b_rows = 128;
  static constexpr int threads = 128 * WarpGroups;
};

/// The sm_90 shape classes; the class changes no result (the same instruction and k order).
struct WgmmaPolicies {
  using small = WgmmaPolicy<1, 4>;  // 96 KiB of stages: two blocks per SM
  using large = WgmmaPolicy<2, 4>;  // 128 KiB
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

/// The widest output a launch covers: 65535 blocks of the narrowest tile (grid.y's limit).
inline constexpr index_t fused_max_width = 65535LL * 32;

namespace expert_rules {
inline Message fused_sizes(index_t rows, index_t hidden, index_t inter) {
  if (rows < 0 || rows > INT32_MAX || hidden < 1 || hidden > fused_max_width || inter < 1 || inter > fused_max_width)
    return Message::rule("device_sizes") << "the fused experts take 0 to " << INT32_MAX << " rows and widths of 1 to "
                                         << fused_max_width << "; here rows " << rows << ", hidden " << hidden
                                         << ", intermediate " << inter;
  return {};
}
}  // namespace expert_rules

}  // namespace meshplan::cuda
