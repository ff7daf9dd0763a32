#pragma once
// Launch shapes of the permutation kernels, as constexpr values chosen per architecture
// (CUB's habit): row kernels move 16-byte vectors, one block per row group.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

namespace meshplan::cuda {

struct PermutePolicy {
  int threads;          // threads per block of the row kernels
  int rows_per_block;   // rows each block of gather/regroup handles
  int combine_threads;  // threads per token of the combine
};

/// For compute capability `sm` (e.g. 90).
constexpr PermutePolicy permute_policy(int sm) noexcept {
  if (sm >= 90) return {256, 4, 128};  // Hopper: wide rows, many SMs
  if (sm >= 80) return {256, 2, 128};
  return {128, 1, 128};
}

}  // namespace meshplan::cuda
