#pragma once
// The dense SwiGLU MLP: down(silu(gate(x)) * up(x)) (Qwen3's MLPs, DeepSeek-V3's first
// layers). gate and up run as one product over their rows stacked (gate first), as the
// experts' fused gate_up does, with the same SiLU (cpu/detail/fast_math.hpp).
//
//   colwise gate/up, rowwise down   each rank holds a slice of the intermediate dim; the
//                                   down projection's partial sums are all-reduced, or
//                                   reduce-scattered onto sequence shards
//   whole                           every rank computes the whole MLP on its tokens

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "meshplan/core/tensor.hpp"
#include "meshplan/cpu/detail/fast_math.hpp"
#include "meshplan/nn/detail/linear.hpp"
#include "meshplan/nn/detail/param.hpp"
#include "meshplan/nn/detail/rowwise_output.hpp"
#include "meshplan/nn/detail/scope.hpp"

namespace meshplan::nn {

class DenseMlp {
 public:
  struct Kept {
    Tensor<float> x;        // the scope's input after its entry hook [T, H]
    Tensor<float> gate_up;  // [T, 2 I]
    Tensor<float> act;      // [T, I]
  };

  DenseMlp() = default;
  /// `down_split`: the style of down_proj's axis (rowwise, rowwise_reduce_scatter) if any.
  DenseMlp(Param gate, Param up, Param down, Scope scope, std::optional<AxisStyle> down_split,
           TokenGroup tokens)
      : gate_(std::move(gate)), up_(std::move(up)), down_(std::move(down)), scope_(std::move(scope)),
        down_out_{std::move(down_split)}, tokens_(std::move(tokens)) {
    repack();
  }

  std::vector<Param*> params() { return {&gate_, &up_, &down_}; }
  void repack() {
    const index_t I = gate_.value.dim(0), H = gate_.value.dim(1);
    Tensor<float> stacked({2 * I, H});
    std::copy_n(gate_.value.data(), I * H, stacked.data());
    std::copy_n(up_.value.data(), I * H, stacked.data() + I * H);
    gate_up_.set_weight(std::move(stacked));
    down_piece_.set_weight(down_.value);
  }

  template <Communicator C>
  Tensor<float> forward(C& comm, const CpuContext& c, const Tensor<float>& x_in, Kept* keep) const {
    Tensor<float> x = scope_.enter(comm, x_in, "dense mlp gather");
    const index_t T = x.dim(0), I = inter();
    Tensor<float> gu = gate_up_.forward(c, x);
    Tensor<float> act({T, I});
    cpu::silu_mul(gu.data(), T, I, 2 * I, act.data(), I, c.isa);
    Tensor<float> y = down_piece_.forward(c, act);
    if (keep) *keep = {std::move(x), std::move(gu), std::move(act)};
    return scope_.exit(comm, down_out_.finish(comm, std::move(y), "dense mlp down"), "dense mlp exit");
  }

  template <Communicator C>
  Tensor<float> backward(C& comm, const CpuContext& c, const Tensor<float>& dy_scope, const Kept& k) {
    const Tensor<float> dy_out = scope_.exit_backward(dy_scope);
    const Tensor<float> dy = down_out_.output_grad(comm, dy_out, "dense mlp backward gather");
    const index_t T = k.x.dim(0), I = inter(), H = k.x.dim(1);
    Tensor<float> da({T, I});
    down_piece_.backward_input(c, dy.data(), T, H, da.data(), I);
    Tensor<float> dgu({T, 2 * I});
    cpu::swiglu_grad(k.gate_up.data(), da.data(), T, I, dgu.data(), c.isa);
    Tensor<float> dx({T, H});
    gate_up_.backward_input(c, dgu.data(), T, 2 * I, dx.data(), H);

    GradientSum s{tokens_, {&gate_, &up_, &down_}, [&](bool fresh) {
                    const cpu::OuterTerm<float> terms[] = {
                        {dgu.data(), 2 * I, {k.x.data(), H}, T, I, H, gate_.grad.data(), fresh},
                        {dgu.data() + I, 2 * I, {k.x.data(), H}, T, I, H, up_.grad.data(), fresh},
                        down_piece_.weight_term(dy.data(), H, k.act.data(), I, T, down_.grad.data(), fresh)};
                    outer_.run(c, terms);
                  },
                  std::nullopt};
    finish_gradients(comm, s, "dense mlp grad");
    return scope_.enter_backward(comm, std::move(dx), "dense mlp input grad");
  }

 private:
  index_t inter() const noexcept { return gate_.value.dim(0); }

  Param gate_, up_, down_;
  Scope scope_;
  RowwiseOutput down_out_;
  TokenGroup tokens_;
  LinearPiece gate_up_, down_piece_;
  OuterProducts outer_;
};

}  // namespace meshplan::nn
