#pragma once
// A rank's piece of a linear layer, y = x w^T with w [out, in] (the piece's rows and
// columns as its style gives them), and its two backward products, all on the CPU's
// packed GEMM (cpu/detail/gemm.hpp) in its defined order: each output one fma chain from +0 over
// the reduction dim in order, so a row's result does not depend on the rank or the batch.
//
//   forward          y [T, out]  = x [T, in] w^T
//   backward_input   dx [T, in]  = dy [T, out] w      (dx += ... with `accumulate`)
//   weight_term      dw [out, in] (+)= dy^T x, one chain per element over the tokens in
//                    order: a sum split over calls (or ranks, comm/detail/ordered_sum.hpp)
//                    continues the same chain

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <utility>
#include <vector>

#include "meshplan/core/tensor.hpp"
#include "meshplan/cpu/detail/backward.hpp"
#include "meshplan/cpu/detail/gemm.hpp"
#include "meshplan/cpu/detail/packed_matrix.hpp"
#include "meshplan/cpu/thread_pool.hpp"

namespace meshplan::nn {

/// Where the CPU kernels run: the rank's threads and instruction set.
struct CpuContext {
  cpu::ThreadPool* pool = nullptr;
  cpu::Isa isa = cpu::active_isa();
};

class LinearPiece {
 public:
  LinearPiece() = default;
  explicit LinearPiece(Tensor<float> w) : w_(std::move(w)) { repack(); }

  const Tensor<float>& weight() const noexcept { return w_; }
  index_t out() const noexcept { return w_.rank() == 2 ? w_.dim(0) : 0; }
  index_t in() const noexcept { return w_.rank() == 2 ? w_.dim(1) : 0; }

  /// Replaces the weight (an optimizer step) and packs it again.
  void set_weight(Tensor<float> w) {
    w_ = std::move(w);
    repack();
  }

  Tensor<float> forward(const CpuContext& c, const Tensor<float>& x) const {
    Tensor<float> y({x.dim(0), out()});
    forward_into(c, x.data(), x.dim(0), in(), y.data(), out());
    return y;
  }

  /// y rows (leading dimension ldy) from x rows (leading dimension ldx).
  void forward_into(const CpuContext& c, const float* x, index_t tokens, index_t ldx, float* y, index_t ldy) const {
    if (tokens == 0 || out() == 0) return;
    cpu::gemm(cpu::GemmTask<float>{{x, ldx}, tokens, &forward_pack_, y, ldy}, *c.pool, c.isa);
  }

  /// dx = dy w, or dx += dy w continuing each chain from what dx holds.
  void backward_input(const CpuContext& c, const float* dy, index_t tokens, index_t ldy, float* dx, index_t ldx,
                      bool accumulate = false) const {
    if (tokens == 0 || in() == 0) return;
    cpu::gemm(cpu::GemmTask<float>{{dy, ldy}, tokens, &input_pack_, dx, ldx, accumulate}, *c.pool, c.isa);
  }

  /// The weight-gradient term over `tokens` rows: dw = dy^T x (fresh) or dw += dy^T x.
  cpu::OuterTerm<float> weight_term(const float* dy, index_t ldy, const float* x, index_t ldx, index_t tokens,
                                    float* dw, bool fresh) const {
    return {dy, ldy, {x, ldx}, tokens, out(), in(), dw, fresh};
  }

 private:
  void repack() {
    forward_pack_ = cpu::PackedMatrix<float>::pack(w_.data(), out(), in());
    // dx = dy w = dy (w^T)^T: w^T [in, out] packed, read from w's rows.
    input_pack_ = cpu::PackedMatrix<float>::pack_transposed(w_.data(), out(), in(), in());
  }

  Tensor<float> w_;
  cpu::PackedMatrix<float> forward_pack_;
  cpu::PackedMatrix<float> input_pack_;
};

/// Runs weight-gradient terms as one batch (cpu::accumulate_outer) with kept packings.
class OuterProducts {
 public:
  void run(const CpuContext& c, std::span<const cpu::OuterTerm<float>> terms) {
    cpu::accumulate_outer(terms, *c.pool, c.isa, packs_);
  }

 private:
  std::vector<cpu::PackedMatrix<float>> packs_;
};

}  // namespace meshplan::nn
