#pragma once
// The input embedding: rows of embed_tokens.weight [vocab, hidden] by token id.
//
//   whole            every rank looks every token up
//   vocab_parallel   a rank holds rows [begin, begin + rows): tokens outside them give
//                    zeros, and the partial rows are all-reduced (exactly one term is not
//                    zero, so the sum has the whole table's bits), or reduce-scattered
//                    onto sequence shards (vocab_parallel_reduce_scatter)
//
// The gradient adds each token's output gradient to its row, in token order; the sum
// over tokens runs through the token group (ordered_sum), so it has one rank's bits.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cstdint>
#include <optional>
#include <span>
#include <utility>

#include "meshplan/core/tensor.hpp"
#include "meshplan/nn/detail/param.hpp"
#include "meshplan/nn/detail/token_shards.hpp"

namespace meshplan::nn {

class Embedding {
 public:
  Embedding() = default;
  /// `first_row`: the global id of the piece's first row; `split`: vocab_parallel's axis.
  Embedding(Param weight, index_t first_row, std::optional<AxisStyle> split, TokenGroup tokens)
      : w_(std::move(weight)), first_(first_row), split_(std::move(split)), tokens_(std::move(tokens)) {}

  Param& weight() noexcept { return w_; }
  index_t hidden() const noexcept { return w_.value.dim(1); }

  /// ids: the tokens of the rank's batch (already checked against the vocabulary).
  template <Communicator C>
  Tensor<float> forward(C& comm, std::span<const std::int64_t> ids) const {
    const auto T = static_cast<index_t>(ids.size());
    const index_t H = hidden(), rows = w_.value.dim(0);
    Tensor<float> y({T, H});
    for (index_t t = 0; t < T; ++t) {
      const index_t r = static_cast<index_t>(ids[static_cast<std::size_t>(t)]) - first_;
      if (r >= 0 && r < rows) std::copy_n(w_.value.data() + r * H, H, y.data() + t * H);
    }
    if (!split_) return y;
    if (split_->out == Act::shard_seq) return reduce_scatter_tokens(comm, split_->group, y, "embedding");
    comm.all_reduce(y.span(), split_->group, ReduceOp::sum, "embedding");
    return y;
  }

  /// dy in the output's placement.
  template <Communicator C>
  void backward(C& comm, std::span<const std::int64_t> ids, const Tensor<float>& dy_out) {
    Tensor<float> gathered;
    const Tensor<float>* dy = &dy_out;
    if (split_ && split_->out == Act::shard_seq) {
      gathered = gather_tokens(comm, split_->group, dy_out, "embedding backward");
      dy = &gathered;
    }
    const index_t H = hidden(), rows = w_.value.dim(0);
    GradientSum s{tokens_, {&w_}, [&](bool fresh) {
                    float* g = w_.grad.data();
                    if (fresh) std::fill_n(g, w_.grad.numel(), 0.0f);
                    for (std::size_t t = 0; t < ids.size(); ++t) {
                      const index_t r = static_cast<index_t>(ids[t]) - first_;
                      if (r < 0 || r >= rows) continue;
                      const float* d = dy->data() + static_cast<index_t>(t) * H;
                      for (index_t j = 0; j < H; ++j) g[r * H + j] += d[j];
                    }
                  },
                  std::nullopt};
    finish_gradients(comm, s, "embedding grad");
  }

 private:
  Param w_;
  index_t first_ = 0;
  std::optional<AxisStyle> split_;
  TokenGroup tokens_;
};

}  // namespace meshplan::nn
