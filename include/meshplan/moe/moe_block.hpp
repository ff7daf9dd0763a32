#pragma once
// MoEBlock<Model, Mesh, Plan, Backend>: one layer's MoE block (router, routed experts,
// shared experts) running on one rank of a mesh, with that rank's slice of the weights
// and its own tokens. The ranks together compute exactly the single-rank reference
// (reference.hpp): bit for bit where the plan only moves data (EP, SP, DP), within
// rounding where it splits a sum over ranks (expert or shared-expert tensor parallelism).
//
//   using Block = mp::MoEBlock<Model, Mesh, Plan>;          // CPU backend, float storage
//   Block block(mesh, rank, full_weights);                  // slices what the rank holds
//   auto y = block.forward(comm, x);                        // x: this rank's tokens
//   y.hidden_states                                         // the block's output rows
//   y.state                                                 // what this forward decided (routing, ...)
//
// The pipeline is written once, here, for every backend (moe/moe_backend.hpp: the CPU's in
// cpu/moe_backend.hpp, the GPU's in cuda/moe/cuda_backend.cuh), and chosen at compile time
// from the plan (block_plan.hpp):
//   entry hooks         gather sequence shards (SP) or split replicated tokens over an axis
//   route               locally, on the tokens the rank holds; sort the (token, slot) pairs
//                       by expert; count per expert (the backend's one host sync)
//   routed experts      all local, reading the tokens through the sorted pairs; or EP:
//                       exchange counts, all-to-all-v the rows, regroup by local expert,
//                       grouped MLP, inverse regroup, all-to-all-v back
//   combine             weighted sum in slot order, from the rows in sorted order
//   expert TP           each expert's intermediate dim split: partial sums all-reduced (or
//                       reduce-scattered onto sequence shards) after the combine
//   shared experts      DeepSeek-V3, whole or split like the experts
//   exit hooks          gather or split back
//
// Everything a forward decides (the routing, the rows it routed, the exchange sizes) is in
// the value it returns, never in the block: one block may run many forwards, and a backward
// takes the state of the forward it differentiates.
//
// Bad input is refused on every rank alike before any data moves: hidden states of the
// wrong shape, non-finite router logits, sequence shards of unequal sizes. The checks
// agree over all ranks, so a refusal is an exception everywhere, never a hang.

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "meshplan/comm/agree.hpp"
#include "meshplan/comm/communicator.hpp"
#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/mesh/device_mesh.hpp"
#include "meshplan/mesh/mesh_spec.hpp"
#include "meshplan/model/model_rules.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/model/routing.hpp"
#include "meshplan/moe/block_plan.hpp"
#include "meshplan/moe/dispatch_plan.hpp"
#include "meshplan/moe/moe_backend.hpp"
#include "meshplan/moe/moe_weights.hpp"
#include "meshplan/moe/rank_weights.hpp"
#include "meshplan/placement/sharding.hpp"
#include "meshplan/plan/validate.hpp"

