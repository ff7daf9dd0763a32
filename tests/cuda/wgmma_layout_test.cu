// The sm_90 kernels' shared-memory layout and accumulator mapping (wgmma_layout.cuh)
// against the PTX ISA's description of wgmma, on the host.
//
// From the PTX ISA ("Matrix Descriptor Format", "Shared Memory Matrix Layout", "Register
// Fragments" of wgmma.mma_async):
//   descriptor  bits 0-13 start address >> 4, 16-29 leading dimension byte offset >> 4,
//               32-45 stride dimension byte offset >> 4, 49-51 base offset, 62-63 swizzle
//               (1 = 128B)
//   K-major, 128B swizzle, 16-bit elements: a swizzle atom is 8 rows of 128 bytes (64
//               elements of k) stored contiguously; atoms along M/N are SBO bytes apart;
//               the 16-byte unit of each address (bits 4-6) is XORed with bits 7-9
//   accumulator m64nNk16 f32: warp w of the warpgroup holds rows 16w..16w+15; thread lane l
//               holds, for column group j (8 columns), d[4j + i] at row 16w + l/4 + 8(i/2)
//               and column 8j + 2(l%4) + i%2
// The wgmma read of element (row, k) of a k16 step is emulated from the descriptor alone
// and must find what the kernels' cp.async stored there.
#include <catch2/catch.hpp>

#include <cstdint>
#include <set>
#include <utility>

#include "meshplan/cuda/experts/detail/mma_layout.cuh"
#include "meshplan/cuda/experts/detail/tiles.cuh"
#include "meshplan/cuda/experts/detail/wgmma_gemm.cuh"
#include "meshplan/cuda/experts/detail/wgmma_layout.cuh"

namespace wl = meshplan::cuda::wgmma_layout;

namespace {

struct Fields {
  std::uint32_t start, leading, stride, base_offset, swizzle;
};

Fields decode(std::uint64_t d) {
  return {static_cast<std::uint32_t>(d & 0x3FFF) << 4, static_cast<std::uint32_t>((d >> 16) & 0x3FFF) << 4,
          static_cast<std::uint32_t>((d >> 32) & 0x3FFF) << 4, static_cast<std::uint32_t>((d >> 49) & 0x7),
          static_cast<std::uint32_t>(d >> 62)};
}

/// The shared address wgmma reads for element (row, k) (k < 16) of a K-major operand with
/// the 128B swizzle, given only its descriptor.
std::uint32_t wgmma_reads(std::uint64_t descriptor, int row, int k) {
  const Fields f = decode(descriptor);
  const std::uint32_t linear = f.start + static_cast<std::uint32_t>(row / 8) * f.stride +
                               static_cast<std::uint32_t>(row % 8) * 128 + static_cast<std::uint32_t>(k) * 2;
  return linear ^ (((linear >> 7) & 7) << 4);
}

/// Where the kernels store element (row, k) (k < 64) of a stage tile at `tile`.
std::uint32_t kernel_stores(std::uint32_t tile, int row, int k) {
  return tile + static_cast<std::uint32_t>(wl::swizzled_chunk(row, k / 8) + (k % 8) * 2);
}

}  // namespace

TEST_CASE("host: the descriptor's fields sit where the PTX ISA puts them", "[host]") {
  const Fields f = decode(wl::descriptor(0xABC0, 0x30, 1024, wl::Swizzle::b128));
  CHECK(f.start == 0xABC0);
  CHECK(f.leading == 0x30);
  CHECK(f.stride == 1024);
  CHECK(f.base_offset == 0);
  CHECK(f.swizzle == 1);
  CHECK(decode(wl::descriptor(0x3FFF0, 0, 0, wl::Swizzle::b32)).start == 0x3FFF0);  // the top of 256 KiB
  CHECK(decode(wl::descriptor(0, 0, 0, wl::Swizzle::b32)).swizzle == 3);
}

TEST_CASE("host: every k16 step of wgmma reads what the kernels stored, for A and B tiles", "[host]") {
  // A warpgroup's A tile (64 rows) and the B tile (128 rows), at 1024-byte aligned bases as
  // the kernels place them (the second warpgroup's A rows, the B rows after 128 A rows).
  for (const auto& [tile, rows] : {std::pair<std::uint32_t, int>{0, 64}, {8192, 64}, {16384, 128}, {99328, 128}}) {
    REQUIRE(tile % wl::group_bytes == 0);
    for (int step = 0; step < wl::tile_k / wl::mma_k; ++step) {
      const std::uint64_t d = wl::k_major_descriptor(tile, step);
      CHECK(decode(d).swizzle == 1);
      CHECK(decode(d).stride == 1024);
      for (int row = 0; row < rows; ++row)
        for (int k = 0; k < wl::mma_k; ++k) {
          INFO("tile " << tile << ", step " << step << ", row " << row << ", k " << k);
          REQUIRE(wgmma_reads(d, row, k) == kernel_stores(tile, row, step * wl::mma_k + k));
        }
    }
  }
}

TEST_CASE("host: the swizzled stores fill the tile once, 16 bytes at a time", "[host]") {
  std::set<int> chunks;
  for (int row = 0; row < 128; ++row)
    for (int c = 0; c < 8; ++c) {
      const int at = wl::swizzled_chunk(row, c);
      CHECK(at % 16 == 0);
      CHECK(at / wl::row_bytes == row);  // a row stays in its 128 bytes
      chunks.insert(at);
    }
  CHECK(chunks.size() == 128 * 8);
  CHECK(*chunks.rbegin() == 128 * wl::row_bytes - 16);
}

