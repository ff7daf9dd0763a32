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

#include "meshplan/core/detail/public_begin.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "meshplan/comm/agree.hpp"
#include "meshplan/comm/communicator.hpp"
#include "meshplan/comm/detail/ordered_sum.hpp"
#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/core/detail/type_name.hpp"
#include "meshplan/mesh/device_mesh.hpp"
#include "meshplan/mesh/detail/mesh_rules.hpp"
#include "meshplan/mesh/mesh_spec.hpp"
#include "meshplan/model/detail/model_rules.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/model/routing.hpp"
#include "meshplan/moe/detail/block_plan.hpp"
#include "meshplan/moe/detail/dispatch_plan.hpp"
#include "meshplan/moe/moe_backend.hpp"
#include "meshplan/moe/moe_weights.hpp"
#include "meshplan/moe/detail/rank_weights.hpp"
#include "meshplan/moe/moe_gradients.hpp"
#include "meshplan/placement/sharding.hpp"
#include "meshplan/plan/detail/gradient_reduction.hpp"
#include "meshplan/plan/validate.hpp"

namespace meshplan {

template <StorageType T>
class CpuBackend;  // cpu/moe_backend.hpp, included below: the default backend

namespace detail {
template <class Model>
consteval Message static_moe_model() {
  if constexpr (ModelType<Model>) return model_rules::has_experts(Model::spec, "MoEBlock");
  else return {};
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

/// A backward takes the state its own block's latest forward (on the current weights) returned,
/// once, from a forward that ran with training on.
inline Message state_matches(bool trained, std::uint64_t state_block, std::uint64_t block, std::uint64_t state_weights,
                             std::uint64_t weights, bool spent) {
  Message m = Message::rule("backward_state");
  if (!trained)
    return m << "this forward state has nothing for a backward: run the forward with training on "
                "(block.set_training(Training::keep_activations) or Training::recompute) first";
  if (state_block != block) return m << "this forward state comes from another MoE block";
  if (spent) return m << "the backward of this forward state has already run (a state is used once)";
  if (state_weights != weights)
    return m << "the block's weights changed after this forward: run the forward again on the new weights";
  return {};
}

inline Message gradient_finite(bool finite) {
  if (finite) return {};
  return Message::rule("finite_values") << "the output gradient holds a NaN or an infinity";
}

inline Message rank_matches(index_t block_rank, index_t comm_rank) {
  if (block_rank == comm_rank) return {};
  return Message::rule("rank_matches") << "the MoEBlock was built for rank " << block_rank
                                       << " but runs on communicator rank " << comm_rank;
}
}  // namespace moe_rules

/// The rows held by the members of a hook's group before `member` (its first row's offset
/// in the gathered rows).
inline index_t rows_before(std::span<const index_t> member_rows, index_t member) {
  index_t offset = 0;
  for (index_t m = 0; m < member; ++m) offset += member_rows[static_cast<std::size_t>(m)];
  return offset;
}

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
    r.routing_row += rows_before(member_rows, member);
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
  static constexpr Message problem = first_of(
      {model_rules::is_model_type(!static_model || ModelType<Model>, "MoEBlock", type_name<Model>()),
       mesh_rules::mesh_is_device_mesh(is_device_mesh_v<Mesh>, "MoEBlock", type_name<Mesh>()),
       detail::static_moe_model<Model>()});
  static_assert(rule_check<problem>::passed);
  static_assert(!static_model || !problem.ok() || detail::static_validate<Model, Mesh, Plan>());
  static constexpr bool checked = true;
};
}  // namespace detail

/// What a forward keeps for a backward: nothing (inference); the experts' activations; or
/// only their inputs, the backward computing the gate/up products again.
enum class Training : unsigned char { off, keep_activations, recompute };

namespace detail {
template <class Backend>
struct activations_of {
  struct type {};
};
template <class Backend>
  requires requires { typename Backend::Activations; }
struct activations_of<Backend> {
  using type = typename Backend::Activations;
};
template <class Backend>
struct mlp_backward_of {
  struct type {};
};
template <class Backend>
  requires requires { typename Backend::MlpBackward; }
struct mlp_backward_of<Backend> {
  using type = typename Backend::MlpBackward;
};
}  // namespace detail

