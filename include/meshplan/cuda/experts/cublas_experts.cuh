#pragma once
// The experts' SwiGLU MLP by cuBLAS: per expert with rows, one GEMM for gate and up (fused
// weights [2I, H]: gate rows, then up rows), the activation, one GEMM for down. fp32
// accumulation and fp32 GEMM outputs; the activation is stored as T (as the CPU reference
// stores it) and the output is rounded to the row type, or left in fp32 for partial sums.
// This is the baseline path; the fused grouped kernels replace it.
//
// Row-major through column-major cuBLAS: y[n, o] = x[n, i] . w[o, i]^T is, read as
// column-major, y^T[o, n] = w[o, i] . x^T[i, n]: OP_T on the weight (stored [o, i],
// leading dim i), OP_N on the rows (leading dim i), output leading dim o.

#include "meshplan/core/detail/public_begin.hpp"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/cuda/core/buffer.cuh"
#include "meshplan/cuda/core/detail/device_types.cuh"
#include "meshplan/cuda/core/error.cuh"
#include "meshplan/cuda/core/detail/launch.cuh"
#include "meshplan/cuda/permute/detail/kernels.cuh"

namespace meshplan::cuda {

class CublasError : public std::runtime_error {
 public:
  CublasError(cublasStatus_t code, const char* what, const char* file, int line)
      : std::runtime_error(std::string("cuBLAS error ") + cublasGetStatusString(code) + " in " + what + " at " + file +
                           ":" + std::to_string(line)) {}
};

inline void check(cublasStatus_t code, const char* what, const char* file, int line) {
  if (code != CUBLAS_STATUS_SUCCESS) throw CublasError(code, what, file, line);
}

}  // namespace meshplan::cuda

/// Throws meshplan::cuda::CublasError when a cuBLAS call fails.
#define MESHPLAN_CUBLAS_CHECK(expr) ::meshplan::cuda::check((expr), #expr, __FILE__, __LINE__)

namespace meshplan::cuda {

/// A cuBLAS handle on the current device.
class CublasHandle {
 public:
  CublasHandle() {
    MESHPLAN_CUBLAS_CHECK(cublasCreate(&handle_));
    // No TF32 for fp32 inputs: the results stay comparable with the fp32 CPU reference.
    MESHPLAN_CUBLAS_CHECK(cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH));
  }
  ~CublasHandle() {
    if (handle_) cublasDestroy(handle_);
  }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  CublasHandle(CublasHandle&& o) noexcept : handle_(std::exchange(o.handle_, nullptr)) {}

  cublasHandle_t get() const noexcept { return handle_; }

 private:
  cublasHandle_t handle_ = nullptr;
};

template <DeviceElement T>
constexpr cudaDataType_t cuda_data_type() noexcept {
  if constexpr (std::is_same_v<T, float>)
    return CUDA_R_32F;
  else if constexpr (std::is_same_v<T, __half>)
    return CUDA_R_16F;
  else
    return CUDA_R_16BF;
}

namespace expert_rules {
inline Message gemm_size(std::string_view what, long long n) {
  if (n >= 0 && n <= INT32_MAX) return {};
  return Message::rule("device_size_range") << what << " is " << n << "; cuBLAS takes 0 to " << INT32_MAX;
}
}  // namespace expert_rules