namespace meshplan {

template <StorageType T>
class CpuBackend;  // cpu/moe_backend.hpp, included below: the default backend

namespace detail {
template <class Model>
consteval bool static_moe_model() {
  if constexpr (ModelType<Model>) return Model::spec.is_moe();
  else return true;
}
template <class Model, class Mesh, class Plan>
consteval bool static_validate() {
  if constexpr (ModelType<Model> && is_device_mesh_v<Mesh>) return validate<Model, Mesh, Plan>();
  else return true;
}
}  // namespace detail

namespace moe_rules {
/// A block takes the rows (tokens) it holds as a matrix; callers with [batch, tokens, hidden]
/// flatten the leading dims (the runner does).
inline Message hidden_states_shape(const std::vector<index_t>& shape, index_t hidden) {
  if (shape.size() == 2 && shape[1] == hidden) return {};
  Message m = Message::rule("shape_matches");
  m << "the hidden states have shape " << shape << "; the MoE block takes [tokens, " << hidden
    << "] (hidden_size " << hidden << "), one row per token";
  return m;
}

inline Message sequence_shards_equal(std::string_view axis, std::span<const index_t> counts) {
  index_t total = 0;
  for (index_t c : counts) total += c;
  const auto members = static_cast<index_t>(counts.size());
  for (std::size_t m = 1; m < counts.size(); ++m)
    if (counts[m] != counts[0])
      return Message::rule("sequence_divisible")
             << "sequence-parallel shards on mesh axis '" << axis << "' must be equal, but member 0 holds "
             << counts[0] << " tokens and member " << m << " holds " << counts[m] << "; pad the " << total
             << " tokens of the group to " << (total / members + 1) * members << ", or use a token count divisible by "
             << members;
  return {};
}

inline Message rank_matches(index_t block_rank, index_t comm_rank) {
  if (block_rank == comm_rank) return {};
  return Message::rule("rank_matches") << "the MoEBlock was built for rank " << block_rank
                                       << " but runs on communicator rank " << comm_rank;
}
}  // namespace moe_rules

/// Which rows of a forward's input the routing's rows `[routing_row, +count)` are: input
/// rows `[input_row, +count)` (an entry gather adds other ranks' rows; a split keeps a part).
struct RoutedRows {
  index_t routing_row = 0;
  index_t input_row = 0;
  index_t count = 0;

  /// After an entry gather of the group's shards: this member's rows follow the lower
  /// members' rows.
  RoutedRows after_gather(std::span<const index_t> member_rows, index_t member) const {
    RoutedRows r = *this;
    for (index_t m = 0; m < member; ++m) r.routing_row += member_rows[static_cast<std::size_t>(m)];
    return r;
  }
  /// After an entry split: the member routes rows [offset, +size) of what it held.
  RoutedRows after_split(index_t offset, index_t size) const { return {0, input_row + offset, size}; }
};

/// Where a hook sits: entry hooks decide which input rows the block routes; exit hooks only
/// move the output.
enum class HookSide : unsigned char { entry, exit };
constexpr std::string_view hook_label(HookSide side) noexcept { return side == HookSide::entry ? "mlp entry" : "mlp exit"; }

/// The model of an MoEBlock whose config is known only at run time (read from a config.json):
/// the block then takes the ModelSpec in its constructor and validates there.
struct RuntimeModel {};

namespace detail {
/// What every MoEBlock asks of its parameters, whatever its backend.
template <class Model, class Mesh, class Plan>
struct MoEBlockRequirements {
  static constexpr bool static_model = !std::is_same_v<Model, RuntimeModel>;
  static_assert(!static_model || ModelType<Model>, "meshplan: MoEBlock's Model is a model type or RuntimeModel");
  static_assert(is_device_mesh_v<Mesh>, "meshplan: MoEBlock's Mesh must be a DeviceMesh<...>");
  static_assert(!static_model || detail::static_moe_model<Model>(),
                "meshplan: MoEBlock needs a model with experts (num_experts > 0)");
  static_assert(!static_model || detail::static_validate<Model, Mesh, Plan>());
};
}  // namespace detail

/// What one forward decided, for the caller (and, in training, for the backward).
template <class Backend>
struct MoEForwardState {
  typename Backend::Routed routed;               // the routing of the rows this rank routed
  RoutedRows routed_rows;                        // which input rows those are
  std::vector<index_t> rows_per_local_expert;    // rows each local expert computed (all ranks' tokens)
  std::vector<index_t> entry_counts;             // tokens per member of an SP entry gather
  DispatchCounts dispatch;                       // the EP exchange's sizes (empty without EP)

  /// The routing on the host (for CUDA, a copy from the device).
  Routing routing() const { return Backend::host_routing(routed); }
};

template <class Backend>
struct MoEForward {
  typename Backend::template tensor<typename Backend::value_type> hidden_states;
  MoEForwardState<Backend> state;
};

template <class Model, class Mesh, PlanType Plan, class Backend = CpuBackend<float>>
class MoEBlock {
  static constexpr bool static_model = detail::MoEBlockRequirements<Model, Mesh, Plan>::static_model;

