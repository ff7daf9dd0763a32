#pragma once
// Element types on the device: float, __half and __nv_bfloat16, with fp32 conversions, and
// the device twin of each host storage type (meshplan::bfloat16 -> __nv_bfloat16). The
// host and device bfloat16 share their bits, so buffers copy between them as they are.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "meshplan/core/bfloat16.hpp"

namespace meshplan::cuda {

template <class T>
concept DeviceElement = std::is_same_v<T, float> || std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

__host__ __device__ inline float to_float(float v) { return v; }
__host__ __device__ inline float to_float(__half v) { return __half2float(v); }
__host__ __device__ inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <DeviceElement T>
__host__ __device__ inline T from_float(float v) {
  if constexpr (std::is_same_v<T, float>)
    return v;
  else if constexpr (std::is_same_v<T, __half>)
    return __float2half_rn(v);
  else
    return __float2bfloat16_rn(v);
}

/// The device type of a host storage type.
template <class T>
struct device_type;
template <>
struct device_type<float> {
  using type = float;
};
template <>
struct device_type<bfloat16> {
  using type = __nv_bfloat16;
};
template <class T>
using device_type_t = typename device_type<T>::type;

static_assert(sizeof(bfloat16) == sizeof(__nv_bfloat16), "host and device bfloat16 share their bits");

}  // namespace meshplan::cuda
