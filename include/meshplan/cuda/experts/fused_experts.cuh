#pragma once
// FusedExperts: the experts' SwiGLU MLP as two grouped kernels over all local experts at
// once, bf16 storage: on warpgroup MMA (wgmma_gemm.cuh) where the device is sm_90 and the
// build has sm_90a code, else on mma.sync (grouped_gemm.cuh), sm_80 and newer.
//
//   gate_up_swiglu  reads the rows (or, without a materialized copy, the tokens through the
//                   permutation) and writes only the activation [rows, I], bf16
//   down            writes each row's output [rows, H], fp32 or bf16, in expert order
//
// The host cuts every expert's rows into row tiles (experts without rows take no block)
// and picks the tile shape by the load (tiles.cuh); the shape never changes a result. A
// launch is one grid dimension of row tiles times column blocks, the column blocks of a
// row tile consecutive (tile_work), so the blocks in flight share their A rows in L2.

#include "meshplan/core/detail/public_begin.hpp"

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/cuda/core/buffer.cuh"
#include "meshplan/cuda/core/error.cuh"
#include "meshplan/cuda/experts/detail/grouped_gemm.cuh"
#include "meshplan/cuda/experts/detail/tiles.cuh"
#include "meshplan/cuda/experts/detail/wgmma_gemm.cuh"

namespace meshplan::cuda {

class FusedExperts {
 public:
  using bf16 = __nv_bfloat16;

  /// The kernels of the current device, chosen at the first call: wgmma where it can run
  /// them, else mma.sync.
  FusedExperts() = default;
  /// The kernels named (mma_sync or wgmma, to compare them); refused where they cannot run.
  explicit FusedExperts(ExpertPath path) {
    if (path == ExpertPath::cublas)
      throw RuleViolation(Message::rule("expert_path") << "FusedExperts runs the fused kernels: mma_sync or wgmma");
    if (path == ExpertPath::wgmma && !wgmma_built())
      throw RuleViolation(Message::rule("expert_path")
                          << "the wgmma kernels need an sm_90 device and a build with sm_90a code "
                             "(CMAKE_CUDA_ARCHITECTURES 90a); this device is sm_"
                          << current_sm());
    path_ = path;
  }

  /// The kernels this object runs (asks the device when none was named).
  ExpertPath path() {
    if (path_ == ExpertPath::cublas) path_ = wgmma_built() ? ExpertPath::wgmma : ExpertPath::mma_sync;
    return path_;
  }

  /// Rows grouped by local expert (`offsets`, host, El + 1 entries): `rows` [N, H], or,
  /// with `gather`, row r is token gather[r] / top_k of `rows` (the permutation read in
  /// place). gate_up [El, 2I, H], down [El, H, I]; out [N, H] of Row (float or bf16).
  template <class Row>
  void grouped(const bf16* rows, const std::int32_t* gather, index_t top_k, std::span<const index_t> offsets,
               const bf16* gate_up, const bf16* down, index_t hidden, index_t inter, Row* out, cudaStream_t stream) {
    const BOperands gu{{gate_up, gate_up + inter * hidden}, 2 * inter * hidden};
    run(kernels::ARows{rows, gather, static_cast<int>(top_k < 1 ? 1 : top_k)}, gu,
        BOperands{{down, down}, hidden * inter}, offsets, hidden, inter, out, stream);
  }

  /// A dense MLP (the shared experts): x [rows, H]; gate, up [I, H], down [H, I]; out fp32.
  void dense(const bf16* x, index_t rows, const bf16* gate, const bf16* up, const bf16* down, index_t hidden,
             index_t inter, float* out, cudaStream_t stream) {
    const index_t offsets[2] = {0, rows};
    run(kernels::ARows{x, nullptr, 1}, BOperands{{gate, up}, 0}, BOperands{{down, down}, 0}, offsets, hidden, inter,
        out, stream);
  }

 private:
  using BOperands = kernels::BOperands;

  template <class Row>
  void run(const kernels::ARows& a, const BOperands& gate_up, const BOperands& down, std::span<const index_t> offsets,
           index_t hidden, index_t inter, Row* out, cudaStream_t stream) {
    static_assert(std::is_same_v<Row, float> || std::is_same_v<Row, bf16>, "fp32 or bf16 expert outputs");
    const index_t rows = offsets.empty() ? 0 : offsets.back();
    enforce(expert_rules::fused_sizes(rows, hidden, inter));
    enforce(expert_rules::fused_alignment("output", out, static_cast<int>(sizeof(Row))));
    if (rows == 0) return;
    const bool large = large_tiles(offsets);
    if (path() == ExpertPath::wgmma) {
      if (large)
        return launch<WgmmaKernels<WgmmaPolicies::large>>(a, gate_up, down, offsets, hidden, inter, out, stream);
      return launch<WgmmaKernels<WgmmaPolicies::small>>(a, gate_up, down, offsets, hidden, inter, out, stream);
    }
    using P = ExpertGemmPolicies;
    if (large)
      return launch<MmaSyncKernels<P::gate_up_large, P::down_large>>(a, gate_up, down, offsets, hidden, inter, out,
                                                                     stream);
    launch<MmaSyncKernels<P::gate_up_small, P::down_small>>(a, gate_up, down, offsets, hidden, inter, out, stream);
  }