TEST_CASE("host: the wgmma accumulators cover the m64n128 tile once, as mma.sync's C per warp", "[host]") {
  std::set<std::pair<int, int>> seen;
  for (int thread = 0; thread < 128; ++thread)
    for (int reg = 0; reg < 64; ++reg) {
      const wl::Coord at = wl::accumulator(thread, reg);
      const int warp = thread / 32, lane = thread % 32, g = lane / 4, t = lane % 4;
      // The PTX ISA's statement of the layout.
      CHECK(at.row == 16 * warp + g + 8 * ((reg % 4) / 2));
      CHECK(at.col == 8 * (reg / 4) + 2 * t + reg % 2);
      // The same as mma.sync's 16x8 C fragment, per warp and column group.
      const auto c = meshplan::cuda::mma_layout::accumulator(lane, reg % 4);
      CHECK(at.row == 16 * warp + c.row);
      CHECK(at.col == 8 * (reg / 4) + c.k);
      seen.insert({at.row, at.col});
    }
  CHECK(seen.size() == 64 * 128);
  CHECK(seen.begin()->first == 0);
  CHECK(seen.rbegin()->first == 63);
  CHECK(seen.rbegin()->second == 127);
}

TEST_CASE("host: the sm_90 tiles fit the shared memory and the threads", "[host]") {
  using P = meshplan::cuda::WgmmaPolicies;
  using S = meshplan::cuda::Sm90SharedMemory;
  namespace k = meshplan::cuda::kernels;
  STATIC_REQUIRE(S::budget(1) == 227 * 1024);  // the opt-in maximum of one block
  STATIC_REQUIRE(S::budget(2) == 113 * 1024);  // half an SM's 228 KiB, less the 1 KiB reserved per block
  // The stage counts the budgets give: 32 KiB stages of the large tile (128 A rows and 128
  // B rows of 128 bytes), 24 KiB of the small one, 1 KiB to align the first.
  STATIC_REQUIRE(P::large::stage_bytes == 32 * 1024);
  STATIC_REQUIRE(P::small::stage_bytes == 24 * 1024);
  STATIC_REQUIRE(P::large::stages == 7);
  STATIC_REQUIRE(P::small::stages == 4);
  // Each fits its share of the SM, and one more stage would not (the count is the most that fits).
  STATIC_REQUIRE(k::wgmma_shared_bytes<P::large>() == 7 * 32 * 1024 + 1024);
  STATIC_REQUIRE(k::wgmma_shared_bytes<P::large>() <= S::per_block);
  STATIC_REQUIRE(k::wgmma_shared_bytes<P::large>() + P::large::stage_bytes > S::budget(1));
  STATIC_REQUIRE(2 * (k::wgmma_shared_bytes<P::small>() + S::reserved_per_block) <= S::per_sm);  // two small blocks
  STATIC_REQUIRE(k::wgmma_shared_bytes<P::small>() + P::small::stage_bytes > S::budget(2));
  STATIC_REQUIRE(meshplan::cuda::stages_that_fit(S::budget(1), 32 * 1024, 1024) == 7);
  STATIC_REQUIRE(meshplan::cuda::stages_that_fit(S::budget(2), 32 * 1024, 1024) == 3);
  // The staged output tiles (fp32 down: 128 columns) fit in the stages they reuse.
  STATIC_REQUIRE(k::WgmmaStagedTile<P::large, float, 128>::bytes <= P::large::stages * P::large::stage_bytes);
  STATIC_REQUIRE(k::WgmmaStagedTile<P::small, float, 128>::bytes <= P::small::stages * P::small::stage_bytes);
  STATIC_REQUIRE(P::large::block_k == P::small::block_k);  // the same k order in both classes
  STATIC_REQUIRE(P::large::block_m * 8 % P::large::threads == 0);
  STATIC_REQUIRE(P::small::b_rows * 8 % P::small::threads == 0);
}

TEST_CASE("host: the mma.sync blocks' shared memory holds the stages and the staged outputs", "[host]") {
  using P = meshplan::cuda::ExpertGemmPolicies;
  namespace k = meshplan::cuda::kernels;
  // down_large's fp32 output tile (128 x (128 + 8) floats) outgrows its 3 stages: the
  // launch asks for the larger.
  STATIC_REQUIRE(k::gemm_shared_bytes<P::down_large, 1>() == 3 * 256 * 40 * 2);
  STATIC_REQUIRE(k::gemm_block_shared_bytes<P::down_large, 1, float>() == 128 * 136 * 4);
  STATIC_REQUIRE(k::gemm_block_shared_bytes<P::down_large, 1, __nv_bfloat16>() == 3 * 256 * 40 * 2);
  STATIC_REQUIRE(k::gemm_block_shared_bytes<P::gate_up_small, 2, __nv_bfloat16>() == 3 * 128 * 40 * 2);
  STATIC_REQUIRE(k::gemm_block_shared_bytes<P::down_small, 1, float>() == 3 * 128 * 40 * 2);
  STATIC_REQUIRE(k::gemm_block_shared_bytes<P::down_large, 1, float>() <= 227 * 1024);
}
