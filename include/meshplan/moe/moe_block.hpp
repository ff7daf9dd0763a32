#pragma once
// MoEBlock<Model, Mesh, Plan, Backend>: one layer's MoE block (router, routed experts,
// shared experts) running on one rank of a mesh, with that rank's slice of the weights
// and its own tokens. The ranks together compute exactly the single-rank reference
// (reference.hpp): bit for bit where the plan only moves data (EP, SP, DP), within
// rounding where it splits a sum over ranks (expert or shared-expert tensor parallelism).
//
//   using Block = mp::MoEBlock<Model, Mesh, Plan>;         // CPU backend, float storage
//   Block block(mesh, rank, full_weights);                 // slices what the rank holds
//   mp::Tensor<float> y = block.forward(comm, x);          // x: this rank's tokens
//
// The pipeline is chosen at compile time from the plan (block_plan.hpp):
//   entry hooks         gather sequence shards (SP) or split replicated tokens over an axis
//   route               locally, on the tokens the rank holds
//   routed experts      all local; or EP: sort (token, slot) pairs by expert, exchange
//                       counts, all-to-all-v the rows, regroup by local expert, grouped
//                       MLP, inverse regroup, all-to-all-v back, unsort
//   expert TP           each expert's intermediate dim split: partial sums all-reduced (or
//                       reduce-scattered onto sequence shards) after the combine
//   combine             weighted sum in slot order
//   shared experts      DeepSeek-V3, whole or split like the experts
//   exit hooks          gather or split back
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
#include <vector>

#include "meshplan/comm/agree.hpp"
#include "meshplan/comm/communicator.hpp"
#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/mesh/device_mesh.hpp"
#include "meshplan/mesh/mesh_spec.hpp"
#include "meshplan/cpu/combine.hpp"
#include "meshplan/cpu/experts.hpp"
#include "meshplan/cpu/permute.hpp"
#include "meshplan/cpu/router.hpp"
#include "meshplan/cpu/tensor.hpp"
#include "meshplan/model/model_rules.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/moe/block_plan.hpp"
#include "meshplan/moe/dispatch_counts.hpp"
#include "meshplan/moe/moe_weights.hpp"
#include "meshplan/moe/rank_weights.hpp"
#include "meshplan/placement/sharding.hpp"
#include "meshplan/plan/validate.hpp"

namespace meshplan {

/// The CPU reference backend; T is the storage type.
template <StorageType T = float>
struct CpuBackend {
  using value_type = T;
};

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

/// The MoE block on the CPU backend; cuda/moe/moe_block.cuh specializes it for
/// cuda::CudaBackend<T>.
template <class Model, class Mesh, PlanType Plan, class Backend = CpuBackend<float>>
class MoEBlock {
  static constexpr bool static_model = detail::MoEBlockRequirements<Model, Mesh, Plan>::static_model;

 public:
  using T = typename Backend::value_type;
  static constexpr MoEBlockPlan block_plan = moe_block_plan(Plan::entries);

  /// Slices this rank's weights from the full block weights by each parameter's layout.
  MoEBlock(const Mesh& mesh, index_t rank, const MoEWeights<T>& full)
    requires static_model
      : MoEBlock(Model::spec, mesh, rank, full) {}
  MoEBlock(const Mesh& mesh, index_t rank, const MoEWeightLoader<T>& load)
    requires static_model
      : MoEBlock(Model::spec, mesh, rank, load) {}

  /// With a config known at run time (Model = RuntimeModel).
  MoEBlock(const ModelSpec& model, const Mesh& mesh, index_t rank, const MoEWeights<T>& full)
      : MoEBlock(model, mesh, rank, slice_of(model, full)) {}

  MoEBlock(const ModelSpec& model, const Mesh& mesh, index_t rank, const MoEWeightLoader<T>& load)
      : model_(model), mesh_(mesh), rank_(rank) {
    RankWeights<T> mine = load_rank_weights(model_, MeshSpec(mesh_), Plan::entries, rank_, load);
    w_ = std::move(mine.weights);
    expert_begin_ = mine.first_expert;
  }

