#pragma once
// Tensor-parallel linear layers and the sequence-parallel conversions, on the CPU.
//
//   colwise_linear   x [T, in] whole; w holds rows of W [out, in]: y = the matching
//                    columns of x W^T. Every output element is the full dot product, so
//                    the pieces put together equal the single-rank result bit for bit.
//   rowwise_linear   x [T, in_r] and w [out, in_r] hold matching slices of the input dim:
//                    partial sums, all-reduced (or reduce-scattered onto sequence shards);
//                    the bias is added once, after the reduction.
//   sp_gather        sequence shards [T_r, H] -> the group's whole sequence, in group order
//   sp_split         the whole sequence -> this member's shard (torch.chunk)

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

#include "meshplan/comm/communicator.hpp"
#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/cpu/detail/linear.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/mesh/group.hpp"
#include "meshplan/placement/sharding.hpp"

namespace meshplan::cpu {

namespace detail {
template <class T>
Tensor<float> local_linear(const Tensor<T>& x, const Tensor<T>& w) {
  const index_t tokens = x.dim(0), in = x.dim(1), out = w.dim(0);
  w.require_shape("the weight", {out, in});
  Tensor<float> y({tokens, out});
  linear<T, T>(x.span(), tokens, w.span(), out, in, y.span());
  return y;
}

template <class T>
Tensor<T> stored(const Tensor<float>& y, const Tensor<T>* bias) {
  Tensor<T> out(y.shape());
  const index_t cols = y.rank() == 2 ? y.dim(1) : 0;
  for (index_t i = 0; i < y.numel(); ++i) {
    float v = y[i];
    if (bias) v = to_float(from_float<T>(v)) + to_float((*bias)[i % cols]);
    out[i] = from_float<T>(v);
  }
  return out;
}
}  // namespace detail

template <class T>
Tensor<T> colwise_linear(const Tensor<T>& x, const Tensor<T>& w_rows, const std::type_identity_t<Tensor<T>>* bias_rows = nullptr) {
  return detail::stored(detail::local_linear(x, w_rows), bias_rows);
}

template <class T, class C>
Tensor<T> rowwise_linear(C& comm, const Group& group, const Tensor<T>& x_cols, const Tensor<T>& w_cols,
                         const std::type_identity_t<Tensor<T>>* bias = nullptr, bool reduce_scatter = false,
                         std::string_view label = "rowwise") {
  Tensor<float> partial = detail::local_linear(x_cols, w_cols);
  if (!reduce_scatter) {
    comm.all_reduce(partial.span(), group, ReduceOp::sum, label);
    return detail::stored(partial, bias);
  }
  const index_t tokens = partial.dim(0), out = partial.dim(1);
  if (tokens % group.size() != 0)
    throw RuleViolation(Message::rule("sequence_divisible") << "rowwise_linear: " << tokens
                                                            << " tokens do not split evenly over " << group.size()
                                                            << " ranks");
  Tensor<float> mine({tokens / group.size(), out});
  comm.reduce_scatter(std::span<const float>(partial.span()), mine.span(), group, ReduceOp::sum, label);
  return detail::stored(mine, bias);
}

template <class T, class C>
Tensor<T> sp_gather(C& comm, const Group& group, const Tensor<T>& shard, std::string_view label = "sp gather") {
  const index_t H = shard.dim(1);
  std::vector<index_t> counts(static_cast<std::size_t>(group.size()));
  const index_t mine = shard.dim(0);
  comm.all_gather(std::span<const index_t>(&mine, 1), std::span<index_t>(counts), group, label);
  index_t total = 0;
  for (index_t& c : counts) total += (c *= H);
  Tensor<T> whole({total / H, H});
  comm.all_gather_v(shard.span(), whole.span(), counts, group, label);
  return whole;
}

template <class T>
Tensor<T> sp_split(const Group& group, const Tensor<T>& whole) {
  const index_t H = whole.dim(1);
  const Chunk c = chunk(whole.dim(0), group.size(), group.rank);
  return Tensor<T>({c.size, H}, std::vector<T>(whole.data() + c.offset * H, whole.data() + (c.offset + c.size) * H));
}

}  // namespace meshplan::cpu
