#pragma once
// The output of a rowwise projection (o_proj, down_proj): a partial sum over the axis its
// input dim is split on, finished as the style table says: all-reduced (rowwise) or
// reduce-scattered onto sequence shards (rowwise_reduce_scatter). In the backward the output gradient is whole on every rank:
// reduce-scattered outputs have their gradient shards all-gathered first.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <optional>
#include <string_view>

#include "meshplan/comm/communicator.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/nn/detail/execution_plan.hpp"
#include "meshplan/nn/detail/token_shards.hpp"
#include "meshplan/plan/style_table.hpp"

namespace meshplan::nn {

struct RowwiseOutput {
  std::optional<AxisStyle> split;  // nothing: the projection is whole

  /// The style table's reduction for the style (rowwise: all-reduce; *_reduce_scatter).
  PartialReduce reduction() const noexcept {
    return split ? style_info(split->style.kind).reduce.how : PartialReduce::none;
  }

  template <Communicator C>
  Tensor<float> finish(C& comm, Tensor<float> y, std::string_view label) const {
    switch (reduction()) {
      case PartialReduce::none: return y;
      case PartialReduce::reduce_scatter: return reduce_scatter_tokens(comm, split->group, y, label);
      case PartialReduce::all_reduce: break;
    }
    comm.all_reduce(y.span(), split->group, ReduceOp::sum, label);
    return y;
  }

  template <Communicator C>
  Tensor<float> output_grad(C& comm, const Tensor<float>& dy, std::string_view label) const {
    if (reduction() == PartialReduce::reduce_scatter) return gather_tokens(comm, split->group, dy, label);
    return dy;
  }
};

}  // namespace meshplan::nn