  const ModelSpec& model() const noexcept { return model_; }
  index_t rank() const noexcept { return rank_; }
  const MoEWeights<T>& local_weights() const noexcept { return w_; }
  /// The global index of this rank's first local expert.
  index_t first_local_expert() const noexcept { return expert_begin_; }
  index_t local_experts() const noexcept { return w_.gate_up.dim(0); }
  /// Rows each local expert computed in the last forward (all ranks' tokens routed here).
  const std::vector<index_t>& rows_per_local_expert() const noexcept { return rows_per_expert_; }
  /// The routing of the tokens this rank routed in the last forward (after entry hooks).
  const Routing& last_routing() const noexcept { return routing_; }
  /// Which rows of the last forward's input the routing's rows are (see RoutedRows).
  const RoutedRows& routed_input_rows() const noexcept { return routed_rows_; }

  /// x: the tokens this rank holds at the block's input, [tokens, hidden]. Returns the
  /// block's output for the tokens the rank holds at its output (the same tokens, for
  /// every built-in plan).
  template <Communicator C>
  Tensor<T> forward(C& comm, const Tensor<T>& x_in) {
    const index_t H = model_.hidden_size;
    const Group world = comm.world_group();
    agree(comm,
          first_of({moe_rules::rank_matches(rank_, comm.rank()), moe_rules::hidden_states_shape(x_in.shape(), H)}),
          world);

    Tensor<T> x = x_in;
    routed_rows_ = {0, 0, x_in.dim(0)};
    for (const MoEHook& h : std::span(block_plan.entry).first(block_plan.entry_count))
      x = apply_hook(comm, h, x, HookSide::entry);
    const index_t tokens = x.dim(0);

    // Route; a non-finite logit is refused on every rank before any row moves.
    const Tensor<float> logits = cpu::router_logits(x, w_.router);
    agree(comm, cpu::check_logits(logits), world);
    routing_ = cpu::route(model_, logits, w_.correction_bias.span());

    // Routed experts: one output row per (token, slot), fp32 when the intermediate dim is
    // split (partial sums), else stored in T as the reference stores it.
    constexpr bool routed_partial = !block_plan.expert_tp_axis.empty();
    using Row = std::conditional_t<routed_partial, float, T>;
    std::vector<Row> y = block_plan.expert_parallel() ? dispatch_and_compute<Row>(comm, x) : compute_local<Row>(x);
    std::vector<float> routed(static_cast<std::size_t>(tokens * H));
    cpu::combine<Row>(routing_, y, H, routed);

    std::vector<float> shared;
    if (w_.has_shared()) {
      shared.resize(static_cast<std::size_t>(tokens * H));
      cpu::dense_mlp(x, w_.shared_gate, w_.shared_up, w_.shared_down, shared);
    }
    Tensor<T> out = finish(comm, std::move(routed), std::move(shared), tokens);
    for (const MoEHook& h : std::span(block_plan.exit).first(block_plan.exit_count))
      out = apply_hook(comm, h, out, HookSide::exit);
    return out;
  }

 private:
  Group group(std::string_view axis) const { return mesh_.group(rank_, {axis}); }

  /// A prepare-input or -output hook on the token dim.
  template <Communicator C>
  Tensor<T> apply_hook(C& comm, const MoEHook& h, const Tensor<T>& x, HookSide side) {
    const index_t H = model_.hidden_size;
    const std::string_view label = hook_label(side);
    if (h.from == Act::shard_seq && h.to == Act::replicate) {
      const Group g = group(h.axis);
      std::vector<index_t> counts(static_cast<std::size_t>(g.size()));
      index_t mine = x.dim(0);
      comm.all_gather(std::span<const index_t>(&mine, 1), std::span<index_t>(counts), g, label);
      if (side == HookSide::entry) {
        gathered_counts_ = counts;  // tokens per member, for the reduce-scatter back
        routed_rows_ = routed_rows_.after_gather(counts, g.rank);
        // The reduce-scatter back needs equal shards: refuse before any row moves.
        if constexpr (block_plan.reduce_scatters())
          agree(comm, moe_rules::sequence_shards_equal(h.axis, counts), comm.world_group());
      }
      index_t total = 0;
      for (index_t& c : counts) total += (c *= H);
      Tensor<T> gathered({total / H, H});
      comm.all_gather_v(x.span(), gathered.span(), counts, g, label);
      return gathered;
    }
    if (h.from == Act::replicate && h.to == Act::shard_seq) {
      const Group g = group(h.axis);
      const Chunk c = chunk(x.dim(0), g.size(), g.rank);
      if (side == HookSide::entry) routed_rows_ = routed_rows_.after_split(c.offset, c.size);
      return Tensor<T>({c.size, H}, std::vector<T>(x.data() + c.offset * H, x.data() + (c.offset + c.size) * H));
    }
    return x;
  }