/// A backend whose primitives include the backward's (CpuBackend and cuda::CudaBackend).
template <class B>
concept TrainableBackend = requires { typename B::Activations; typename B::MlpBackward; };

/// What one forward decided, for the caller (and, in training, for the backward).
template <class Backend>
struct MoEForwardState {
  using Activations = typename detail::activations_of<Backend>::type;
  template <class U>
  using tensor = typename Backend::template tensor<U>;

  typename Backend::Routed routed;               // the routing of the rows this rank routed
  RoutedRows routed_rows;                        // which input rows those are
  std::vector<index_t> rows_per_local_expert;    // rows each local expert computed (all ranks' tokens)
  std::vector<std::vector<index_t>> entry_rows, exit_rows;  // rows per member at each hook (for the backward)
  DispatchCounts dispatch;                       // the EP exchange's sizes (empty without EP)
  std::vector<index_t> dispatch_from;            // rows each EP member sent to each local expert

  // Kept for the backward when the forward ran with training on.
  Training training = Training::off;
  tensor<typename Backend::value_type> x;        // the rows routed (after the entry hooks)
  tensor<typename Backend::value_type> y;        // the routed rows' expert outputs, sorted (stored in T)
  tensor<float> y_partial;                       // ... or their partial sums (experts split over tp)
  Activations experts, shared;                   // the MLPs' pre-activations and activations
  index_t output_rows = 0;
  std::uint64_t block = 0, weights = 0;
  bool spent = false;

  /// The routing on the host (for CUDA, a copy from the device).
  Routing routing() const { return Backend::host_routing(routed); }
  /// Bytes kept for the backward on this rank (the routing's own tables not counted).
  std::size_t bytes_kept() const {
    std::size_t b = static_cast<std::size_t>(x.numel()) * sizeof(typename Backend::value_type) +
                    static_cast<std::size_t>(y.numel()) * sizeof(typename Backend::value_type) +
                    static_cast<std::size_t>(y_partial.numel()) * sizeof(float);
    if constexpr (requires { experts.act; }) {
      for (const Activations* a : {&experts, &shared})
        b += static_cast<std::size_t>(a->rows.numel()) * sizeof(typename Backend::value_type) +
             a->gate_up.size() * sizeof(float) + a->act.size() * sizeof(typename Backend::value_type);
    }
    return b;
  }
};

template <class Backend>
struct MoEForward {
  typename Backend::template tensor<typename Backend::value_type> hidden_states;
  MoEForwardState<Backend> state;
};

template <class Model, class Mesh, PlanType Plan, class Backend = CpuBackend<float>>
class MoEBlock {
  // Checked where the class is instantiated (a use of its type), not first in a member.
  static_assert(detail::MoEBlockRequirements<Model, Mesh, Plan>::checked);
  static constexpr bool static_model = detail::MoEBlockRequirements<Model, Mesh, Plan>::static_model;

 public:
  using T = typename Backend::value_type;
  template <class U>
  using tensor = typename Backend::template tensor<U>;
  using Forward = MoEForward<Backend>;
  using State = MoEForwardState<Backend>;
  /// What backward returns: fp32 tensors of the backend (MoEGradients on the CPU).
  using Gradients = BasicMoEGradients<tensor<float>>;
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
    inter_ = mine.weights.gate_up.dim(1) / 2;
    has_shared_ = mine.weights.has_shared();
    shared_inter_ = has_shared_ ? mine.weights.shared_gate.dim(0) : 0;
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

  /// What the following forwards keep for a backward (default: nothing, for inference).
  void set_training(Training t) noexcept { training_ = t; }
  Training training() const noexcept { return training_; }

