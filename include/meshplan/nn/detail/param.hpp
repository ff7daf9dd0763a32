#pragma once
// A parameter as a rank holds it: its checkpoint name, its piece, its gradient, and how
// the gradient's sum over tokens is finished across ranks.
//
// A weight gradient is a sum over the tokens the module saw. Where ranks hold different
// tokens (the step's token group: data-parallel ranks, and sequence shards), the sum runs
// as one chain through them in global token order (comm/detail/ordered_sum.hpp): the result has
// one rank's bits on every mesh. Where a style splits the sum another way (the per-head
// norm weights on head-sharded activations: replicated_with_grad_allreduce) the pieces are
// all-reduced after.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "meshplan/comm/communicator.hpp"
#include "meshplan/comm/detail/ordered_sum.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/mesh/group.hpp"
#include "meshplan/placement/layout_spec.hpp"
#include "meshplan/nn/detail/execution_plan.hpp"

namespace meshplan::nn {

struct Param {
  std::string name;     // the checkpoint's name, e.g. "model.layers.0.self_attn.q_proj.weight"
  Tensor<float> value;  // this rank's piece
  Tensor<float> grad;   // its gradient (same shape), written by a backward
  std::shared_ptr<const LayoutSpec> layout;  // where the piece sits in the whole tensor
};

/// The gradients of a module whose terms share one token group.
struct GradientSum {
  TokenGroup tokens;
  std::vector<Param*> params;
  /// Adds this rank's terms to every param's grad (fresh: start the chains from +0).
  std::function<void(bool fresh)> add;
  /// After the ordered sum, all-reduce over this group (nothing: done).
  std::optional<Group> then_all_reduce;
};

/// Runs the ordered sum of a module's gradients.
template <Communicator C>
void finish_gradients(C& comm, const GradientSum& s, std::string_view label) {
  std::vector<std::span<float>> parts;
  for (Param* p : s.params) {
    if (p->grad.shape() != p->value.shape()) p->grad = Tensor<float>(p->value.shape());
    parts.push_back(p->grad.span());
  }
  ordered_sum(comm, s.tokens.group, s.tokens.owners, std::span<const std::span<float>>(parts),
              [&](std::size_t, bool fresh) { s.add(fresh); }, label);
  if (s.then_all_reduce)
    for (Param* p : s.params) comm.all_reduce(p->grad.span(), *s.then_all_reduce, ReduceOp::sum, label);
}

}  // namespace meshplan::nn
