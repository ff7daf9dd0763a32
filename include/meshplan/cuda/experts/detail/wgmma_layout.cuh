#pragma once
// Where the sm_90 expert kernels (wgmma_gemm.cuh) put their operands in shared memory and
// where wgmma puts its results, written once and used by the kernels and by a host test
// that checks them against the PTX ISA's description without a GPU.
//
// Operands are K-major tiles of bf16 rows, 64 elements (128 bytes) of k per row, stored in
// the 128-byte swizzle: row r's 16-byte chunk c sits at r * 128 + ((c ^ (r % 8)) * 16)
// from a 1024-byte aligned tile base. wgmma reads such a tile through a matrix descriptor
// (start address, stride between 8-row groups = 1024 bytes, swizzle mode 128B) and applies
// the same XOR to the addresses it computes, so the k16 steps inside the 64-wide row are
// reached by moving the start address 32 bytes at a time.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cstdint>

namespace meshplan::cuda::wgmma_layout {

/// Bytes of one tile row (64 bf16 of k), and of the 8-row group the swizzle repeats over.
inline constexpr int row_bytes = 128;
inline constexpr int group_bytes = 8 * row_bytes;
/// k elements of a tile row and of one wgmma.
inline constexpr int tile_k = 64;
inline constexpr int mma_k = 16;

/// The byte offset of row `row`'s 16-byte chunk `chunk` (k = 8 * chunk .. 8 * chunk + 7)
/// from the tile base: the 128-byte swizzle.
__host__ __device__ constexpr int swizzled_chunk(int row, int chunk) {
  return row * row_bytes + ((chunk ^ (row % 8)) * 16);
}

/// The swizzle modes of a descriptor's bits 62-63.
enum class Swizzle : std::uint64_t { none = 0, b128 = 1, b64 = 2, b32 = 3 };

/// A shared-memory matrix descriptor: bits 0-13 start address >> 4, 16-29 leading byte
/// offset >> 4, 32-45 stride byte offset >> 4, 49-51 base offset, 62-63 swizzle mode.
__host__ __device__ constexpr std::uint64_t descriptor(std::uint32_t shared_address, std::uint32_t leading_bytes,
                                                      std::uint32_t stride_bytes, Swizzle swizzle) {
  return (static_cast<std::uint64_t>((shared_address >> 4) & 0x3FFF)) |
         (static_cast<std::uint64_t>((leading_bytes >> 4) & 0x3FFF) << 16) |
         (static_cast<std::uint64_t>((stride_bytes >> 4) & 0x3FFF) << 32) |
         (static_cast<std::uint64_t>(swizzle) << 62);
}

/// The descriptor of k step `step` (0-3) of a K-major swizzled tile at `tile_address`
/// (1024-byte aligned, so the base offset is 0). The leading byte offset is not used by
/// K-major swizzled layouts whose k16 fits in one row; 16 is the customary value.
__host__ __device__ constexpr std::uint64_t k_major_descriptor(std::uint32_t tile_address, int step) {
  return descriptor(tile_address + static_cast<std::uint32_t>(step) * (mma_k * 2), 16, group_bytes, Swizzle::b128);
}

struct Coord {
  int row;  // 0-63 inside the warpgroup's m64 tile
  int col;  // 0-(N-1)
};

/// The position in the m64 x N tile of fp32 accumulator `reg` (0 to N/2 - 1) of thread
/// `thread` (0-127) of the warpgroup: warp w holds rows 16w..16w+15; inside each 8-column
/// group the warp's lanes hold mma.sync's C fragment.
__host__ __device__ constexpr Coord accumulator(int thread, int reg) {
  const int warp = thread / 32, lane = thread % 32;
  return {warp * 16 + lane / 4 + ((reg / 2) % 2) * 8, (reg / 4) * 8 + (lane % 4) * 2 + reg % 2};
}

}  // namespace meshplan::cuda::wgmma_layout
