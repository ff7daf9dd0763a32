#pragma once
// RMSNorm as transformers runs it in fp32: y = w * (x / sqrt(mean(x^2) + eps)), on the
// tokens the rank holds (whole on every rank, or a sequence shard under
// sequence_parallel). Its weight gradient sums over the step's token group; its collectives
// are labelled by where the norm sits: "attention norm grad" (Qwen3's q/k norms, the MLA
// latents' norms), "layer norm grad" (input_layernorm, post_attention_layernorm) or
// "final norm grad".

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <string_view>
#include <utility>
#include <vector>

#include "meshplan/core/tensor.hpp"
#include "meshplan/cpu/detail/rms_norm.hpp"
#include "meshplan/nn/detail/param.hpp"

namespace meshplan::nn {

class RmsNorm {
 public:
  struct Kept {
    Tensor<float> x;
    std::vector<float> inv_rms;
  };

  RmsNorm() = default;
  RmsNorm(Param weight, float eps, TokenGroup tokens) : w_(std::move(weight)), eps_(eps), tokens_(std::move(tokens)) {}

  Param& weight() noexcept { return w_; }
  index_t width() const noexcept { return w_.value.numel(); }

  /// x [rows, width] (or [tokens, heads * width] for a per-head norm): normalized rows.
  Tensor<float> forward(const Tensor<float>& x, Kept* keep) const {
    const index_t rows = x.numel() / width();
    Tensor<float> y(x.shape());
    std::vector<float> inv(static_cast<std::size_t>(rows));
    cpu::rms_norm_forward(x.data(), rows, width(), w_.value.data(), eps_, y.data(), inv.data());
    if (keep) *keep = {x, std::move(inv)};
    return y;
  }

  /// dx for dy; the weight's gradient finished over the token group (and `then`).
  template <Communicator C>
  Tensor<float> backward(C& comm, const Tensor<float>& dy, const Kept& k, std::optional<Group> then = std::nullopt) {
    const index_t rows = k.x.numel() / width();
    Tensor<float> dx(k.x.shape());
    cpu::rms_norm_backward(k.x.data(), dy.data(), rows, width(), w_.value.data(), k.inv_rms.data(), dx.data(), nullptr,
                           false);
    GradientSum s{tokens_, {&w_}, [&](bool fresh) {
                    cpu::rms_norm_backward(k.x.data(), dy.data(), rows, width(), w_.value.data(), k.inv_rms.data(),
                                           nullptr, w_.grad.data(), fresh);
                  },
                  std::move(then)};
    finish_gradients(comm, s, grad_label(w_.name));
    return dx;
  }

 private:
  /// The label of the weight gradient's collectives, from the weight's checkpoint name.
  static std::string_view grad_label(std::string_view name) noexcept {
    if (name.find(".self_attn.") != std::string_view::npos) return "attention norm grad";
    if (name.find("layernorm") != std::string_view::npos) return "layer norm grad";
    return "final norm grad";
  }

  Param w_;
  float eps_ = 1e-6f;
  TokenGroup tokens_;
};

}  // namespace meshplan::nn