  /// Every expert on this rank (tensor parallel or replicated experts).
  template <class Row>
  std::vector<Row> compute_local(const Tensor<T>& x) {
    const index_t H = model_.hidden_size, k = routing_.top_k;
    const ExpertOrder order = cpu::sort_by_expert(routing_, model_.num_experts);
    std::vector<T> rows(order.order.size() * static_cast<std::size_t>(H));
    cpu::gather_rows<T>(x.span(), cpu::tokens_of(order, k), H, rows);
    rows_per_expert_ = order.counts;
    return run_experts<Row>(rows, order.offsets, order.order);
  }

  /// Expert parallelism: the rows travel to the ranks holding their experts and back.
  template <class Row, Communicator C>
  std::vector<Row> dispatch_and_compute(C& comm, const Tensor<T>& x) {
    const index_t H = model_.hidden_size, k = routing_.top_k, E = model_.num_experts;
    const Group ep = group(block_plan.ep_axis);
    const index_t P = ep.size(), El = E / P;

    const ExpertOrder order = cpu::sort_by_expert(routing_, E);
    std::vector<T> send(order.order.size() * static_cast<std::size_t>(H));
    cpu::gather_rows<T>(x.span(), cpu::tokens_of(order, k), H, send);

    // Rows per (source rank, local expert): what each rank sends to each.
    std::vector<index_t> from(static_cast<std::size_t>(E));
    comm.all_to_all(std::span<const index_t>(order.counts), std::span<index_t>(from), ep, "counts");
    const DispatchCounts counts = dispatch_counts(order.counts, from, P);
    const std::vector<index_t> send_counts = DispatchCounts::elements(counts.send_rows, H);
    const std::vector<index_t> recv_counts = DispatchCounts::elements(counts.recv_rows, H);
    std::vector<T> recv(static_cast<std::size_t>(counts.received() * H));
    comm.all_to_all_v(std::span<const T>(send), send_counts, std::span<T>(recv), recv_counts, ep, "dispatch");

    // Regroup by local expert, run them, and put the results back in arrival order.
    const std::vector<index_t> regroup = cpu::regroup_index(from, P, El);
    std::vector<T> grouped(recv.size());
    cpu::gather_rows<T>(recv, regroup, H, grouped);
    rows_per_expert_ = counts.rows_per_local_expert;
    const std::vector<index_t>& offsets = counts.local_offsets;
    const std::vector<Row> y_grouped = run_experts<Row>(grouped, offsets, regroup);

    // Back to the senders, then from expert order to (token, slot) order.
    std::vector<Row> returned(send.size());
    comm.all_to_all_v(std::span<const Row>(y_grouped), recv_counts, std::span<Row>(returned), send_counts, ep,
                      "combine");
    std::vector<Row> y(returned.size());
    cpu::scatter_rows<Row>(returned, order.order, H, y);
    return y;
  }

  /// The grouped MLP on expert-grouped rows. The result is scattered by `index` back to
  /// the rows' previous order (pair order, or arrival order under EP).
  template <class Row>
  std::vector<Row> run_experts(std::span<const T> rows, std::span<const index_t> offsets,
                               std::span<const index_t> index) {
    const index_t H = model_.hidden_size;
    std::vector<float> y(rows.size());
    cpu::grouped_expert_mlp<T>(rows, offsets, w_.gate_up, w_.down, y);
    std::vector<Row> stored(y.size());
    for (std::size_t i = 0; i < y.size(); ++i) stored[i] = from_float<Row>(y[i]);
    std::vector<Row> out(y.size());
    cpu::scatter_rows<Row>(stored, index, H, out);
    return out;
  }

