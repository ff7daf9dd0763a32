#pragma once
// Optimizers over a rank's parameter pieces. An update is element-wise on a piece and its
// gradient, so every rank holding a copy of a parameter (a replica) makes the same update,
// and a mesh that only moves data trains with one rank's bits.
//
//   mp::nn::AdamW opt({.lr = 1e-3f});
//   model.step(opt);      // after backward: every piece, MoE experts included
//
// An optimizer is any type with begin_step() (once per step) and update(name, w, g) (once
// per piece; `name` is the piece's checkpoint name, under which state such as AdamW's
// moments is kept).

#include "meshplan/core/detail/public_begin.hpp"

#include <cmath>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"

namespace meshplan::nn {

template <class O>
concept Optimizer = requires(O& o, std::string_view name, std::span<float> w, std::span<const float> g) {
  o.begin_step();
  o.update(name, w, g);
};

/// w -= lr g.
struct Sgd {
  float lr = 0.1f;
  void begin_step() noexcept {}
  void update(std::string_view, std::span<float> w, std::span<const float> g) const noexcept {
    for (std::size_t i = 0; i < w.size(); ++i) w[i] -= lr * g[i];
  }
};

/// AdamW as torch.optim.AdamW computes it (decoupled weight decay, bias-corrected moments):
///   w *= 1 - lr wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
///   w -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
/// in fp32 per element, the moments kept per piece name.
struct AdamWOptions {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.01f;
};

class AdamW {
 public:
  explicit AdamW(AdamWOptions o = {}) : o_(o) {}
  const AdamWOptions& options() const noexcept { return o_; }

  void begin_step() noexcept { ++step_; }

  void update(std::string_view name, std::span<float> w, std::span<const float> g) {
    enforce(step_ > 0 ? Message{} : Message::rule("optimizer_step") << "AdamW::update before begin_step");
    Moments& s = moments_[std::string(name)];
    if (s.m.size() != w.size()) s = {std::vector<float>(w.size()), std::vector<float>(w.size())};
    const float bc1 = 1.0f - std::pow(o_.beta1, static_cast<float>(step_));
    const float bc2_sqrt = std::sqrt(1.0f - std::pow(o_.beta2, static_cast<float>(step_)));
    const float step_size = o_.lr / bc1, decay = 1.0f - o_.lr * o_.weight_decay;
    for (std::size_t i = 0; i < w.size(); ++i) {
      s.m[i] = o_.beta1 * s.m[i] + (1.0f - o_.beta1) * g[i];
      s.v[i] = o_.beta2 * s.v[i] + (1.0f - o_.beta2) * g[i] * g[i];
      const float denom = std::sqrt(s.v[i]) / bc2_sqrt + o_.eps;
      w[i] = w[i] * decay - step_size * s.m[i] / denom;
    }
  }

  index_t steps() const noexcept { return step_; }

 private:
  struct Moments {
    std::vector<float> m, v;
  };
  AdamWOptions o_;
  index_t step_ = 0;
  std::map<std::string, Moments, std::less<>> moments_;
};

}  // namespace meshplan::nn

#include "meshplan/core/detail/public_end.hpp"
