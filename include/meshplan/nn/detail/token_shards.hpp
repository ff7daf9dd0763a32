#pragma once
// Moving a rank's tokens along a sequence-parallel axis: the gather a module scope does on
// entry (Shard(1) -> Replicate), its backward (a reduce-scatter of partial input
// gradients, or a split of whole ones), and the reduce-scatter of partial outputs.
// Sequence shards are equal chunks (torch.chunk of the flattened tokens): an uneven split
// is refused with sequence_divisible, on every rank alike since every rank sees the
// same token count.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <algorithm>
#include <span>
#include <string_view>

#include "meshplan/comm/communicator.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/mesh/group.hpp"

namespace meshplan::nn {

namespace rules {
inline Message sequence_divisible(index_t tokens, index_t ranks, std::string_view where) {
  if (ranks <= 0 || tokens % ranks == 0) return {};
  return Message::rule("sequence_divisible") << where << ": " << tokens << " tokens do not split evenly over the "
                                             << ranks << " ranks of a sequence-parallel axis (use a batch whose "
                                             << "tokens per rank divide by it)";
}
}  // namespace rules

/// This member's chunk of whole [T, W] rows.
inline Tensor<float> split_tokens(const Group& g, const Tensor<float>& whole, std::string_view where) {
  const index_t T = whole.dim(0), W = whole.numel() / (T > 0 ? T : 1);
  enforce(rules::sequence_divisible(T, g.size(), where));
  const index_t n = T / g.size();
  Tensor<float> mine({n, whole.dim(1)});
  std::copy_n(whole.data() + g.rank * n * W, n * W, mine.data());
  return mine;
}

/// The group's chunks, in member order.
template <Communicator C>
Tensor<float> gather_tokens(C& comm, const Group& g, const Tensor<float>& mine, std::string_view label) {
  Tensor<float> whole({mine.dim(0) * g.size(), mine.dim(1)});
  comm.all_gather(mine.span(), whole.span(), g, label);
  return whole;
}

/// Partial sums of whole rows -> this member's chunk of their sum.
template <Communicator C>
Tensor<float> reduce_scatter_tokens(C& comm, const Group& g, const Tensor<float>& partial, std::string_view label) {
  enforce(rules::sequence_divisible(partial.dim(0), g.size(), label));
  Tensor<float> mine({partial.dim(0) / g.size(), partial.dim(1)});
  comm.reduce_scatter(partial.span(), mine.span(), g, ReduceOp::sum, label);
  return mine;
}

}  // namespace meshplan::nn