 public:
  using T = typename Backend::value_type;
  template <class U>
  using tensor = typename Backend::template tensor<U>;
  using Forward = MoEForward<Backend>;
  using State = MoEForwardState<Backend>;
  static constexpr MoEBlockPlan block_plan = moe_block_plan(Plan::entries);

  /// Slices this rank's weights from the full block weights by each parameter's layout.
  MoEBlock(const Mesh& mesh, index_t rank, const MoEWeights<T>& full, Backend backend = {})
    requires static_model
      : MoEBlock(Model::spec, mesh, rank, full, std::move(backend)) {}
  MoEBlock(const Mesh& mesh, index_t rank, const MoEWeightLoader<T>& load, Backend backend = {})
    requires static_model
      : MoEBlock(Model::spec, mesh, rank, load, std::move(backend)) {}

  /// With a config known at run time (Model = RuntimeModel).
  MoEBlock(const ModelSpec& model, const Mesh& mesh, index_t rank, const MoEWeights<T>& full, Backend backend = {})
      : MoEBlock(model, mesh, rank, slice_of(model, full), std::move(backend)) {}

  MoEBlock(const ModelSpec& model, const Mesh& mesh, index_t rank, const MoEWeightLoader<T>& load,
           Backend backend = {})
      : model_(model), mesh_(mesh), rank_(rank), backend_(std::move(backend)) {
    RankWeights<T> mine = load_rank_weights(model_, MeshSpec(mesh_), Plan::entries, rank_, load);
    local_experts_ = mine.weights.gate_up.dim(0);
    has_shared_ = mine.weights.has_shared();
    expert_begin_ = mine.first_expert;
    w_ = backend_.prepare(std::move(mine.weights));
  }

  const ModelSpec& model() const noexcept { return model_; }
  index_t rank() const noexcept { return rank_; }
  const typename Backend::Weights& local_weights() const noexcept { return w_; }
  Backend& backend() noexcept { return backend_; }
  /// The global index of this rank's first local expert.
  index_t first_local_expert() const noexcept { return expert_begin_; }
  index_t local_experts() const noexcept { return local_experts_; }

  /// x: the tokens this rank holds at the block's input, [tokens, hidden]. Returns the
  /// block's output for the tokens the rank holds at its output (the same tokens, for
  /// every built-in plan), and what the forward decided.
  template <Communicator C>
  Forward forward(C& comm, const tensor<T>& x_in) {
    auto ctx = backend_.context(comm);
    auto& host = Backend::host_comm(comm);
    const Group world = host.world_group();
    agree(host,
          first_of({moe_rules::rank_matches(rank_, comm.rank()),
                    moe_rules::hidden_states_shape(x_in.shape(), model_.hidden_size)}),
          world);

    State state;
    state.routed_rows = {0, 0, x_in.dim(0)};
    const tensor<T>* x = &x_in;
    tensor<T> hooked;
    for (const MoEHook& h : std::span(block_plan.entry).first(block_plan.entry_count)) {
      hooked = apply_hook(comm, ctx, h, *x, HookSide::entry, state);
      x = &hooked;
    }
    const index_t tokens = x->dim(0);

    // Route, sort and count; a bad logit is refused on every rank before any row moves.
    state.routed = backend_.route(ctx, *x, w_, model_);
    agree(host, state.routed.problem, world);

    // Routed experts: one output row per (token, slot) in sorted order, fp32 when the
    // intermediate dim is split (partial sums), else stored in T as the reference stores it.
    constexpr bool routed_partial = !block_plan.expert_tp_axis.empty();
    using Row = std::conditional_t<routed_partial, float, T>;
    tensor<Row> y;
    // An expert-parallel group of one member holds every expert: its exchange would move
    // each row to itself, so it takes the local path (the same rows, the same bits).
    if (block_plan.expert_parallel() && group(block_plan.ep_axis).size() > 1) {
      y = dispatch_and_compute<Row>(comm, ctx, *x, state);
    } else {
      const std::vector<index_t> offsets = exclusive_offsets(state.routed.counts);
      state.rows_per_local_expert = state.routed.counts;
      y = backend_.template expert_mlp<Row>(ctx, *x, &state.routed, offsets, w_);
    }
    tensor<float> routed = backend_.combine(ctx, y, state.routed, model_.hidden_size);

    tensor<float> shared;
    if (has_shared_) shared = backend_.shared_mlp(ctx, *x, w_);
    tensor<T> out = finish(comm, ctx, std::move(routed), std::move(shared), tokens);
    for (const MoEHook& h : std::span(block_plan.exit).first(block_plan.exit_count))
      out = apply_hook(comm, ctx, h, out, HookSide::exit, state);
    return {std::move(out), std::move(state)};
  }

