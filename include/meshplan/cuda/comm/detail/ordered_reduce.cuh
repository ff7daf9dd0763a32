#pragma once
// The device twin of comm/detail/ordered_reduce.hpp: out[i] = op over members in group order of
// input_m[offset + i], in fp32 for floating types, with separate adds; every rank computes
// the same bits whatever the communicator.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cuda_runtime_api.h>

#include <cstdint>
#include <type_traits>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/cuda/core/detail/device_types.cuh"
#include "meshplan/cuda/core/error.cuh"
#include "meshplan/cuda/core/detail/launch.cuh"
#include "meshplan/placement/placement.hpp"

namespace meshplan::cuda {

namespace kernels {
template <class T>
__device__ inline auto widen(T v) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>)
    return to_float(v);
  else
    return v;
}
template <class T, class A>
__device__ inline T narrow(A v) {
  if constexpr (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>)
    return from_float<T>(v);
  else
    return static_cast<T>(v);
}

template <class T>
__global__ void ordered_reduce(const T* const* inputs, int members, long long n, long long offset, int op, T* out) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    auto acc = widen(inputs[0][offset + i]);
    for (int m = 1; m < members; ++m) {
      const auto v = widen(inputs[m][offset + i]);
      switch (op) {
        case static_cast<int>(ReduceOp::max):
          acc = acc < v ? v : acc;
          break;
        case static_cast<int>(ReduceOp::min):
          acc = v < acc ? v : acc;
          break;
        default:
          if constexpr (std::is_floating_point_v<decltype(acc)>)
            acc = __fadd_rn(acc, v);
          else
            acc = acc + v;
      }
    }
    if (op == static_cast<int>(ReduceOp::avg)) acc = acc / static_cast<decltype(acc)>(members);
    out[i] = narrow<T>(acc);
  }
}
}  // namespace kernels

/// The device element type of a host communicator element type.
template <class T>
using device_comm_t = std::conditional_t<std::is_same_v<T, bfloat16>, __nv_bfloat16, T>;

/// Launches the ordered reduction of `members` device buffers (`inputs` is a device array
/// of their pointers).
template <class T>
void launch_ordered_reduce(const T* const* inputs, index_t members, index_t n, index_t offset, ReduceOp op, T* out,
                           cudaStream_t stream) {
  if (n == 0) return;
  using D = device_comm_t<T>;
  launch_elementwise(n, [&](unsigned blocks) {
    kernels::ordered_reduce<D><<<blocks, elementwise_threads, 0, stream>>>(
        reinterpret_cast<const D* const*>(inputs), static_cast<int>(members), n, offset, static_cast<int>(op),
        reinterpret_cast<D*>(out));
  });
}

}  // namespace meshplan::cuda
