// Compiled by a consumer against meshplan::cuda: must be C++20.
#include <meshplan/cuda/core/error.cuh>
#include <meshplan/meshplan.hpp>

static_assert(__cplusplus >= 202002L, "meshplan::cuda must compile CUDA sources as C++20");

__global__ void chunk_sizes(meshplan::index_t n, meshplan::index_t k, meshplan::index_t* sizes) {
  sizes[threadIdx.x] = meshplan::chunk(n, k, threadIdx.x).size;
}
