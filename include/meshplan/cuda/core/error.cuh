#pragma once
// CUDA errors as exceptions that say what failed and where.

#include "meshplan/core/detail/public_begin.hpp"

#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace meshplan::cuda {

class CudaError : public std::runtime_error {
 public:
  CudaError(cudaError_t code, const char* what, const char* file, int line)
      : std::runtime_error(std::string("CUDA error ") + cudaGetErrorName(code) + " (" + cudaGetErrorString(code) +
                           ") in " + what + " at " + file + ":" + std::to_string(line)),
        code_(code) {}
  cudaError_t code() const noexcept { return code_; }

 private:
  cudaError_t code_;
};

inline void check(cudaError_t code, const char* what, const char* file, int line) {
  if (code != cudaSuccess) throw CudaError(code, what, file, line);
}

/// The number of visible CUDA devices; 0 when there is no driver or no device (the CUDA
/// runtime reports those as errors, which are not exceptional here).
inline int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

}  // namespace meshplan::cuda

/// Throws meshplan::cuda::CudaError when a CUDA runtime call fails.
#define MESHPLAN_CUDA_CHECK(expr) ::meshplan::cuda::check((expr), #expr, __FILE__, __LINE__)

namespace meshplan::cuda {

/// The compute capability of the current device, as 90 for sm_90.
inline int current_sm() {
  int device = 0, major = 0, minor = 0;
  MESHPLAN_CUDA_CHECK(cudaGetDevice(&device));
  MESHPLAN_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  MESHPLAN_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  return major * 10 + minor;
}

}  // namespace meshplan::cuda

#include "meshplan/core/detail/public_end.hpp"
