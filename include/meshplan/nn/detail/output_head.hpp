#pragma once
// The output embedding (lm_head) and the causal-LM loss.
//
//   whole                   logits [T, V] on every rank
//   colwise_gather_output   a rank computes the logits of its vocabulary rows, and the
//                           pieces are all-gathered into whole logits
//   loss_parallel           the logits stay split by vocabulary; the loss is computed on
//                           the pieces (a global max, a sum of exps and the label's logit
//                           reduced over the axis), never gathering [T, V]
//
// The loss is transformers' ForCausalLMLoss: the labels shifted by one within each
// sequence (the last token of a sequence has none), -100 ignored, the mean over the
// tokens with a label in the whole batch. The per-token losses of every rank are summed
// in global token order, so the loss has the same bits on every mesh where the logits do.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "meshplan/core/tensor.hpp"
#include "meshplan/cpu/detail/cross_entropy.hpp"
#include "meshplan/nn/detail/linear.hpp"
#include "meshplan/nn/detail/param.hpp"
#include "meshplan/nn/detail/scope.hpp"

namespace meshplan::nn {

class OutputHead {
 public:
  struct Kept {
    Tensor<float> x;               // the head's input after its entry hook [T, H]
    Tensor<float> logits;          // as this rank holds them: [T, V] or [T, V_local]
    std::vector<index_t> labels;   // the shifted labels of the rank's tokens
    std::vector<float> lse;        // per token
    double scale = 0;              // 1 / (tokens with a label in the batch)
  };

  OutputHead() = default;
  OutputHead(Param weight, index_t vocab_begin, index_t vocab, Scope scope, std::optional<AxisStyle> split,
             TokenGroup tokens, Group data)
      : w_(std::move(weight)), begin_(vocab_begin), vocab_(vocab), scope_(std::move(scope)), split_(std::move(split)),
        tokens_(std::move(tokens)), data_(std::move(data)) {
    piece_.set_weight(w_.value);
  }

  Param& weight() noexcept { return w_; }
  void repack() { piece_.set_weight(w_.value); }
  bool loss_parallel() const noexcept { return split_ && split_->style.kind == StyleKind::loss_parallel; }
  index_t vocab_begin() const noexcept { return begin_; }

  /// The logits of the rank's tokens (whole, or its vocabulary piece under loss_parallel).
  template <Communicator C>
  Tensor<float> logits(C& comm, const CpuContext& c, const Tensor<float>& x_in, Kept* keep) const {
    Tensor<float> x = scope_.enter(comm, x_in, "lm_head gather");
    Tensor<float> local = piece_.forward(c, x);
    if (split_ && !loss_parallel()) local = gather_vocab(comm, local);
    if (keep) {
      keep->x = std::move(x);
      keep->logits = local;
    }
    return local;
  }

  /// The mean loss over the batch's labelled tokens; `labels` are the rank's tokens'
  /// shifted labels, `labelled` the count over the whole batch.
  template <Communicator C>
  double loss(C& comm, std::span<const index_t> labels, index_t labelled, Kept& k) const {
    const index_t T = k.logits.dim(0), V = k.logits.dim(1);
    std::vector<float> per_token(static_cast<std::size_t>(T));
    k.lse.assign(static_cast<std::size_t>(T), 0.0f);
    k.labels.assign(labels.begin(), labels.end());
    if (loss_parallel())
      cpu::cross_entropy_forward_vocab_parallel(comm, split_->group, k.logits.data(), T, V, V, begin_, vocab_,
                                                k.labels, per_token.data(), k.lse.data(), "loss parallel");
    else
      cpu::cross_entropy_forward(k.logits.data(), T, V, V, k.labels, per_token.data(), k.lse.data());
    k.scale = labelled > 0 ? 1.0 / static_cast<double>(labelled) : 0.0;
    // Every data member's per-token losses, summed in global token order.
    std::vector<index_t> counts(static_cast<std::size_t>(data_.size()));
    comm.all_gather(std::span<const index_t>(&T, 1), std::span<index_t>(counts), data_, "loss counts");
    index_t total = 0;
    for (index_t n : counts) total += n;
    std::vector<float> all(static_cast<std::size_t>(total));
    comm.all_gather_v(std::span<const float>(per_token), std::span<float>(all), counts, data_, "loss");
    // fp32, as torch's mean: a sum in global token order, then the division.
    float sum = 0.0f;
    for (float l : all) sum += l;
    return labelled > 0 ? static_cast<double>(sum / static_cast<float>(labelled))
                        : std::numeric_limits<double>::quiet_NaN();
  }

  /// The gradient of the mean loss with respect to the head's input (in the placement the
  /// head read it); the weight's gradient finished over the token group.
  template <Communicator C>
  Tensor<float> backward(C& comm, const CpuContext& c, Kept& k) {
    const index_t T = k.logits.dim(0), V = k.logits.dim(1), H = k.x.dim(1);
    Tensor<float> dlogits({T, V});
    if (loss_parallel())
      cpu::cross_entropy_backward_vocab_parallel(k.logits.data(), T, V, V, begin_, vocab_, k.labels, k.lse.data(),
                                                 static_cast<float>(k.scale), dlogits.data(), V);
    else
      cpu::cross_entropy_backward(k.logits.data(), T, V, V, k.labels, k.lse.data(), static_cast<float>(k.scale),
                                  dlogits.data(), V);
    // Whole logits were gathered from pieces: the rank's piece of their gradient.
    const index_t mine = piece_.out();
    Tensor<float> dlocal = (split_ && !loss_parallel()) ? column_block(dlogits, begin_, mine) : std::move(dlogits);
    Tensor<float> dx({T, H});
    piece_.backward_input(c, dlocal.data(), T, mine, dx.data(), H);
    GradientSum s{tokens_, {&w_}, [&](bool fresh) {
                    const cpu::OuterTerm<float> term[] = {
                        piece_.weight_term(dlocal.data(), mine, k.x.data(), H, T, w_.grad.data(), fresh)};
                    outer_.run(c, term);
                  },
                  std::nullopt};
    finish_gradients(comm, s, "lm_head grad");
    return scope_.enter_backward(comm, std::move(dx), "lm_head input grad");
  }

 private:
  template <Communicator C>
  Tensor<float> gather_vocab(C& comm, const Tensor<float>& local) const {
    const Group& g = split_->group;
    const index_t T = local.dim(0), Vl = local.dim(1), n = g.size();
    std::vector<float> pieces(static_cast<std::size_t>(T * Vl * n));
    comm.all_gather(local.span(), std::span<float>(pieces), g, "lm_head gather logits");
    Tensor<float> whole({T, Vl * n});
    for (index_t m = 0; m < n; ++m)
      for (index_t t = 0; t < T; ++t)
        std::copy_n(pieces.data() + (m * T + t) * Vl, Vl, whole.data() + t * Vl * n + m * Vl);
    return whole;
  }

  Param w_;
  index_t begin_ = 0, vocab_ = 0;
  Scope scope_;
  std::optional<AxisStyle> split_;
  TokenGroup tokens_;
  Group data_;
  LinearPiece piece_;
  OuterProducts outer_;
};

}  // namespace meshplan::nn
