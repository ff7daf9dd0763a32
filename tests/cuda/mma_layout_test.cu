// The fused kernels' fragment mapping (cuda/experts/detail/mma_layout.cuh) against the PTX ISA's
// own tables, on the host: ldmatrix is simulated from the addresses the kernels give it,
// and every register element must land where mma.m16n8k16 (.row.col, bf16) expects it.
//
// From the PTX ISA ("Matrix Fragments for mma.m16n8k16 with floating point type" and
// "ldmatrix"), with g = lane / 4 and t = lane % 4:
//   A 16x16: elements a0..a7 (two per register); row g for a0, a1, a4, a5 and g + 8 for
//            a2, a3, a6, a7; column 2t + (i % 2), plus 8 for a4..a7.
//   B 16x8:  elements b0..b3; row (k) 2t + (i % 2), plus 8 for b2, b3; column (n) g.
//   C 16x8:  c0..c3; row g for c0, c1 and g + 8 for c2, c3; column 2t + (i % 2).
//   ldmatrix .m8n8 .b16 (no .trans): matrix j takes its 8 rows from the addresses of lanes
//            8j..8j+7; lane l receives, in register j, row l / 4, columns 2(l % 4) and
//            2(l % 4) + 1 of matrix j.
#include <catch2/catch.hpp>

#include <array>

#include "meshplan/cuda/experts/detail/mma_layout.cuh"

namespace ml = meshplan::cuda::mma_layout;

namespace {

constexpr int value(int row, int col) { return row * 100 + col; }  // tells every element apart

/// ldmatrix of `matrices` 8x8 matrices from a tile whose element (r, c) is value(r, c):
/// out[lane][register][0 or 1], with the row addresses `address(lane)` gives.
template <int Matrices, class Address>
std::array<std::array<std::array<int, 2>, Matrices>, 32> ldmatrix(Address address) {
  std::array<std::array<std::array<int, 2>, Matrices>, 32> out{};
  for (int j = 0; j < Matrices; ++j)
    for (int lane = 0; lane < 32; ++lane) {
      const ml::Coord row_start = address(8 * j + lane / 4);  // the lane that gave row lane / 4
      for (int e = 0; e < 2; ++e) out[lane][j][e] = value(row_start.row, row_start.k + 2 * (lane % 4) + e);
    }
  return out;
}

}  // namespace

TEST_CASE("host: the A fragment loaded by ldmatrix.x4 is mma's", "[host]") {
  const auto regs = ldmatrix<4>([](int lane) { return ml::a_ldmatrix_row(lane); });
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 8; ++i) {
      const int g = lane / 4, t = lane % 4;
      const int row = g + ((i / 2) % 2 == 1 ? 8 : 0), col = 2 * t + i % 2 + (i >= 4 ? 8 : 0);
      INFO("lane " << lane << ", a" << i);
      CHECK(regs[lane][i / 2][i % 2] == value(row, col));
    }
}

TEST_CASE("host: the B fragment loaded by ldmatrix.x2 from [n][k] rows is mma's .col B", "[host]") {
  // The tile is stored [n][k]: value(n, k). mma's B element (k, n) must be that.
  const auto regs = ldmatrix<2>([](int lane) { return ml::b_ldmatrix_row(lane); });
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 4; ++i) {
      const int g = lane / 4, t = lane % 4;
      const int k = 2 * t + i % 2 + (i >= 2 ? 8 : 0), n = g;
      INFO("lane " << lane << ", b" << i);
      CHECK(regs[lane][i / 2][i % 2] == value(n, k));
    }
  for (int lane = 16; lane < 32; ++lane) CHECK(ml::b_ldmatrix_row(lane).row == ml::b_ldmatrix_row(lane - 16).row);
}

TEST_CASE("host: each accumulator's position is mma's C layout, every position once", "[host]") {
  std::array<int, 16 * 8> seen{};
  for (int lane = 0; lane < 32; ++lane)
    for (int v = 0; v < 4; ++v) {
      const ml::Coord at = ml::accumulator(lane, v);
      CHECK(at.row == lane / 4 + (v >= 2 ? 8 : 0));
      CHECK(at.k == 2 * (lane % 4) + v % 2);
      ++seen[static_cast<std::size_t>(at.row * 8 + at.k)];
    }
  for (int s : seen) CHECK(s == 1);
}