/// y[rows, out] (fp32, leading dim ldy) = x[rows, in] . w[out, in]^T.
template <DeviceElement T>
void linear_rows(cublasHandle_t handle, const T* x, index_t rows, const T* w, index_t out, index_t in, float* y,
                 index_t ldy) {
  enforce(
      first_of({expert_rules::gemm_size("the row count", rows), expert_rules::gemm_size("the output width", out),
                expert_rules::gemm_size("the input width", in), expert_rules::gemm_size("the output stride", ldy)}));
  if (rows == 0 || out == 0) return;
  const float one = 1.0f, zero = 0.0f;
  MESHPLAN_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out), static_cast<int>(rows),
                                     static_cast<int>(in), &one, w, cuda_data_type<T>(), static_cast<int>(in), x,
                                     cuda_data_type<T>(), static_cast<int>(in), &zero, y, CUDA_R_32F,
                                     static_cast<int>(ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/// Where an MLP's forward keeps, for the backward, its fp32 gate/up pre-activations
/// [rows, 2I] (gate columns first) and its stored activation [rows, I], row for row with
/// its output: the values the forward computes its output from. Null: nothing kept.
template <DeviceElement T>
struct KeptActivations {
  float* gate_up = nullptr;
  T* act = nullptr;

  explicit operator bool() const noexcept { return gate_up != nullptr; }
  /// The same from row `first` on.
  KeptActivations at(index_t first, index_t inter) const noexcept {
    return gate_up ? KeptActivations{gate_up + first * 2 * inter, act + first * inter} : KeptActivations{};
  }
};

/// The experts' MLP with its workspaces (reused across calls; one per rank and stream).
///
/// Reproducible by default: every GEMM runs on exactly `chunk_rows` rows (the last chunk of
/// each expert staged, padded with zeros). cuBLAS picks its kernel, and with it the order
/// of each dot product's sum, from the problem's shape; with one shape for every call, a
/// row's result no longer depends on how many rows its expert had on this rank, so plans
/// that only move rows give the single-rank bits. chunk_rows = 0 runs one GEMM per expert
/// on exactly its rows instead (fewer launches; bits may follow the row count).
class CublasExperts {
 public:
  static constexpr index_t default_chunk_rows = 128;

  /// Refuses a negative chunk_rows before it creates the cuBLAS handle.
  explicit CublasExperts(index_t chunk_rows = default_chunk_rows) : chunk_rows_(checked(chunk_rows)) {}
  index_t chunk_rows() const noexcept { return chunk_rows_; }

  /// rows [N, H] grouped by local expert (`offsets`, host, El + 1 entries), gate_up
  /// [El, 2I, H] and down [El, H, I]: out [N, H] of type Row (T, rounded, or fp32); with
  /// `keep`, the pre-activations and the activation of the N rows too.
  template <DeviceElement T, class Row>
  void grouped(const T* rows, std::span<const index_t> offsets, const T* gate_up, const T* down, index_t hidden,
               index_t inter, Row* out, cudaStream_t stream, KeptActivations<T> keep = {}) {
    for (std::size_t j = 0; j + 1 < offsets.size(); ++j) {
      const index_t n = offsets[j + 1] - offsets[j];
      if (n == 0) continue;
      const T* gate = gate_up + static_cast<index_t>(j) * 2 * inter * hidden;
      mlp<T, Row>(rows + offsets[j] * hidden, n, gate, nullptr, down + static_cast<index_t>(j) * hidden * inter, hidden,
                  inter, out + offsets[j] * hidden, stream, keep.at(offsets[j], inter));
    }
  }

  /// A dense MLP (the shared experts): gate, up [I, H], down [H, I]; out [rows, H] fp32.
  template <DeviceElement T>
  void dense(const T* x, index_t rows, const T* gate, const T* up, const T* down, index_t hidden, index_t inter,
             float* out, cudaStream_t stream, KeptActivations<T> keep = {}) {
    mlp<T, float>(x, rows, gate, up, down, hidden, inter, out, stream, keep);
  }

 private:
  static index_t checked(index_t chunk_rows) {
    enforce(chunk_rows >= 0 ? Message{}
                            : Message::rule("device_size_range") << "chunk_rows is " << chunk_rows << "; 0 or more rows");
    return chunk_rows;
  }

  /// `up` null: gate and up are one [2I, H] weight.
  template <DeviceElement T, class Row>
  void mlp(const T* x, index_t rows, const T* gate, const T* up, const T* down, index_t hidden, index_t inter, Row* out,
           cudaStream_t stream, KeptActivations<T> keep) {
    MESHPLAN_CUBLAS_CHECK(cublasSetStream(handle_.get(), stream));
    if (chunk_rows_ == 0) {
      mlp_rows(x, rows, gate, up, down, hidden, inter, out, stream);
      return keep_rows<T>(keep, rows, inter, stream);
    }
    const index_t C = chunk_rows_;
    for (index_t first = 0; first < rows; first += C) {
      const index_t n = std::min(C, rows - first);
      if (n == C) {
        mlp_rows(x + first * hidden, C, gate, up, down, hidden, inter, out + first * hidden, stream);
        keep_rows<T>(keep.at(first, inter), C, inter, stream);
        continue;
      }
      // The tail: staged into C rows, zeros after the real ones, so the GEMMs keep their shape.
      stage_in_.resize(static_cast<std::size_t>(C * hidden) * sizeof(T));
      stage_out_.resize(static_cast<std::size_t>(C * hidden) * sizeof(Row));
      const std::size_t real = static_cast<std::size_t>(n * hidden) * sizeof(T);
      MESHPLAN_CUDA_CHECK(
          cudaMemcpyAsync(stage_in_.data(), x + first * hidden, real, cudaMemcpyDeviceToDevice, stream));
      MESHPLAN_CUDA_CHECK(cudaMemsetAsync(stage_in_.data() + real, 0, stage_in_.size() - real, stream));
      auto* staged_out = reinterpret_cast<Row*>(stage_out_.data());
      mlp_rows(reinterpret_cast<const T*>(stage_in_.data()), C, gate, up, down, hidden, inter, staged_out, stream);
      MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(out + first * hidden, staged_out,
                                          static_cast<std::size_t>(n * hidden) * sizeof(Row), cudaMemcpyDeviceToDevice,
                                          stream));
      keep_rows<T>(keep.at(first, inter), n, inter, stream);
    }
  }

  /// The first `rows` rows of the last mlp_rows' pre-activations and activation, into `keep`.
  template <DeviceElement T>
  void keep_rows(KeptActivations<T> keep, index_t rows, index_t inter, cudaStream_t stream) {
    if (!keep || rows == 0 || inter == 0) return;
    MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(keep.gate_up, h_.data(), static_cast<std::size_t>(rows * 2 * inter) * sizeof(float),
                                        cudaMemcpyDeviceToDevice, stream));
    MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(keep.act, act_.data(), static_cast<std::size_t>(rows * inter) * sizeof(T),
                                        cudaMemcpyDeviceToDevice, stream));
  }

  /// The MLP on exactly `rows` rows.
  template <DeviceElement T, class Row>
  void mlp_rows(const T* x, index_t rows, const T* gate, const T* up, const T* down, index_t hidden, index_t inter,
                Row* out, cudaStream_t stream) {
    h_.resize(static_cast<std::size_t>(rows * 2 * inter));
    act_.resize(static_cast<std::size_t>(rows * inter) * sizeof(T));
    auto* act = reinterpret_cast<T*>(act_.data());
    if (up) {
      linear_rows(handle_.get(), x, rows, gate, inter, hidden, h_.data(), 2 * inter);
      linear_rows(handle_.get(), x, rows, up, inter, hidden, h_.data() + inter, 2 * inter);
    } else {
      linear_rows(handle_.get(), x, rows, gate, 2 * inter, hidden, h_.data(), 2 * inter);
    }
    launch_elementwise(rows * inter, [&](unsigned blocks) {
      kernels::swiglu<T>
          <<<blocks, elementwise_threads, 0, stream>>>(h_.data(), static_cast<int>(rows), static_cast<int>(inter), act);
    });
    if constexpr (std::is_same_v<Row, float>) {
      linear_rows(handle_.get(), static_cast<const T*>(act), rows, down, hidden, inter, out, hidden);
    } else {
      y_.resize(static_cast<std::size_t>(rows * hidden));
      linear_rows(handle_.get(), static_cast<const T*>(act), rows, down, hidden, inter, y_.data(), hidden);
      launch_elementwise(rows * hidden, [&](unsigned blocks) {
        kernels::round_to<Row><<<blocks, elementwise_threads, 0, stream>>>(y_.data(), rows * hidden, out);
      });
    }
  }

  index_t chunk_rows_;
  CublasHandle handle_;
  DeviceBuffer<float> h_;
  DeviceBuffer<unsigned char> act_;
  DeviceBuffer<float> y_;
  DeviceBuffer<unsigned char> stage_in_;
  DeviceBuffer<unsigned char> stage_out_;
};

}  // namespace meshplan::cuda

#include "meshplan/core/detail/public_end.hpp"