  /// Reduces partial sums and adds the shared experts, with the reference's roundings.
  template <Communicator C>
  Tensor<T> finish(C& comm, std::vector<float> routed, std::vector<float> shared, index_t tokens) {
    const index_t H = model_.hidden_size;
    constexpr auto& bp = block_plan;
    const bool has_shared = !shared.empty();
    // Both partial over the same axis the same way: one reduction of their sum.
    if (has_shared && !bp.expert_tp_axis.empty() && bp.expert_tp_axis == bp.shared_tp_axis &&
        bp.expert_reduce == bp.shared_reduce) {
      for (std::size_t i = 0; i < routed.size(); ++i) routed[i] += shared[i];
      return round(reduce(comm, std::move(routed), tokens, bp.expert_tp_axis, bp.expert_reduce, "expert tp"));
    }
    index_t out_tokens = tokens;
    std::vector<float> r = reduce(comm, std::move(routed), tokens, bp.expert_tp_axis, bp.expert_reduce, "expert tp");
    std::vector<float> s;
    if (has_shared)
      s = reduce(comm, std::move(shared), tokens, bp.shared_tp_axis, bp.shared_reduce, "shared tp");
    out_tokens = static_cast<index_t>(r.size()) / std::max<index_t>(H, 1);
    // One of the two may have been scattered onto a sequence shard: take the same rows of the other.
    if (has_shared && s.size() != r.size()) {
      const bool routed_scattered = r.size() < s.size();
      std::string_view axis = routed_scattered ? bp.expert_tp_axis : bp.shared_tp_axis;
      const Group g = group(axis);
      auto& whole = routed_scattered ? s : r;
      const index_t per = tokens / g.size();
      whole = std::vector<float>(whole.begin() + g.rank * per * H, whole.begin() + (g.rank + 1) * per * H);
      out_tokens = per;
    }
    Tensor<T> out({out_tokens, H});
    for (index_t i = 0; i < out.numel(); ++i) {
      float v = to_float(from_float<T>(r[i]));
      if (has_shared) v += to_float(from_float<T>(s[i]));
      out[i] = from_float<T>(v);
    }
    return out;
  }

  template <Communicator C>
  std::vector<float> reduce(C& comm, std::vector<float> partial, index_t tokens, std::string_view axis,
                            PartialReduce how, std::string_view label) {
    if (how == PartialReduce::none || axis.empty()) return partial;
    const Group g = group(axis);
    if (how == PartialReduce::all_reduce) {
      comm.all_reduce(std::span<float>(partial), g, ReduceOp::sum, label);
      return partial;
    }
    // Onto sequence shards: the tokens came gathered from equal shards.
    enforce(moe_rules::sequence_shards_equal(axis, gathered_counts_));
    enforce(plan_rules::sequence_divisible(axis, tokens, g.size()));
    std::vector<float> mine(partial.size() / static_cast<std::size_t>(g.size()));
    comm.reduce_scatter(std::span<const float>(partial), std::span<float>(mine), g, ReduceOp::sum, label);
    return mine;
  }

  Tensor<T> round(const std::vector<float>& v) const {
    const index_t H = model_.hidden_size;
    Tensor<T> out({static_cast<index_t>(v.size()) / H, H});
    for (index_t i = 0; i < out.numel(); ++i) out[i] = from_float<T>(v[i]);
    return out;
  }

  ModelSpec model_;
  Mesh mesh_;
  index_t rank_;
  MoEWeights<T> w_;
  index_t expert_begin_ = 0;
  Routing routing_;
  std::vector<index_t> rows_per_expert_;
  std::vector<index_t> gathered_counts_;
  RoutedRows routed_rows_;
};

}  // namespace meshplan