 private:
  using Context = typename Backend::Context;

  Group group(std::string_view axis) const { return mesh_.group(rank_, {axis}); }

  static std::vector<index_t> exclusive_offsets(std::span<const index_t> counts) {
    std::vector<index_t> offsets(counts.size() + 1, 0);
    for (std::size_t e = 0; e < counts.size(); ++e) offsets[e + 1] = offsets[e] + counts[e];
    return offsets;
  }

  /// A prepare-input or -output hook on the token dim.
  template <Communicator C>
  tensor<T> apply_hook(C& comm, Context& ctx, const MoEHook& h, const tensor<T>& x, HookSide side, State& state) {
    const index_t H = model_.hidden_size;
    const std::string_view label = hook_label(side);
    auto& host = Backend::host_comm(comm);
    if (h.from == Act::shard_seq && h.to == Act::replicate) {
      const Group g = group(h.axis);
      std::vector<index_t> counts(static_cast<std::size_t>(g.size()));
      const index_t mine = x.dim(0);
      host.all_gather(std::span<const index_t>(&mine, 1), std::span<index_t>(counts), g, label);
      if (side == HookSide::entry) {
        state.entry_counts = counts;  // tokens per member, for the reduce-scatter back
        state.routed_rows = state.routed_rows.after_gather(counts, g.rank);
        // The reduce-scatter back needs equal shards: refuse before any row moves.
        if constexpr (block_plan.reduce_scatters())
          agree(host, moe_rules::sequence_shards_equal(h.axis, counts), host.world_group());
      }
      index_t total = 0;
      for (index_t& c : counts) total += (c *= H);
      tensor<T> gathered({total / H, H});
      comm.all_gather_v(x.span(), gathered.span(), counts, g, label);
      return gathered;
    }
    if (h.from == Act::replicate && h.to == Act::shard_seq) {
      const Group g = group(h.axis);
      const Chunk c = chunk(x.dim(0), g.size(), g.rank);
      if (side == HookSide::entry) state.routed_rows = state.routed_rows.after_split(c.offset, c.size);
      return backend_.slice_rows(ctx, x, c.offset, c.size);
    }
    return backend_.slice_rows(ctx, x, 0, x.dim(0));
  }

