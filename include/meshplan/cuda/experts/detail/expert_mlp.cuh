#pragma once
// ExpertMLP: the one place that chooses how the experts' SwiGLU MLPs run on the GPU. bf16
// storage on sm_80+ runs the fused grouped kernels (FusedExperts: wgmma on sm_90 with sm_90a
// code, else mma.sync), which read the tokens through the permutation in place; everything
// else runs cuBLAS in fixed-shape chunks (CublasExperts), after gathering the rows. So does
// a forward that keeps its activations for a backward (`keep`): the fused kernels never
// write the pre-activations out.
//
//   ExpertMLP mlp(std::is_same_v<T, bfloat16>);
//   mlp.grouped(rows, gather, top_k, offsets, gate_up, down, H, I, out, stream);
//   mlp.dense(x, tokens, gate, up, down, H, I, out, stream);

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cuda_runtime_api.h>

#include <cstdint>
#include <span>
#include <type_traits>

#include "meshplan/core/size.hpp"
#include "meshplan/cuda/core/buffer.cuh"
#include "meshplan/cuda/core/detail/device_types.cuh"
#include "meshplan/cuda/experts/cublas_experts.cuh"
#include "meshplan/cuda/experts/fused_experts.cuh"
#include "meshplan/cuda/experts/detail/tiles.cuh"
#include "meshplan/cuda/permute/device_permute.cuh"

namespace meshplan::cuda {

class ExpertMLP {
 public:
  /// `bf16`: whether the weights are stored in bfloat16 (the fused kernels' only type).
  explicit ExpertMLP(bool bf16) : path_(device_expert_path(bf16)) {
    if (path_ != ExpertPath::cublas) fused_ = FusedExperts(path_);
  }

  ExpertPath path() const noexcept { return path_; }

  /// Rows grouped by local expert (`offsets`, host, El + 1 entries): `rows` [N, H], or, with
  /// `gather`, row r is token gather[r] / top_k of `rows`. gate_up [El, 2I, H], down
  /// [El, H, I]; out [N, H] of Row (the storage type, or fp32 partial sums).
  template <DeviceElement D, class Row>
  void grouped(const D* rows, const std::int32_t* gather, index_t top_k, std::span<const index_t> offsets,
               const D* gate_up, const D* down, index_t hidden, index_t inter, Row* out, cudaStream_t stream,
               KeptActivations<D> keep = {}) {
    if constexpr (std::is_same_v<D, __nv_bfloat16>) {
      if (path_ != ExpertPath::cublas && !keep)
        return fused_.grouped(rows, gather, top_k, offsets, gate_up, down, hidden, inter, out, stream);
    }
    if (gather) {
      const index_t pairs = offsets.empty() ? 0 : offsets.back();
      gathered_.resize(static_cast<std::size_t>(pairs * hidden) * sizeof(D));
      D* staged = reinterpret_cast<D*>(gathered_.data());
      DevicePermute::gather_rows(rows, gather, top_k, pairs, hidden, staged, stream);
      rows = staged;
    }
    cublas_.grouped(rows, offsets, gate_up, down, hidden, inter, out, stream, keep);
  }

  /// A dense MLP (the shared experts): x [tokens, H]; gate, up [I, H], down [H, I]; out fp32.
  template <DeviceElement D>
  void dense(const D* x, index_t tokens, const D* gate, const D* up, const D* down, index_t hidden, index_t inter,
             float* out, cudaStream_t stream, KeptActivations<D> keep = {}) {
    if constexpr (std::is_same_v<D, __nv_bfloat16>) {
      if (path_ != ExpertPath::cublas && !keep)
        return fused_.dense(x, tokens, gate, up, down, hidden, inter, out, stream);
    }
    cublas_.dense(x, tokens, gate, up, down, hidden, inter, out, stream, keep);
  }

 private:
  ExpertPath path_;
  CublasExperts cublas_;
  FusedExperts fused_;
  DeviceBuffer<unsigned char> gathered_;
};

}  // namespace meshplan::cuda
