#pragma once
// A module scope's hooks on the tensor-parallel axis (attention, the MLP, lm_head), and
// what its input gradient needs there:
//
//   entry gather  (Shard(1) -> Replicate, sequence parallel) all-gathers the rank's
//                 shard; backward: the module's partial input gradient is reduce-scattered
//                 onto the shards (a whole one is split)
//   entry split   (Replicate -> Shard(1)) keeps the rank's chunk of the tokens (torch.chunk,
//                 uneven chunks allowed); backward: the chunks' gradients are all-gathered
//   exit gather   (Shard(1) -> Replicate) all-gathers the output chunks; backward: the
//                 rank's chunk of the output gradient
//   no hook       a module whose weights are split over the axis gives a partial input
//                 gradient: all-reduced

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <optional>
#include <string_view>
#include <vector>

#include "meshplan/comm/communicator.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/nn/detail/execution_plan.hpp"
#include "meshplan/nn/detail/token_shards.hpp"
#include "meshplan/placement/sharding.hpp"

namespace meshplan::nn {

class Scope {
 public:
  Scope() = default;

  /// `split`: the axis splitting the module's weights so that its input gradient is a
  /// partial sum there (nothing: whole).
  static Scope of(const ExecutionPlan& plan, std::string_view scope, std::optional<AxisStyle> split) {
    Scope s;
    s.entry_ = plan.hook(scope, true);
    s.exit_ = plan.hook(scope, false);
    s.partial_ = split ? std::optional<Group>(split->group) : std::nullopt;
    auto is = [](const std::optional<AxisStyle>& h, Act from, Act to) {
      return h && h->style.from == from && h->style.to == to;
    };
    const bool entry_ok = !s.entry_ || is(s.entry_, Act::shard_seq, Act::replicate) ||
                          is(s.entry_, Act::replicate, Act::shard_seq);
    const bool exit_ok = !s.exit_ || is(s.exit_, Act::shard_seq, Act::replicate);
    enforce(entry_ok && exit_ok ? Message{}
                                : Message::rule("executor_hook")
                                      << "'" << scope << "' has a hook the model executor does not run (it gathers or "
                                      << "splits sequence shards on entry and gathers them on exit)");
    return s;
  }

  template <Communicator C>
  Tensor<float> enter(C& comm, const Tensor<float>& x, std::string_view label) const {
    if (!entry_) return x;
    if (gathers_on_entry()) return gather_tokens(comm, entry_->group, x, label);
    return chunk_of(entry_->group, x);
  }

  template <Communicator C>
  Tensor<float> exit(C& comm, Tensor<float> y, std::string_view label) const {
    if (!exit_) return y;
    return gather_chunks(comm, exit_->group, y, label);
  }

  /// The output gradient the module sees, from the scope's.
  Tensor<float> exit_backward(const Tensor<float>& dy) const { return exit_ ? chunk_of(exit_->group, dy) : dy; }

  /// The scope's input gradient from the module's (partial where its weights are split).
  template <Communicator C>
  Tensor<float> enter_backward(C& comm, Tensor<float> dx, std::string_view label) const {
    if (entry_ && !gathers_on_entry()) {
      if (partial_) comm.all_reduce(dx.span(), *partial_, ReduceOp::sum, label);
      return gather_chunks(comm, entry_->group, dx, label);
    }
    if (entry_) {
      if (partial_ && partial_->members == entry_->group.members)
        return reduce_scatter_tokens(comm, entry_->group, dx, label);
      if (partial_) comm.all_reduce(dx.span(), *partial_, ReduceOp::sum, label);
      return split_tokens(entry_->group, dx, label);
    }
    if (partial_) comm.all_reduce(dx.span(), *partial_, ReduceOp::sum, label);
    return dx;
  }

 private:
  bool gathers_on_entry() const noexcept { return entry_ && entry_->style.from == Act::shard_seq; }

  static Tensor<float> chunk_of(const Group& g, const Tensor<float>& whole) {
    const index_t W = whole.dim(1);
    const Chunk c = chunk(whole.dim(0), g.size(), g.rank);
    Tensor<float> mine({c.size, W});
    std::copy_n(whole.data() + c.offset * W, c.size * W, mine.data());
    return mine;
  }

  template <Communicator C>
  static Tensor<float> gather_chunks(C& comm, const Group& g, const Tensor<float>& mine, std::string_view label) {
    const index_t W = mine.dim(1);
    std::vector<index_t> counts(static_cast<std::size_t>(g.size()));
    const index_t rows = mine.dim(0);
    comm.all_gather(std::span<const index_t>(&rows, 1), std::span<index_t>(counts), g, label);
    index_t total = 0;
    for (index_t& n : counts) total += (n *= W);
    Tensor<float> whole({total / (W > 0 ? W : 1), W});
    comm.all_gather_v(std::span<const float>(mine.span()), whole.span(), counts, g, label);
    return whole;
  }

  std::optional<AxisStyle> entry_, exit_;
  std::optional<Group> partial_;
};

}  // namespace meshplan::nn
