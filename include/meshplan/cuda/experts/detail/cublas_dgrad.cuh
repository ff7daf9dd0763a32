#pragma once
// The input gradients' products of the MoE backward by cuBLAS: c [rows, N] = a [rows, K] w
// with w a weight as stored, row-major [K, N] (the forward reads it as [out, in] through
// OP_T; the backward reads the same memory through OP_N: the transpose without a copy).
// All fp32 (a bf16 weight is widened once, by the caller), fp32 accumulation, no TF32.
//
// Row-major through column-major cuBLAS: c[r, n] = sum_k a[r, k] w[k, n] is, read as
// column-major, c^T [N, rows] = w^T [N, K] . a^T [K, rows]: w is column-major [N, K] with
// leading dim N (OP_N), a column-major [K, rows] with leading dim K (OP_N), c leading dim N.
//
// Reproducible as CublasExperts is: every GEMM runs on exactly `chunk_rows` rows (a tail is
// staged, padded with zero rows), so a row's result does not depend on how many rows its
// group had on this rank; plans that only move rows then give one rank's bits.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/cuda/core/buffer.cuh"
#include "meshplan/cuda/core/error.cuh"
#include "meshplan/cuda/experts/cublas_experts.cuh"

namespace meshplan::cuda {

class CublasDgrad {
 public:
  explicit CublasDgrad(index_t chunk_rows = CublasExperts::default_chunk_rows) : chunk_rows_(checked(chunk_rows)) {}
  index_t chunk_rows() const noexcept { return chunk_rows_; }

  /// c [rows, N] (leading dim N) = a [rows, K] (leading dim K) . w [K, N], on `stream`.
  void rows_times(const float* a, index_t rows, index_t K, const float* w, index_t N, float* c, cudaStream_t stream) {
    enforce(first_of({expert_rules::gemm_size("the row count", rows), expert_rules::gemm_size("the inner width", K),
                      expert_rules::gemm_size("the output width", N)}));
    if (rows == 0 || N == 0) return;
    MESHPLAN_CUBLAS_CHECK(cublasSetStream(handle_.get(), stream));
    if (chunk_rows_ == 0) return gemm(a, rows, K, w, N, c);
    const index_t C = chunk_rows_;
    for (index_t first = 0; first < rows; first += C) {
      const index_t n = std::min(C, rows - first);
      if (n == C) {
        gemm(a + first * K, C, K, w, N, c + first * N);
        continue;
      }
      // The tail: staged into C rows, zeros after the real ones, so the GEMM keeps its shape.
      stage_in_.resize(static_cast<std::size_t>(C * K));
      stage_out_.resize(static_cast<std::size_t>(C * N));
      const std::size_t real = static_cast<std::size_t>(n * K) * sizeof(float);
      MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(stage_in_.data(), a + first * K, real, cudaMemcpyDeviceToDevice, stream));
      MESHPLAN_CUDA_CHECK(cudaMemsetAsync(stage_in_.data() + n * K, 0, stage_in_.bytes() - real, stream));
      gemm(stage_in_.data(), C, K, w, N, stage_out_.data());
      MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(c + first * N, stage_out_.data(), static_cast<std::size_t>(n * N) * sizeof(float),
                                          cudaMemcpyDeviceToDevice, stream));
    }
  }

 private:
  static index_t checked(index_t chunk_rows) {
    enforce(chunk_rows >= 0 ? Message{}
                            : Message::rule("device_size_range") << "chunk_rows is " << chunk_rows << "; 0 or more rows");
    return chunk_rows;
  }

  /// The product on exactly `rows` rows.
  void gemm(const float* a, index_t rows, index_t K, const float* w, index_t N, float* c) {
    const float one = 1.0f, zero = 0.0f;
    MESHPLAN_CUBLAS_CHECK(cublasGemmEx(handle_.get(), CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(N),
                                       static_cast<int>(rows), static_cast<int>(K), &one, w, CUDA_R_32F,
                                       static_cast<int>(N), a, CUDA_R_32F, static_cast<int>(std::max<index_t>(K, 1)),
                                       &zero, c, CUDA_R_32F, static_cast<int>(N), CUBLAS_COMPUTE_32F,
                                       CUBLAS_GEMM_DEFAULT));
  }

  index_t chunk_rows_;
  CublasHandle handle_;
  DeviceBuffer<float> stage_in_, stage_out_;
};

}  // namespace meshplan::cuda
