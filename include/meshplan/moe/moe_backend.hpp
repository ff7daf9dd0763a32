#pragma once
// What a backend supplies to the MoE pipeline (moe/moe_block.hpp): its tensors and weights,
// and the primitives the pipeline strings together. The pipeline (hooks, count exchange,
// dispatch, regroup, partial sums, shared experts, SP reduce-scatter) is written once; a
// backend only computes. cpu/moe_backend.hpp and cuda/moe/cuda_backend.cuh are the two.
//
//   typename B::value_type          the storage type T (float or bfloat16)
//   B::tensor<U>                    a row-major tensor of U on the backend (span(), dim(), shape())
//   typename B::Weights             a rank's weights as the backend keeps them: b.prepare(MoEWeights<T>)
//   typename B::Routed              one forward's routing: ids, weights, the (token, slot) pairs
//                                   sorted by expert (stable), per-expert counts on the host
//                                   (`counts`), `tokens`, `top_k`, and `problem` (a bad logit or
//                                   expert id: the pipeline agrees on it over all ranks)
//   typename B::Context             where a forward runs (the CPU's thread pool, the CUDA stream):
//                                   b.context(comm)
//   B::host_comm(comm)              the communicator for host-memory exchanges (counts, agreement)
//
// The primitives, all taking the Context first:
//   route(x, w, model) -> Routed                      logits, the family's router, sort, counts:
//                                                     CUDA's one device-to-host copy is here
//   rows_by_expert(x, routed) -> tensor<T>            x's rows in sorted pair order (to send)
//   slice_rows(t, offset, count) -> tensor<U>         rows [offset, +count)
//   regroup(t, blocks, inverse) -> tensor<U>          copies row blocks (moe/detail/dispatch_plan.hpp)
//   expert_mlp<Row>(rows, through, offsets, w)        the grouped SwiGLU MLP over local experts;
//                                                     rows grouped by `offsets`, or read through
//                                                     `through`'s sorted pairs; Row = T, or float
//                                                     partial sums when experts are split over tp
//   combine(y, routed, hidden) -> tensor<float>       out[t] = sum over slots, in order, of
//                                                     w[t, s] * y[sorted position of (t, s)]
//   shared_mlp(x, w) -> tensor<float>                 the dense shared experts
//   add(a, b)                                         a += b (fp32)
//   round_sum(r, s) -> tensor<T>                      round(r), or round(round(r) + round(s))
//   host_routing(routed) -> Routing                   the routing on the host
//
// A TrainableBackend (moe/moe_block.hpp) also has the backward's: the types Activations (what
// a grouped or dense MLP's forward keeps: its fp32 gate/up pre-activations [N, 2I], its
// stored activation [N, I], and the rows it read under EP) and MlpBackward (an MLP's dx and
// its gradient at the gate/up outputs), `keep` arguments on expert_mlp and shared_mlp (null:
// keep nothing), and
//   prepare_backward(w)                               what the input gradients' products read
//                                                     (the CPU packs the transposes), once per weights
//   all_finite(t) -> bool                             no NaN or infinity in t
//   place_rows(rows, offset, total) -> tensor<U>      `total` rows of zeros with `rows` placed at
//                                                     `offset` (with no rows: a zero tensor)
//   combine_backward(y, routed, dy) -> {rows, dw}     rows[sorted (t, s)] = w[t, s] dy[t];
//                                                     dw[t, s] = <y[sorted (t, s)], dy[t]>, one chain over h
//   router_backward(routed, dw, model) -> dlogits     through the top-k weights (the routing's kept logits)
//   router_input_grad(dlogits, w) -> dx               dlogits router
//   mlp_backward(dout, offsets, kept, w, shared)      da = dout down, the SwiGLU's derivative,
//                                                     dx = dgate_up gate_up, per group of rows
//   mlp_weight_grads(x, through, kept, dout, b,       adds each group's rows [first, +count) of
//     first, count, dgate_up, ddown, fresh)           dgate_up^T x and dout^T act onto the gradients
//   router_weight_grad(x, dlogits, first, count,      adds rows [first, +count) of dlogits^T x
//     d, fresh)
// With `fresh`, the weight-gradient primitives ignore what the gradients held and start
// every chain from +0 (a group with no rows writes zeros): an ordered sum's first segment.
//   unpermute_add(rows, routed, hidden) -> dx         each token's slots' rows summed in slot order
// The weight-gradient primitives continue each output's chain of fused multiply-adds over
// the rows in order from the value it holds, so the ordered sums over ranks
// (comm/detail/ordered_sum.hpp) give the single-rank bits.
//
// Every primitive keeps each output's summation order fixed (the reference's), so a row's
// results do not depend on which rank computes it or with which other rows.

#include "meshplan/core/detail/public_begin.hpp"

#include <concepts>
#include <cstdint>
#include <utility>
#include <vector>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/model/routing.hpp"
#include "meshplan/moe/moe_weights.hpp"

namespace meshplan {

template <class B>
concept MoEBackend = requires(B& b, const typename B::Routed& routed) {
  typename B::value_type;
  requires StorageType<typename B::value_type>;
  typename B::Weights;
  typename B::Context;
  typename B::template tensor<float>;
  { b.prepare(std::declval<MoEWeights<typename B::value_type>>()) } -> std::same_as<typename B::Weights>;
  { routed.counts } -> std::convertible_to<const std::vector<index_t>&>;
  { routed.problem } -> std::convertible_to<const Message&>;
  { B::host_routing(routed) } -> std::same_as<Routing>;
};

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