  /// Expert parallelism: the rows travel to the ranks holding their experts and back; the
  /// result is in sorted pair order, as the local path leaves it.
  template <class Row, Communicator C>
  tensor<Row> dispatch_and_compute(C& comm, Context& ctx, const tensor<T>& x, State& state) {
    const index_t H = model_.hidden_size, E = model_.num_experts;
    const Group ep = group(block_plan.ep_axis);
    const index_t P = ep.size(), El = E / P;

    // Rows per (source member, local expert): what each member sends to each.
    std::vector<index_t> from(static_cast<std::size_t>(E));
    Backend::host_comm(comm).all_to_all(std::span<const index_t>(state.routed.counts), std::span<index_t>(from), ep,
                                        "counts");
    state.dispatch = dispatch_counts(state.routed.counts, from, P);
    const DispatchCounts& counts = state.dispatch;
    const std::vector<index_t> send_counts = DispatchCounts::elements(counts.send_rows, H);
    const std::vector<index_t> recv_counts = DispatchCounts::elements(counts.recv_rows, H);

    const tensor<T> send = backend_.rows_by_expert(ctx, x, state.routed);
    tensor<T> recv({counts.received(), H});
    comm.all_to_all_v(std::span<const T>(send.span()), send_counts, recv.span(), recv_counts, ep, "dispatch");

    // Regroup by local expert, run them, and put the results back in arrival order.
    const std::vector<RowBlock> blocks = regroup_blocks(from, P, El);
    const tensor<T> grouped = backend_.regroup(ctx, recv, blocks, false);
    state.rows_per_local_expert = counts.rows_per_local_expert;
    const tensor<Row> y_grouped =
        backend_.template expert_mlp<Row>(ctx, grouped, nullptr, counts.local_offsets, w_);
    const tensor<Row> y_arrival = backend_.regroup(ctx, y_grouped, blocks, true);

    tensor<Row> y({send.dim(0), H});
    comm.all_to_all_v(std::span<const Row>(y_arrival.span()), recv_counts, y.span(), send_counts, ep, "combine");
    return y;
  }

  /// Reduces partial sums and adds the shared experts, with the reference's roundings.
  template <Communicator C>
  tensor<T> finish(C& comm, Context& ctx, tensor<float> routed, tensor<float> shared, index_t tokens) {
    constexpr auto& bp = block_plan;
    // Both partial over the same axis the same way: one reduction of their sum.
    if (has_shared_ && !bp.expert_tp_axis.empty() && bp.expert_tp_axis == bp.shared_tp_axis &&
        bp.expert_reduce == bp.shared_reduce) {
      backend_.add(ctx, routed, shared);
      const tensor<float> r = reduce(comm, std::move(routed), tokens, bp.expert_tp_axis, bp.expert_reduce, "expert tp");
      return backend_.round_sum(ctx, r, nullptr);
    }
    tensor<float> r = reduce(comm, std::move(routed), tokens, bp.expert_tp_axis, bp.expert_reduce, "expert tp");
    if (!has_shared_) return backend_.round_sum(ctx, r, nullptr);
    tensor<float> s = reduce(comm, std::move(shared), tokens, bp.shared_tp_axis, bp.shared_reduce, "shared tp");
    // One of the two may have been scattered onto a sequence shard: take the same rows of the other.
    if (s.dim(0) != r.dim(0)) {
      const bool routed_scattered = r.dim(0) < s.dim(0);
      const Group g = group(routed_scattered ? bp.expert_tp_axis : bp.shared_tp_axis);
      const index_t per = tokens / g.size();
      tensor<float>& whole = routed_scattered ? s : r;
      whole = backend_.slice_rows(ctx, whole, g.rank * per, per);
    }
    return backend_.round_sum(ctx, r, &s);
  }

  template <Communicator C>
  tensor<float> reduce(C& comm, tensor<float> partial, index_t tokens, std::string_view axis, PartialReduce how,
                       std::string_view label) {
    if (how == PartialReduce::none || axis.empty()) return partial;
    const Group g = group(axis);
    if (how == PartialReduce::all_reduce) {
      comm.all_reduce(partial.span(), g, ReduceOp::sum, label);
      return partial;
    }
    // Onto sequence shards: the tokens came gathered from equal shards (checked at entry).
    enforce(plan_rules::sequence_divisible(axis, tokens, g.size()));
    tensor<float> mine({tokens / g.size(), model_.hidden_size});
    comm.reduce_scatter(std::span<const float>(partial.span()), mine.span(), g, ReduceOp::sum, label);
    return mine;
  }

  ModelSpec model_;
  Mesh mesh_;
  index_t rank_;
  Backend backend_;
  typename Backend::Weights w_;
  index_t local_experts_ = 0;
  bool has_shared_ = false;
  index_t expert_begin_ = 0;
};

}  // namespace meshplan

#include "meshplan/cpu/moe_backend.hpp"
