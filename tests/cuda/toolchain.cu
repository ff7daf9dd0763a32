// The CUDA toolchain as meshplan::cuda sets it up: C++20 on host and device, and the
// integer helpers marked MESHPLAN_HOST_DEVICE give on the GPU what they give on the host.
#include <cstdio>
#include <vector>

#include "meshplan/cuda/core/error.cuh"
#include "meshplan/placement/sharding.hpp"

static_assert(__cplusplus >= 202002L, "CUDA sources must compile as C++20 (see cmake/MeshplanCudaStandard.cmake)");

namespace mp = meshplan;

// One thread per (n, k, r) with n < 64, 1 <= k <= 16, r < k.
__global__ void chunks_on_device(mp::Chunk* out) {
  int n = blockIdx.x, k = threadIdx.y + 1, r = threadIdx.x;
  if (r < k) out[(n * 16 + (k - 1)) * 16 + r] = mp::chunk(n, k, r);
}

int main() {
  if (mp::cuda::device_count() == 0) {
    std::puts("no CUDA device: skipped");
    return 77;
  }
  constexpr int count = 64 * 16 * 16;
  mp::Chunk* device = nullptr;
  MESHPLAN_CUDA_CHECK(cudaMalloc(&device, count * sizeof(mp::Chunk)));
  MESHPLAN_CUDA_CHECK(cudaMemset(device, 0xff, count * sizeof(mp::Chunk)));
  chunks_on_device<<<64, dim3(16, 16)>>>(device);
  MESHPLAN_CUDA_CHECK(cudaGetLastError());
  std::vector<mp::Chunk> host(count);
  MESHPLAN_CUDA_CHECK(cudaMemcpy(host.data(), device, count * sizeof(mp::Chunk), cudaMemcpyDeviceToHost));
  MESHPLAN_CUDA_CHECK(cudaFree(device));
  int mismatches = 0;
  for (int n = 0; n < 64; ++n)
    for (int k = 1; k <= 16; ++k)
      for (int r = 0; r < k; ++r)
        if (!(host[(n * 16 + (k - 1)) * 16 + r] == mp::chunk(n, k, r))) ++mismatches;
  std::printf("%d mismatches between device and host chunk()\n", mismatches);
  return mismatches == 0 ? 0 : 1;
}
