#pragma once
// The output of a rowwise projection (o_proj, down_proj): a partial sum over the axis its
// input dim is split on, all-reduced (rowwise) or reduce-scattered onto sequence shards
// (rowwise_reduce_scatter). In the backward the output gradient is whole on every rank:
// reduce-scattered outputs have their gradient shards all-gathered first.

#include <optional>
#include <string_view>

#include "meshplan/comm/communicator.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/nn/execution_plan.hpp"
#include "meshplan/nn/token_shards.hpp"

namespace meshplan::nn {

struct RowwiseOutput {
  std::optional<AxisStyle> split;  // nothing: the projection is whole

  template <Communicator C>
  Tensor<float> finish(C& comm, Tensor<float> y, std::string_view label) const {
    if (!split) return y;
    if (split->out == Act::shard_seq) return reduce_scatter_tokens(comm, split->group, y, label);
    comm.all_reduce(y.span(), split->group, ReduceOp::sum, label);
    return y;
  }

  template <Communicator C>
  Tensor<float> output_grad(C& comm, const Tensor<float>& dy, std::string_view label) const {
    if (split && split->out == Act::shard_seq) return gather_tokens(comm, split->group, dy, label);
    return dy;
  }
};

}  // namespace meshplan::nn