  /// The rank's weights as given (MoEWeights<T>, local pieces): replaces them, e.g. after
  /// an optimizer step. States of earlier forwards can no longer be differentiated.
  void set_local_weights(MoEWeights<T> w) {
    w_ = backend_.prepare(std::move(w));
    ++weights_version_;
  }
  /// Plain SGD on the rank's pieces with the gradients its backward returned.
  void sgd_step(const MoEGradients& g, float lr)
    requires requires(const typename Backend::Weights& p) { p.w; }
  {
    MoEWeights<T> w = w_.w;
    sgd_update(w, g, lr);
    set_local_weights(std::move(w));
  }

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
    const bool keep = training_ != Training::off;
    state.training = training_;
    state.block = id_;
    state.weights = weights_version_;
    const tensor<T>* x = &x_in;
    tensor<T> hooked;
    for (std::size_t i = 0; i < block_plan.entry_count; ++i) {
      hooked = apply_hook(comm, ctx, block_plan.entry[i], *x, HookSide::entry, state);
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
    if (exchanges_rows()) {
      y = dispatch_and_compute<Row>(comm, ctx, *x, state);
    } else {
      const std::vector<index_t> offsets = exclusive_offsets(state.routed.counts);
      state.rows_per_local_expert = state.routed.counts;
      y = run_experts<Row>(ctx, *x, &state.routed, offsets, keep_activations(state.experts));
    }
    tensor<float> routed = backend_.combine(ctx, y, state.routed, model_.hidden_size);

    tensor<float> shared;
    if (has_shared_) {
      if constexpr (TrainableBackend<Backend>)
        shared = backend_.shared_mlp(ctx, *x, w_, keep_activations(state.shared));
      else
        shared = backend_.shared_mlp(ctx, *x, w_);
    }
    tensor<T> out = finish(comm, ctx, std::move(routed), std::move(shared), tokens);
    if (keep) {
      state.x = backend_.slice_rows(ctx, *x, 0, tokens);
      if constexpr (routed_partial) state.y_partial = std::move(y);
      else state.y = std::move(y);
    }
    for (std::size_t i = 0; i < block_plan.exit_count; ++i)
      out = apply_hook(comm, ctx, block_plan.exit[i], out, HookSide::exit, state);
    state.output_rows = out.dim(0);
    return {std::move(out), std::move(state)};
  }

  /// The backward of the forward that returned `state`, for the output gradient dy (the
  /// rows this rank holds at the block's output, [rows, hidden], fp32): the input gradient
  /// of the rows the rank held at the forward's input, and the gradients of the rank's own
  /// parameter pieces, already summed over every rank that holds the same piece (the axes
  /// plan/detail/gradient_reduction.hpp reads from the plan), in token order: the bits are those
  /// of a single rank wherever the plan only moves data. `state` is used up.
  template <Communicator C>
  Gradients backward(C& comm, State& state, const tensor<float>& dy)
    requires TrainableBackend<Backend>
  {
    Gradients grads;
    backward(comm, state, dy, grads);
    return grads;
  }