  // A path's two kernels at one tile class: the row tile, the output columns one block
  // covers, and the launches (the same arguments for every path).
  template <class GU, class D>
  struct MmaSyncKernels {
    static_assert(GU::block_m == D::block_m, "both kernels take the same row tiles");
    static constexpr int block_m = GU::block_m, gate_up_columns = GU::block_n, down_columns = D::block_n;
    template <class... Args>
    static void gate_up(dim3 grid, cudaStream_t stream, Args... args) {
      constexpr int shared = kernels::gemm_block_shared_bytes<GU, 2, bf16>();
      allow_shared(kernels::gate_up_swiglu<GU>, shared);
      kernels::gate_up_swiglu<GU><<<grid, GU::threads, shared, stream>>>(args...);
    }
    template <class Row, class... Args>
    static void down(dim3 grid, cudaStream_t stream, Args... args) {
      constexpr int shared = kernels::gemm_block_shared_bytes<D, 1, Row>();
      allow_shared(kernels::down<D, Row>, shared);
      kernels::down<D, Row><<<grid, D::threads, shared, stream>>>(args...);
    }
  };
  template <class P>
  struct WgmmaKernels {
    static constexpr int block_m = P::block_m, gate_up_columns = P::b_rows / 2, down_columns = P::b_rows;
    // The stage count is the policy's budget arithmetic (tiles.cuh); the attribute asks
    // for exactly what the launch passes.
    static constexpr int shared = kernels::wgmma_shared_bytes<P>();
    template <class... Args>
    static void gate_up(dim3 grid, cudaStream_t stream, Args... args) {
      allow_shared(kernels::gate_up_swiglu_wgmma<P>, shared);
      kernels::gate_up_swiglu_wgmma<P><<<grid, P::threads, shared, stream>>>(args...);
    }
    template <class Row, class... Args>
    static void down(dim3 grid, cudaStream_t stream, Args... args) {
      allow_shared(kernels::down_wgmma<P, Row>, shared);
      kernels::down_wgmma<P, Row><<<grid, P::threads, shared, stream>>>(args...);
    }
  };

  template <class K, class Row>
  void launch(const kernels::ARows& a, const BOperands& gate_up, const BOperands& down,
              std::span<const index_t> offsets, index_t hidden, index_t inter, Row* out, cudaStream_t stream) {
    const std::vector<GemmTile> tiles = expert_tiles(offsets, K::block_m);
    const auto n_tiles = static_cast<index_t>(tiles.size());
    enforce(expert_rules::fused_grid(n_tiles, inter, K::gate_up_columns));
    enforce(expert_rules::fused_grid(n_tiles, hidden, K::down_columns));
    tiles_.upload(tiles, stream);  // pageable: staged before cudaMemcpyAsync returns
    const index_t rows = offsets.back();
    act_.resize(static_cast<std::size_t>(rows * inter));
    const auto blocks = [&](index_t columns, int per_block) {
      return dim3(static_cast<unsigned>(fused_blocks(n_tiles, columns, per_block)));
    };
    // The widest stores every output row allows (the activation is cudaMalloc'ed: 16 bytes
    // where I % 8 == 0).
    const auto store_bytes = [](const void* p, index_t columns, int element_bytes) {
      return row_store_bytes(reinterpret_cast<std::uintptr_t>(p), columns, element_bytes);
    };

    const bool gu_vectors = hidden % 8 == 0 && aligned(a.rows) && aligned(gate_up.base[0]) && aligned(gate_up.base[1]);
    K::gate_up(blocks(inter, K::gate_up_columns), stream, tiles_.data(), a, gate_up, static_cast<int>(inter),
               static_cast<int>(hidden), gu_vectors, act_.data(), store_bytes(act_.data(), inter, 2));
    MESHPLAN_CUDA_CHECK(cudaGetLastError());

    const bool d_vectors = inter % 8 == 0 && aligned(act_.data()) && aligned(down.base[0]);
    K::template down<Row>(blocks(hidden, K::down_columns), stream, tiles_.data(),
                          kernels::ARows{act_.data(), nullptr, 1}, down, static_cast<int>(hidden),
                          static_cast<int>(inter), d_vectors, out,
                          store_bytes(out, hidden, static_cast<int>(sizeof(Row))));
    MESHPLAN_CUDA_CHECK(cudaGetLastError());
  }

  /// Kernels needing more than the default 48 KiB of shared memory must say so first.
  template <class Kernel>
  static void allow_shared(Kernel* kernel, int bytes) {
    if (bytes > 48 * 1024)
      MESHPLAN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  }
  static bool aligned(const void* p) noexcept { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

  ExpertPath path_ = ExpertPath::cublas;  // not chosen yet
  DeviceBuffer<GemmTile> tiles_;
  DeviceBuffer<bf16> act_;
};

/// The expert path of the current device for bf16 (or other) storage: expert_path() with
/// the device's compute capability and whether this build can run wgmma on it.
inline ExpertPath device_expert_path(bool bf16) {
  const int sm = current_sm();
  return expert_path(sm, bf16, bf16 && sm == 90 && wgmma_built());
}

}  // namespace meshplan::cuda

#include "meshplan/core/detail/public_end.hpp"
