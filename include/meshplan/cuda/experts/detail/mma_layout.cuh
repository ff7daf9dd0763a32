#pragma once
// Where each lane's data sits for mma.sync.m16n8k16 (bf16 in, fp32 accumulators) fed by
// ldmatrix: the addresses a lane gives ldmatrix, and the tile position of each accumulator
// it holds. The grouped kernels use these functions and nothing else for the mapping, and a
// host test checks them against the PTX ISA's fragment tables, without a GPU.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

namespace meshplan::cuda::mma_layout {

struct Coord {
  int row;  // the m (or, for B, n) index inside the fragment
  int k;    // the k index (or, for accumulators, the column n) inside the fragment
};

/// ldmatrix.x4 of a 16x16 A fragment stored [m][k]: the row lane `lane` points at. Lanes
/// 0-7 give matrix 0 (rows 0-7, k 0-7), 8-15 matrix 1 (rows 8-15, k 0-7), 16-23 matrix 2
/// (rows 0-7, k 8-15), 24-31 matrix 3 (rows 8-15, k 8-15): registers a0..a3 in mma order.
__host__ __device__ constexpr Coord a_ldmatrix_row(int lane) { return {lane % 16, (lane / 16) * 8}; }

/// ldmatrix.x2 of a 16x8 B fragment stored [n][k]: lanes 0-7 give matrix 0 (n 0-7, k 0-7),
/// lanes 8-15 matrix 1 (n 0-7, k 8-15): registers b0, b1. Lanes 16-31 repeat lanes 0-15
/// (their addresses are not used, but must be valid).
__host__ __device__ constexpr Coord b_ldmatrix_row(int lane) { return {lane % 8, ((lane % 16) / 8) * 8}; }

/// The position in the 16x8 C fragment of accumulator v (0-3) of lane `lane`.
__host__ __device__ constexpr Coord accumulator(int lane, int v) {
  return {lane / 4 + (v >= 2 ? 8 : 0), (lane % 4) * 2 + v % 2};
}

}  // namespace meshplan::cuda::mma_layout