  /// The same into `grads`, whose parameter tensors are reused where their shapes match:
  /// a training loop that passes the same gradients every step keeps their memory (fresh
  /// pages cost more than the zeros written into them).
  template <Communicator C>
  void backward(C& comm, State& state, const tensor<float>& dy, Gradients& grads)
    requires TrainableBackend<Backend>
  {
    auto ctx = backend_.context(comm);
    auto& host = Backend::host_comm(comm);
    const Group world = host.world_group();
    const index_t H = model_.hidden_size;
    const std::vector<index_t> dy_shape{state.output_rows, H};
    agree(host,
          first_of({moe_rules::rank_matches(rank_, comm.rank()),
                    moe_rules::state_matches(state.training != Training::off, state.block, id_, state.weights,
                                             weights_version_, state.spent),
                    moe_rules::grad_output_shape(dy.shape(), dy_shape)}),
          world);
    agree(host, moe_rules::gradient_finite(backend_.all_finite(ctx, dy)), world);
    state.spent = true;
    backend_.prepare_backward(ctx, w_);
    if (!chains_) chains_ = plan_gradient_chains();
    if (state.training == Training::recompute) recompute(ctx, state);

    // The exit hooks, last first, then the finish: the output gradient of the routed and of
    // the shared experts, over the rows they computed.
    tensor<float> g = backend_.slice_rows(ctx, dy, 0, dy.dim(0));
    for (std::size_t i = block_plan.exit_count; i-- > 0;)
      g = unhook(comm, ctx, block_plan.exit[i], std::move(g), state.exit_rows[i]);
    const index_t tokens = state.x.dim(0);
    auto [dy_routed, dy_shared] = unfinish(comm, ctx, std::move(g), tokens);

    // Combine, router and experts.
    constexpr bool routed_partial = !block_plan.expert_tp_axis.empty();
    auto [drows, dweights] = routed_partial ? backend_.combine_backward(ctx, state.y_partial, state.routed, dy_routed)
                                            : backend_.combine_backward(ctx, state.y, state.routed, dy_routed);
    // Split experts give partial outputs, hence partial <y, dy>: the routing weights'
    // gradients are summed over the split first.
    if constexpr (routed_partial)
      comm.all_reduce(dweights.span(), group(block_plan.expert_tp_axis), ReduceOp::sum, "expert tp (routing weights)");
    const tensor<float> dlogits = backend_.router_backward(ctx, state.routed, dweights, model_);

    ExpertBackward eb = expert_backward(comm, ctx, state, std::move(drows));
    tensor<float> dx_routed = backend_.unpermute_add(ctx, eb.dx_sorted, state.routed, H);
    std::optional<MlpBackward> shared_b;
    if (has_shared_) {
      const index_t offsets[2] = {0, tokens};
      shared_b = backend_.mlp_backward(ctx, dy_shared, offsets, state.shared, w_, true);
    }
    tensor<float> dx_router = backend_.router_input_grad(ctx, dlogits, w_);

    grads.hidden_states = input_gradient(comm, ctx, state, std::move(dx_routed),
                                         shared_b ? std::move(shared_b->dx) : tensor<float>{}, std::move(dx_router));
    weight_gradients(comm, ctx, state, dlogits, eb, dy_shared, shared_b ? &*shared_b : nullptr, grads);
  }

 private:
  using Context = typename Backend::Context;

  Group group(std::string_view axis) const { return mesh_.group(rank_, {axis}); }

  /// Whether the routed rows travel to the experts' ranks. An expert-parallel group of one
  /// member holds every expert: its exchange would move each row to itself, so it takes the
  /// local path (the same rows, the same bits).
  bool exchanges_rows() const { return block_plan.expert_parallel() && group(block_plan.ep_axis).size() > 1; }

  static std::vector<index_t> exclusive_offsets(std::span<const index_t> counts) {
    std::vector<index_t> offsets(counts.size() + 1, 0);
    for (std::size_t e = 0; e < counts.size(); ++e) offsets[e + 1] = offsets[e] + counts[e];
    return offsets;
  }

