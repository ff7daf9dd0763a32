#pragma once
// Grid sizes for grid-stride kernels, and the launch of an element-wise kernel with its
// error check.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cuda_runtime_api.h>

#include "meshplan/cuda/core/error.cuh"

namespace meshplan::cuda {

/// Blocks for `n` items at `per_block` items a block: at least 1 (a kernel given no work
/// returns at once), at most 65535 * 32 (grid-stride loops cover the rest).
inline unsigned grid_for(long long n, long long per_block) noexcept {
  const long long b = (n + per_block - 1) / per_block;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 65535LL * 32 ? 65535LL * 32 : b));
}

inline constexpr int elementwise_threads = 256;

/// Calls go(blocks) to launch an element-wise kernel over `n` items with
/// elementwise_threads threads a block (nothing for n = 0), and checks the launch.
template <class Launch>
void launch_elementwise(long long n, Launch&& go) {
  if (n <= 0) return;
  go(grid_for(n, elementwise_threads));
  MESHPLAN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace meshplan::cuda