  /// A prepare-input or -output hook on the token dim.
  /// Records, per hook, the rows each member of its group holds on the split side.
  template <Communicator C>
  tensor<T> apply_hook(C& comm, Context& ctx, const MoEHook& h, const tensor<T>& x, HookSide side, State& state) {
    const index_t H = model_.hidden_size;
    const std::string_view label = hook_label(side);
    auto& host = Backend::host_comm(comm);
    std::vector<index_t>& member_rows = (side == HookSide::entry ? state.entry_rows : state.exit_rows).emplace_back();
    if (h.from == Act::shard_seq && h.to == Act::replicate) {
      const Group g = group(h.axis);
      std::vector<index_t> counts(static_cast<std::size_t>(g.size()));
      const index_t mine = x.dim(0);
      host.all_gather(std::span<const index_t>(&mine, 1), std::span<index_t>(counts), g, label);
      member_rows = counts;
      if (side == HookSide::entry) {
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
      for (index_t m = 0; m < g.size(); ++m) member_rows.push_back(chunk(x.dim(0), g.size(), m).size);
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
    const std::vector<RowBlock> blocks = regroup_blocks(from, P, El);  // `from` is kept below
    tensor<T> grouped = backend_.regroup(ctx, recv, blocks, false);
    state.rows_per_local_expert = counts.rows_per_local_expert;
    state.dispatch_from = std::move(from);
    const tensor<Row> y_grouped = run_experts<Row>(ctx, grouped, nullptr, counts.local_offsets, keep_activations(state.experts));
    if constexpr (TrainableBackend<Backend>)
      if (state.training != Training::off) state.experts.rows = std::move(grouped);
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

  // ---- Forward helpers that keep what a backward needs ------------------------------------

  using Activations = typename State::Activations;
  using MlpBackward = typename detail::mlp_backward_of<Backend>::type;
  Activations* keep_activations(Activations& a) const noexcept {
    return training_ == Training::keep_activations ? &a : nullptr;
  }

  template <class Row>
  tensor<Row> run_experts(Context& ctx, const tensor<T>& rows, const typename Backend::Routed* through,
                          std::span<const index_t> offsets, Activations* keep) {
    if constexpr (TrainableBackend<Backend>)
      return backend_.template expert_mlp<Row>(ctx, rows, through, offsets, w_, keep);
    else
      return backend_.template expert_mlp<Row>(ctx, rows, through, offsets, w_);
  }

  /// Training::recompute: the MLPs' activations again, from the rows the forward kept.
  void recompute(Context& ctx, State& state) {
    using Row = std::conditional_t<block_plan.expert_tp_axis.empty(), T, float>;
    if (exchanges_rows()) {
      (void)backend_.template expert_mlp<Row>(ctx, state.experts.rows, nullptr, state.dispatch.local_offsets, w_,
                                              &state.experts);
    } else {
      const std::vector<index_t> offsets = exclusive_offsets(state.routed.counts);
      (void)backend_.template expert_mlp<Row>(ctx, state.x, &state.routed, offsets, w_, &state.experts);
    }
    if (has_shared_) (void)backend_.shared_mlp(ctx, state.x, w_, &state.shared);
  }

  // ---- The backward's steps ---------------------------------------------------------------

  /// A hook's backward on the output gradient g: a gather's is this member's rows, a split's
  /// the gather of the members' rows. `member_rows`: what the forward recorded.
  template <Communicator C>
  tensor<float> unhook(C& comm, Context& ctx, const MoEHook& h, tensor<float> g, std::span<const index_t> member_rows) {
    const index_t H = model_.hidden_size;
    const Group grp = group(h.axis);
    if (h.from == Act::shard_seq && h.to == Act::replicate)
      return backend_.slice_rows(ctx, g, rows_before(member_rows, grp.rank),
                                 member_rows[static_cast<std::size_t>(grp.rank)]);
    if (h.from == Act::replicate && h.to == Act::shard_seq) {
      std::vector<index_t> counts(member_rows.begin(), member_rows.end());
      index_t total = 0;
      for (index_t& c : counts) total += (c *= H);
      tensor<float> gathered({total / H, H});
      comm.all_gather_v(std::span<const float>(g.span()), gathered.span(), counts, grp, "mlp hook backward");
      return gathered;
    }
    return g;
  }

  /// The finish's backward: the output gradients of the routed and the shared experts over
  /// the `tokens` rows they computed. A reduce-scatter's is a gather; an all-reduce's is
  /// the gradient itself; a row slice's is the rows put back among zeros.
  template <Communicator C>
  std::pair<tensor<float>, tensor<float>> unfinish(C& comm, Context& ctx, tensor<float> g, index_t tokens) {
    constexpr auto& bp = block_plan;
    auto ungather = [&](const tensor<float>& part, std::string_view axis) {
      const Group grp = group(axis);
      tensor<float> whole({tokens, model_.hidden_size});
      comm.all_gather(std::span<const float>(part.span()), whole.span(), grp, "mlp exit backward");
      return whole;
    };
    const bool routed_scatters = bp.expert_reduce == PartialReduce::reduce_scatter;
    const bool shared_scatters = has_shared_ && bp.shared_reduce == PartialReduce::reduce_scatter;
    // Both read the same gradient: the shared experts' a copy (a device tensor is not copyable).
    auto both = [&](tensor<float> t) {
      tensor<float> second = has_shared_ ? backend_.slice_rows(ctx, t, 0, t.dim(0)) : tensor<float>{};
      return std::pair{std::move(t), std::move(second)};
    };
    if (!routed_scatters && !shared_scatters) return both(std::move(g));
    const std::string_view axis = routed_scatters ? bp.expert_tp_axis : bp.shared_tp_axis;
    tensor<float> whole = ungather(g, axis);
    if (!has_shared_ || (routed_scatters && shared_scatters && bp.expert_tp_axis == bp.shared_tp_axis))
      return both(std::move(whole));
    // Only one of the two was scattered; the other's forward took this member's rows of a
    // whole result: its gradient is g on those rows and zero elsewhere.
    const Group grp = group(axis);
    tensor<float> placed = backend_.place_rows(ctx, g, grp.rank * (tokens / grp.size()), tokens);
    return routed_scatters ? std::pair{std::move(whole), std::move(placed)} : std::pair{std::move(placed), std::move(whole)};
  }

  struct ExpertBackward {
    tensor<float> dout;        // the row gradients as the experts read them (grouped)
    tensor<float> dx_sorted;   // each routed row's input gradient, in sorted pair order
    std::optional<MlpBackward> mlp;
  };

  /// The routed experts' backward: the row gradients travel to the experts' ranks as the
  /// rows did (the forward's counts, no new count exchange), and the input gradients back.
  template <Communicator C>
  ExpertBackward expert_backward(C& comm, Context& ctx, State& state, tensor<float> drows) {
    ExpertBackward b;
    const index_t H = model_.hidden_size;
    if (!exchanges_rows()) {
      const std::vector<index_t> offsets = exclusive_offsets(state.routed.counts);
      b.mlp = backend_.mlp_backward(ctx, drows, offsets, state.experts, w_, false);
      b.dx_sorted = std::move(b.mlp->dx);
      b.dout = std::move(drows);
      return b;
    }
    const Group ep = group(block_plan.ep_axis);
    const DispatchCounts& counts = state.dispatch;
    const std::vector<index_t> send_counts = DispatchCounts::elements(counts.send_rows, H);
    const std::vector<index_t> recv_counts = DispatchCounts::elements(counts.recv_rows, H);
    tensor<float> recv({counts.received(), H});
    comm.all_to_all_v(std::span<const float>(drows.span()), send_counts, recv.span(), recv_counts, ep,
                      "combine backward");
    const std::vector<RowBlock> blocks = regroup_blocks(state.dispatch_from, ep.size(), local_experts_);
    b.dout = backend_.regroup(ctx, recv, blocks, false);
    b.mlp = backend_.mlp_backward(ctx, b.dout, counts.local_offsets, state.experts, w_, false);
    const tensor<float> dx_arrival = backend_.regroup(ctx, b.mlp->dx, blocks, true);
    b.dx_sorted = tensor<float>({drows.dim(0), H});
    comm.all_to_all_v(std::span<const float>(dx_arrival.span()), recv_counts, b.dx_sorted.span(), send_counts, ep,
                      "dispatch backward");
    return b;
  }

  /// dx = ((routed + shared) + router), with the partial terms (split experts) reduced
  /// first and the entry hooks undone: an entry gather's gradient is reduce-scattered where
  /// partial, else this member's rows are taken; an entry split's gradient is gathered.
  template <Communicator C>
  tensor<float> input_gradient(C& comm, Context& ctx, State& state, tensor<float> routed, tensor<float> shared,
                               tensor<float> router) {
    constexpr auto& bp = block_plan;
    std::string_view scattered;  // the axis whose entry gather a reduce-scatter undid
    // The rows of this member of an entry gather over `axis`: {offset, count}, or none.
    auto gathered_on = [&](std::string_view axis) -> std::optional<std::pair<index_t, index_t>> {
      for (std::size_t i = 0; i < bp.entry_count; ++i)
        if (bp.entry[i].axis == axis && bp.entry[i].from == Act::shard_seq && bp.entry[i].to == Act::replicate) {
          const std::vector<index_t>& rows = state.entry_rows[i];
          const index_t me = group(axis).rank;
          return std::pair{rows_before(rows, me), rows[static_cast<std::size_t>(me)]};
        }
      return std::nullopt;
    };
    auto reduce_partial = [&](tensor<float> t, std::string_view axis, std::string_view label) {
      if (axis.empty()) return t;
      const Group grp = group(axis);
      const auto mine = gathered_on(axis);
      const bool equal = mine && mine->second * grp.size() == t.dim(0);
      if (mine && equal) {
        tensor<float> part({mine->second, model_.hidden_size});
        comm.reduce_scatter(std::span<const float>(t.span()), part.span(), grp, ReduceOp::sum, label);
        scattered = axis;
        return part;
      }
      comm.all_reduce(t.span(), grp, ReduceOp::sum, label);
      return t;
    };
    auto rows_like = [&](tensor<float>& t, const tensor<float>& like) {
      if (t.dim(0) == like.dim(0)) return;
      const auto mine = gathered_on(scattered);
      t = backend_.slice_rows(ctx, t, mine->first, mine->second);
    };

    tensor<float> dx;
    if (has_shared_ && !bp.expert_tp_axis.empty() && bp.expert_tp_axis == bp.shared_tp_axis) {
      backend_.add(ctx, routed, shared);
      dx = reduce_partial(std::move(routed), bp.expert_tp_axis, "expert tp backward");
    } else {
      dx = reduce_partial(std::move(routed), bp.expert_tp_axis, "expert tp backward");
      if (has_shared_) {
        shared = reduce_partial(std::move(shared), bp.shared_tp_axis, "shared tp backward");
        rows_like(dx, shared);
        rows_like(shared, dx);
        backend_.add(ctx, dx, shared);
      }
    }
    rows_like(router, dx);
    backend_.add(ctx, dx, router);
    for (std::size_t i = bp.entry_count; i-- > 0;) {
      const MoEHook& h = bp.entry[i];
      if (h.from == Act::shard_seq && h.to == Act::replicate && h.axis == scattered) continue;
      dx = unhook(comm, ctx, h, std::move(dx), state.entry_rows[i]);
    }
    return dx;
  }

  /// How each weight gradient is summed over the ranks (planned at the first backward: a
  /// forward-only block does not need it).
  struct GradientChains {
    GradientChain router, experts, shared;
  };

  GradientChains plan_gradient_chains() const {
    const MeshSpec spec(mesh_);
    const std::vector<GradientReduction> all = gradient_reductions(model_, spec, Plan::entries, rank_);
    std::size_t ep_axis = spec.ndim();
    for (std::size_t a = 0; a < spec.ndim(); ++a)
      if (spec.axis_name(a) == block_plan.ep_axis) ep_axis = a;
    auto chain = [&](std::string_view param, std::size_t source_axis) {
      const GradientReduction* r = find_gradient_reduction(all, param);
      return r ? gradient_chain(spec, rank_, *r, source_axis) : GradientChain{Group{{rank_}, 0}, {0}, {0}};
    };
    GradientChains c{chain("layers.*.mlp.gate.weight", spec.ndim()), chain("layers.*.mlp.experts.gate_up_proj", ep_axis),
                     {}};
    if (has_shared_) c.shared = chain("layers.*.mlp.shared_experts.gate_proj.weight", spec.ndim());
    return c;
  }

  /// A zero fp32 tensor [rows, width] of the backend (a new gradient's memory; the ordered
  /// sums write every element, the zeros are the allocation's).
  tensor<float> zeros(Context& ctx, index_t rows, index_t width) {
    return backend_.place_rows(ctx, tensor<float>({0, width}), 0, rows);
  }
  /// A zero fp32 tensor of `shape` (its first dimension times the rest as `width`).
  tensor<float> zeros(Context& ctx, std::vector<index_t> shape) {
    index_t width = 1;
    for (std::size_t d = 1; d < shape.size(); ++d) width *= shape[d];
    tensor<float> t = zeros(ctx, shape.front(), width);
    t.reshape(std::move(shape));
    return t;
  }
  /// `t` with `shape`: kept where its shape matches (an ordered sum never reads what its
  /// accumulator held), else a new tensor.
  void shape_as(Context& ctx, tensor<float>& t, std::vector<index_t> shape) {
    if (t.shape() != shape) t = zeros(ctx, std::move(shape));
  }

  /// The parameter gradients, each one ordered sum over its chain, accumulated in place in
  /// the gradient tensors returned (no copies: at the benchmark's size the experts'
  /// gradients are 192 MB).
  template <Communicator C>
  void weight_gradients(C& comm, Context& ctx, const State& state, const tensor<float>& dlogits,
                        const ExpertBackward& eb, const tensor<float>& dy_shared,
                        const MlpBackward* shared_b, Gradients& g) {
    const index_t H = model_.hidden_size, E = model_.num_experts, El = local_experts_;
    const index_t tokens = state.x.dim(0);
    shape_as(ctx, g.router, {E, H});
    const GradientChains& chains = *chains_;
    ordered_sum(comm, chains.router.group, chains.router.owners, g.router.span(),
                [&](std::size_t, bool fresh) {
                  backend_.router_weight_grad(ctx, state.x, dlogits, 0, tokens, g.router.data(), fresh);
                },
                "router gradient");

    const index_t I = inter_, I2 = 2 * I;
    shape_as(ctx, g.gate_up, {El, I2, H});
    shape_as(ctx, g.down, {El, H, I});
    const std::span<float> experts[2] = {g.gate_up.span(), g.down.span()};
    const bool exchanged = exchanges_rows();
    // Without an exchange every expert is local and one segment holds all its rows, in
    // sorted order; with one, a segment is one source member's rows of each local expert.
    std::vector<index_t> first, count;
    if (!exchanged) {
      first = exclusive_offsets(state.routed.counts);
      first.pop_back();
      count = state.routed.counts;
    }
    ordered_sum(comm, chains.experts.group, chains.experts.owners, std::span<const std::span<float>>(experts),
                [&](std::size_t segment, bool fresh) {
                  if (exchanged) {
                    const index_t source = chains.experts.sources[segment];
                    first.assign(state.dispatch.local_offsets.begin(), state.dispatch.local_offsets.end() - 1);
                    count.resize(static_cast<std::size_t>(El));
                    for (index_t j = 0; j < El; ++j) {
                      const auto at = static_cast<std::size_t>(j);
                      for (index_t s = 0; s < source; ++s)
                        first[at] += state.dispatch_from[static_cast<std::size_t>(s * El + j)];
                      count[at] = state.dispatch_from[static_cast<std::size_t>(source * El + j)];
                    }
                  }
                  backend_.mlp_weight_grads(ctx, state.x, exchanged ? nullptr : &state.routed, state.experts, eb.dout,
                                            *eb.mlp, first, count, g.gate_up.data(), g.down.data(), fresh);
                },
                "expert gradients");

    if (!shared_b) return;
    const index_t S = shared_inter_;
    // The gate's and the up's gradients as the one [2S, H] product the backend computes,
    // cut in two after (the shared experts are small next to the routed ones).
    tensor<float> gate_up = zeros(ctx, {2 * S, H});
    shape_as(ctx, g.shared_down, {H, S});
    const std::span<float> shared[2] = {gate_up.span(), g.shared_down.span()};
    const index_t zero = 0;
    ordered_sum(comm, chains.shared.group, chains.shared.owners, std::span<const std::span<float>>(shared),
                [&](std::size_t, bool fresh) {
                  backend_.mlp_weight_grads(ctx, state.x, nullptr, state.shared, dy_shared, *shared_b,
                                            std::span(&zero, 1), std::span(&tokens, 1), gate_up.data(),
                                            g.shared_down.data(), fresh);
                },
                "shared expert gradients");
    g.shared_gate = backend_.slice_rows(ctx, gate_up, 0, S);
    g.shared_up = backend_.slice_rows(ctx, gate_up, S, S);
  }

  static inline std::atomic<std::uint64_t> next_id_{1};

  ModelSpec model_;
  Mesh mesh_;
  index_t rank_;
  Backend backend_;
  typename Backend::Weights w_;
  index_t local_experts_ = 0;
  index_t inter_ = 0, shared_inter_ = 0;  // this rank's intermediate dims (split under expert or shared TP)
  bool has_shared_ = false;
  index_t expert_begin_ = 0;
  Training training_ = Training::off;
  std::uint64_t id_ = next_id_++;
  std::uint64_t weights_version_ = 0;
  std::optional<GradientChains> chains_;
};

}  // namespace meshplan

#include "meshplan/cpu/moe_backend.hpp"

#include "meshplan/core/detail/public_end.hpp"
