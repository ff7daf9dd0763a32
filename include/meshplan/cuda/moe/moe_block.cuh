#pragma once
// MoEBlock on the GPU: the backend tag cuda::CudaBackend<T> selects this specialization of
// MoEBlock (moe/moe_block.hpp), the same block with its data in device memory and its
// collectives on a DeviceCommunicator (CudaLocalComm on one GPU, NcclComm across GPUs).
//
//   using Block = mp::MoEBlock<Model, Mesh, Plan, mp::cuda::CudaBackend<mp::bfloat16>>;
//   Block block(mesh, rank, full_weights);          // uploads the rank's pieces
//   mp::cuda::DeviceTensor<mp::bfloat16> y = block.forward(comm, x);   // x in device memory
//
// The pipeline, all on comm.stream():
//   route               fused router kernel: ids and weights per (token, slot)
//   sort, count         CUB radix sort of the pairs by expert; per-expert counts (histogram)
//   -- the one device-to-host copy: the counts, and the router's report of bad logits --
//   EP                  counts all-to-all (host), rows gathered in expert order, all-to-all-v,
//                       regrouped by local expert (row blocks)
//   experts             bf16 on sm_80+: the fused grouped kernels (FusedExperts: wgmma on
//                       sm_90 with sm_90a code, else mma.sync), reading
//                       the tokens through the permutation when nothing was exchanged;
//                       otherwise cuBLAS per local expert (CublasExperts)
//   EP back             inverse regroup, all-to-all-v back
//   combine             fixed slot order, fp32, no atomics
//   shared experts, expert-TP reductions, rounding, the SP hooks: as on the CPU.
//
// A row's expert output does not depend on which rank computes it or on its neighbours:
// the fused kernels sum every output in k order, the same way in every tile position, and
// CublasExperts gives every GEMM the same shape. So EP, SP and DP give exactly the
// single-rank GPU result. Against the CPU reference, outputs agree within rounding (the
// GPU sums in another order).

#include <cuda_runtime_api.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

#include "meshplan/comm/agree.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/cpu/permute.hpp"
#include "meshplan/cuda/comm/device_communicator.cuh"
#include "meshplan/cuda/core/buffer.cuh"
#include "meshplan/cuda/core/device_tensor.cuh"
#include "meshplan/cuda/core/device_types.cuh"
#include "meshplan/cuda/core/launch.cuh"
#include "meshplan/cuda/experts/cublas_experts.cuh"
#include "meshplan/cuda/experts/fused_experts.cuh"
#include "meshplan/cuda/experts/tiles.cuh"
#include "meshplan/cuda/moe/device_weights.cuh"
#include "meshplan/cuda/permute/device_permute.cuh"
#include "meshplan/cuda/permute/kernels.cuh"
#include "meshplan/cuda/router/device_router.cuh"
#include "meshplan/moe/dispatch_counts.hpp"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/moe/rank_weights.hpp"

namespace meshplan::cuda {

/// The CUDA backend; T is the storage type (float or meshplan::bfloat16).
template <StorageType T = float>
struct CudaBackend {
  using value_type = T;
};

}  // namespace meshplan::cuda

namespace meshplan {

template <class Model, class Mesh, PlanType Plan, StorageType Storage>
class MoEBlock<Model, Mesh, Plan, cuda::CudaBackend<Storage>> {
  static constexpr bool static_model = detail::MoEBlockRequirements<Model, Mesh, Plan>::static_model;

 public:
  using T = Storage;
  static constexpr MoEBlockPlan block_plan = moe_block_plan(Plan::entries);

  /// Slices this rank's weights from the full block weights and copies them to the current
  /// device.
  MoEBlock(const Mesh& mesh, index_t rank, const MoEWeights<T>& full) requires static_model
      : MoEBlock(Model::spec, mesh, rank, full) {}
  MoEBlock(const Mesh& mesh, index_t rank, const MoEWeightLoader<T>& load) requires static_model
      : MoEBlock(Model::spec, mesh, rank, load) {}
  MoEBlock(const ModelSpec& model, const Mesh& mesh, index_t rank, const MoEWeights<T>& full)
      : MoEBlock(model, mesh, rank, slice_of(model, full)) {}
  MoEBlock(const ModelSpec& model, const Mesh& mesh, index_t rank, const MoEWeightLoader<T>& load)
      : model_(model), mesh_(mesh), rank_(rank) {
    RankWeights<T> mine = load_rank_weights(model_, MeshSpec(mesh_), Plan::entries, rank_, load);
    local_experts_ = mine.weights.gate_up.dim(0);
    path_ = cuda::device_expert_path(std::is_same_v<T, bfloat16>);
    if (path_ != cuda::ExpertPath::cublas) fused_ = cuda::FusedExperts(path_);
    expert_begin_ = mine.first_expert;
    w_ = cuda::to_device(mine.weights);
  }

  const ModelSpec& model() const noexcept { return model_; }
  index_t rank() const noexcept { return rank_; }
  const cuda::DeviceMoEWeights<T>& local_weights() const noexcept { return w_; }
  index_t first_local_expert() const noexcept { return expert_begin_; }
  index_t local_experts() const noexcept { return local_experts_; }
  /// Rows each local expert computed in the last forward (known on the host: the counts
  /// are the one thing the pipeline copies back).
  const std::vector<index_t>& rows_per_local_expert() const noexcept { return rows_per_expert_; }
  /// The routing of the last forward, copied from the device (waits for its stream).
  Routing last_routing() const {
    Routing r{routed_tokens_, model_.num_experts_per_tok, ids_.download(last_stream_), weights_.download(last_stream_)};
    return r;
  }
  const RoutedRows& routed_input_rows() const noexcept { return routed_rows_; }

  /// x: this rank's tokens at the block's input, [tokens, hidden], in device memory. Runs
  /// on comm.stream(); returns without waiting for it.
  template <cuda::DeviceCommunicator C>
  cuda::DeviceTensor<T> forward(C& comm, const cuda::DeviceTensor<T>& x_in) {
    const index_t H = model_.hidden_size;
    const cudaStream_t s = comm.stream();
    last_stream_ = s;
    const Group world = comm.world_group();
    agree(comm.host(),
          first_of({moe_rules::rank_matches(rank_, comm.rank()), moe_rules::hidden_states_shape(x_in.shape(), H)}),
          world);

    routed_rows_ = {0, 0, x_in.dim(0)};
    const cuda::DeviceTensor<T>* x = &x_in;
    cuda::DeviceTensor<T> hooked;
    for (const MoEHook& h : std::span(block_plan.entry).first(block_plan.entry_count)) {
      hooked = apply_hook(comm, h, *x, HookSide::entry);
      x = &hooked;
    }
    const index_t tokens = x->dim(0);
    routed_tokens_ = tokens;

    route_and_count(comm, *x);

    constexpr bool routed_partial = !block_plan.expert_tp_axis.empty();
    using Row = std::conditional_t<routed_partial, float, T>;  // host type of the expert rows
    cuda::DeviceBuffer<Row>& y = expert_rows<Row>().y;
    if constexpr (block_plan.expert_parallel())
      dispatch_and_compute<Row>(comm, *x, y);
    else
      compute_local<Row>(*x, y);

    const index_t pairs = tokens * model_.num_experts_per_tok;
    inverse_.resize(static_cast<std::size_t>(pairs));
    cuda::DevicePermute::inverse(order_.data(), pairs, inverse_.data(), s);
    routed_.resize(static_cast<std::size_t>(tokens * H));
    cuda::DevicePermute::combine(cuda::device_cast(y.data()), inverse_.data(), weights_.data(), tokens,
                                 model_.num_experts_per_tok, H, routed_.data(), s);

    if (w_.has_shared()) run_shared(*x, s);
    cuda::DeviceTensor<T> out = finish(comm, tokens);
    for (const MoEHook& h : std::span(block_plan.exit).first(block_plan.exit_count))
      out = apply_hook(comm, h, out, HookSide::exit);
    return out;
  }

 private:
  Group group(std::string_view axis) const { return mesh_.group(rank_, {axis}); }

  /// Routing, sorting and counting on the device, then the pipeline's one copy back: the
  /// per-expert counts and the router's report, agreed over all ranks before rows move.
  template <class C>
  void route_and_count(C& comm, const cuda::DeviceTensor<T>& x) {
    const cudaStream_t s = comm.stream();
    const index_t tokens = x.dim(0), k = model_.num_experts_per_tok, E = model_.num_experts, pairs = tokens * k;
    ids_.resize(static_cast<std::size_t>(pairs));
    weights_.resize(static_cast<std::size_t>(pairs));
    sorted_ids_.resize(static_cast<std::size_t>(pairs));
    order_.resize(static_cast<std::size_t>(pairs));
    counts_.resize(static_cast<std::size_t>(E));
    offsets_.resize(static_cast<std::size_t>(E + 1));
    status_.resize(1);
    bad_id_.resize(1);
    MESHPLAN_CUDA_CHECK(cudaMemsetAsync(status_.data(), 0xff, sizeof(unsigned long long), s));
    MESHPLAN_CUDA_CHECK(cudaMemsetAsync(bad_id_.data(), 0, sizeof(int), s));

    const cuda::RouterParams params = cuda::RouterParams::of(model_);
    cuda::DeviceRouter::route(cuda::device_cast(x.data()), cuda::device_cast(w_.router.data()),
                              w_.correction_bias.empty() ? nullptr : w_.correction_bias.data(), params, tokens,
                              ids_.data(), weights_.data(), nullptr, status_.data(), s);
    std::size_t sort_bytes = 0, count_bytes = 0;
    cuda::DevicePermute::sort_by_expert(nullptr, sort_bytes, ids_.data(), sorted_ids_.data(), order_.data(), pairs, E,
                                        s);
    cuda::DevicePermute::expert_offsets(nullptr, count_bytes, sorted_ids_.data(), pairs, E, counts_.data(),
                                        offsets_.data(), bad_id_.data(), s);
    // Never empty: a null temporary is CUB's request for sizes, not a run.
    temp_.resize(std::max<std::size_t>({sort_bytes, count_bytes, 256}));
    cuda::DevicePermute::sort_by_expert(temp_.data(), sort_bytes, ids_.data(), sorted_ids_.data(), order_.data(), pairs,
                                        E, s);
    cuda::DevicePermute::expert_offsets(temp_.data(), count_bytes, sorted_ids_.data(), pairs, E, counts_.data(),
                                        offsets_.data(), bad_id_.data(), s);

    // The one synchronization: what the host needs to size the exchange.
    std::vector<std::int32_t> counts(static_cast<std::size_t>(E));
    unsigned long long first_bad = cuda::no_bad_logit;
    int bad_id = 0;
    MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(counts.data(), counts_.data(), counts_.bytes(), cudaMemcpyDeviceToHost, s));
    MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(&first_bad, status_.data(), sizeof first_bad, cudaMemcpyDeviceToHost, s));
    MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(&bad_id, bad_id_.data(), sizeof bad_id, cudaMemcpyDeviceToHost, s));
    MESHPLAN_CUDA_CHECK(cudaStreamSynchronize(s));
    Message problem = cuda::bad_logit(first_bad, static_cast<int>(E));
    if (problem.ok() && bad_id)
      problem = Message::rule("expert_id_valid") << "the router chose an expert outside 0.." << E - 1;
    agree(comm.host(), problem, comm.world_group());
    expert_counts_.assign(counts.begin(), counts.end());
  }

  /// Every expert on this rank, reading the tokens through the sorted order.
  template <class Row>
  void compute_local(const cuda::DeviceTensor<T>& x, cuda::DeviceBuffer<Row>& y) {
    const index_t H = model_.hidden_size, k = model_.num_experts_per_tok, pairs = x.dim(0) * k;
    std::vector<index_t> offsets(expert_counts_.size() + 1, 0);
    for (std::size_t e = 0; e < expert_counts_.size(); ++e) offsets[e + 1] = offsets[e] + expert_counts_[e];
    rows_per_expert_ = expert_counts_;
    y.resize(static_cast<std::size_t>(pairs * H));
    run_experts(cuda::device_cast(x.data()), order_.data(), offsets, cuda::device_cast(y.data()), last_stream_);
  }

  /// Expert parallelism: rows to the ranks holding their experts and back; y ends in the
  /// sorted pair order, as compute_local leaves it.
  template <class Row, class C>
  void dispatch_and_compute(C& comm, const cuda::DeviceTensor<T>& x, cuda::DeviceBuffer<Row>& y) {
    const cudaStream_t s = comm.stream();
    const index_t H = model_.hidden_size, k = model_.num_experts_per_tok, E = model_.num_experts;
    const index_t pairs = x.dim(0) * k;
    const Group ep = group(block_plan.ep_axis);
    const index_t P = ep.size(), El = E / P;

    std::vector<index_t> from(static_cast<std::size_t>(E));
    comm.host().all_to_all(std::span<const index_t>(expert_counts_), std::span<index_t>(from), ep, "counts");
    const DispatchCounts counts = dispatch_counts(expert_counts_, from, P);
    const std::vector<index_t> send_counts = DispatchCounts::elements(counts.send_rows, H);
    const std::vector<index_t> recv_counts = DispatchCounts::elements(counts.recv_rows, H);

    send_.resize(static_cast<std::size_t>(pairs * H));
    cuda::DevicePermute::gather_rows(cuda::device_cast(x.data()), order_.data(), k, pairs, H,
                                     cuda::device_cast(send_.data()), s);
    recv_.resize(static_cast<std::size_t>(counts.received() * H));
    comm.all_to_all_v(std::span<const T>(send_.span()), send_counts, recv_.span(), recv_counts, ep, "dispatch");

    // Regroup by local expert, run them, and put the results back in arrival order.
    const std::vector<cpu::RegroupBlock> blocks = cpu::regroup_blocks(from, P, El);
    grouped_.resize(recv_.size());
    cuda::DevicePermute::regroup(cuda::device_cast(recv_.data()), cuda::device_cast(grouped_.data()), blocks, H, false,
                                 table_, s);
    rows_per_expert_ = counts.rows_per_local_expert;
    cuda::DeviceBuffer<Row>& y_grouped = expert_rows<Row>().grouped;
    y_grouped.resize(recv_.size());
    run_experts(cuda::device_cast(grouped_.data()), nullptr, counts.local_offsets, cuda::device_cast(y_grouped.data()),
                s);
    cuda::DeviceBuffer<Row>& y_arrival = expert_rows<Row>().arrival;
    y_arrival.resize(recv_.size());
    cuda::DevicePermute::regroup(cuda::device_cast(y_grouped.data()), cuda::device_cast(y_arrival.data()), blocks, H,
                                 true, table_, s);
    y.resize(static_cast<std::size_t>(pairs * H));
    comm.all_to_all_v(std::span<const Row>(y_arrival.span()), recv_counts, y.span(), send_counts, ep, "combine");
  }

  /// The grouped expert MLP on rows grouped by local expert (`offsets`): `rows` as they
  /// are, or, with `gather`, token gather[r] / k of them. The fused kernels read through
  /// the permutation; the cuBLAS path gathers a copy first.
  template <class D, class R>
  void run_experts(const D* rows, const std::int32_t* gather, std::span<const index_t> offsets, R* out,
                   cudaStream_t s) {
    const index_t H = model_.hidden_size, I = w_.down.dim(2), k = model_.num_experts_per_tok;
    const D* gate_up = cuda::device_cast(w_.gate_up.data());
    const D* down = cuda::device_cast(w_.down.data());
    if constexpr (std::is_same_v<T, bfloat16>) {
      if (path_ != cuda::ExpertPath::cublas)
        return fused_.grouped(rows, gather, k, offsets, gate_up, down, H, I, out, s);
    }
    if (gather) {
      const index_t pairs = offsets.empty() ? 0 : offsets.back();
      send_.resize(static_cast<std::size_t>(pairs * H));
      cuda::DevicePermute::gather_rows(rows, gather, k, pairs, H, cuda::device_cast(send_.data()), s);
      rows = cuda::device_cast(send_.data());
    }
    experts_.grouped(rows, offsets, gate_up, down, H, I, out, s);
  }

  /// The shared experts on the block's tokens, fp32 out.
  void run_shared(const cuda::DeviceTensor<T>& x, cudaStream_t s) {
    const index_t H = model_.hidden_size, S = w_.shared_gate.dim(0), tokens = x.dim(0);
    shared_.resize(static_cast<std::size_t>(tokens * H));
    const auto* gate = cuda::device_cast(w_.shared_gate.data());
    const auto* up = cuda::device_cast(w_.shared_up.data());
    const auto* down = cuda::device_cast(w_.shared_down.data());
    if constexpr (std::is_same_v<T, bfloat16>) {
      if (path_ != cuda::ExpertPath::cublas)
        return fused_.dense(cuda::device_cast(x.data()), tokens, gate, up, down, H, S, shared_.data(), s);
    }
    experts_.dense(cuda::device_cast(x.data()), tokens, gate, up, down, H, S, shared_.data(), s);
  }

  /// Reduces partial sums and adds the shared experts, with the reference's roundings.
  template <class C>
  cuda::DeviceTensor<T> finish(C& comm, index_t tokens) {
    const cudaStream_t s = comm.stream();
    const index_t H = model_.hidden_size;
    constexpr auto& bp = block_plan;
    const bool has_shared = w_.has_shared();
    if (has_shared && !bp.expert_tp_axis.empty() && bp.expert_tp_axis == bp.shared_tp_axis &&
        bp.expert_reduce == bp.shared_reduce) {
      cuda::launch_elementwise(tokens * H, [&](unsigned b) {
        cuda::kernels::add_into<<<b, cuda::elementwise_threads, 0, s>>>(routed_.data(), shared_.data(), tokens * H);
      });
      const float* r = reduce(comm, routed_, reduced_routed_, tokens, bp.expert_tp_axis, bp.expert_reduce, "expert tp");
      return rounded(r, nullptr, out_tokens(routed_, reduced_routed_, r), s);
    }
    const float* r = reduce(comm, routed_, reduced_routed_, tokens, bp.expert_tp_axis, bp.expert_reduce, "expert tp");
    index_t n = out_tokens(routed_, reduced_routed_, r);
    const float* sh = nullptr;
    if (has_shared) {
      sh = reduce(comm, shared_, reduced_shared_, tokens, bp.shared_tp_axis, bp.shared_reduce, "shared tp");
      const index_t ns = out_tokens(shared_, reduced_shared_, sh);
      // One of the two was scattered onto a sequence shard: take the same rows of the other.
      if (ns != n) {
        const bool routed_scattered = n < ns;
        const Group g = group(routed_scattered ? bp.expert_tp_axis : bp.shared_tp_axis);
        const index_t per = tokens / g.size();
        (routed_scattered ? sh : r) += g.rank * per * H;
        n = per;
      }
    }
    return rounded(r, sh, n, s);
  }

  index_t out_tokens(const cuda::DeviceBuffer<float>& whole, const cuda::DeviceBuffer<float>& scattered,
                     const float* r) const {
    const auto& b = r == whole.data() ? whole : scattered;
    return static_cast<index_t>(b.size()) / std::max<index_t>(model_.hidden_size, 1);
  }

  /// The partial sums over `axis` finished: in place (all-reduce), or into `scattered`.
  template <class C>
  const float* reduce(C& comm, cuda::DeviceBuffer<float>& partial, cuda::DeviceBuffer<float>& scattered, index_t tokens,
                      std::string_view axis, PartialReduce how, std::string_view label) {
    if (how == PartialReduce::none || axis.empty()) return partial.data();
    const Group g = group(axis);
    if (how == PartialReduce::all_reduce) {
      comm.all_reduce(partial.span(), g, ReduceOp::sum, label);
      return partial.data();
    }
    enforce(moe_rules::sequence_shards_equal(axis, gathered_counts_));
    enforce(plan_rules::sequence_divisible(axis, tokens, g.size()));
    scattered.resize(partial.size() / static_cast<std::size_t>(g.size()));
    comm.reduce_scatter(std::span<const float>(partial.span()), scattered.span(), g, ReduceOp::sum, label);
    return scattered.data();
  }

  /// out = round(r) or round(round(r) + round(sh)), as the reference rounds.
  cuda::DeviceTensor<T> rounded(const float* r, const float* sh, index_t tokens, cudaStream_t s) {
    const index_t H = model_.hidden_size;
    cuda::DeviceTensor<T> out({tokens, H});
    auto* o = cuda::device_cast(out.data());
    using D = cuda::device_type_t<T>;
    if (sh)
      cuda::launch_elementwise(tokens * H, [&](unsigned b) {
        cuda::kernels::add_rounded<D><<<b, cuda::elementwise_threads, 0, s>>>(r, sh, tokens * H, o);
      });
    else
      cuda::launch_elementwise(tokens * H, [&](unsigned b) {
        cuda::kernels::round_to<D><<<b, cuda::elementwise_threads, 0, s>>>(r, tokens * H, o);
      });
    return out;
  }

  /// A prepare-input or -output hook on the token dim.
  template <class C>
  cuda::DeviceTensor<T> apply_hook(C& comm, const MoEHook& h, const cuda::DeviceTensor<T>& x, HookSide side) {
    const index_t H = model_.hidden_size;
    const std::string_view label = hook_label(side);
    const cudaStream_t s = comm.stream();
    if (h.from == Act::shard_seq && h.to == Act::replicate) {
      const Group g = group(h.axis);
      std::vector<index_t> counts(static_cast<std::size_t>(g.size()));
      const index_t mine = x.dim(0);
      comm.host().all_gather(std::span<const index_t>(&mine, 1), std::span<index_t>(counts), g, label);
      if (side == HookSide::entry) {
        gathered_counts_ = counts;
        routed_rows_ = routed_rows_.after_gather(counts, g.rank);
        if constexpr (block_plan.reduce_scatters())  // as on the CPU: refused before any row moves
          agree(comm.host(), moe_rules::sequence_shards_equal(h.axis, counts), comm.world_group());
      }
      index_t total = 0;
      for (index_t& c : counts) total += (c *= H);
      cuda::DeviceTensor<T> gathered({total / H, H});
      comm.all_gather_v(x.span(), gathered.span(), counts, g, label);
      return gathered;
    }
    cuda::DeviceTensor<T> out({x.dim(0), H});
    Chunk c{0, x.dim(0)};
    if (h.from == Act::replicate && h.to == Act::shard_seq) {
      const Group g = group(h.axis);
      c = chunk(x.dim(0), g.size(), g.rank);
      if (side == HookSide::entry) routed_rows_ = routed_rows_.after_split(c.offset, c.size);
      out.reshape({c.size, H});
    }
    if (c.size > 0)
      MESHPLAN_CUDA_CHECK(
          cudaMemcpyAsync(out.data(), x.data() + c.offset * H, out.span().size_bytes(), cudaMemcpyDeviceToDevice, s));
    return out;
  }

  /// The expert-output rows of one row type: in pair order for the combine, and (EP) in
  /// local-expert order and in arrival order.
  template <class Row>
  struct ExpertRows {
    cuda::DeviceBuffer<Row> y, grouped, arrival;
  };
  /// T rows, or fp32 partial sums under expert tensor parallelism.
  template <class Row>
  ExpertRows<Row>& expert_rows() {
    if constexpr (std::is_same_v<Row, float>)
      return partial_rows_;
    else
      return stored_rows_;
  }

  ModelSpec model_;
  Mesh mesh_;
  index_t rank_;
  cuda::DeviceMoEWeights<T> w_;
  index_t local_experts_ = 0;
  index_t expert_begin_ = 0;
  cudaStream_t last_stream_ = nullptr;
  index_t routed_tokens_ = 0;
  std::vector<index_t> expert_counts_;
  std::vector<index_t> rows_per_expert_;
  std::vector<index_t> gathered_counts_;
  RoutedRows routed_rows_;

  cuda::ExpertPath path_ = cuda::ExpertPath::cublas;
  cuda::CublasExperts experts_;
  cuda::FusedExperts fused_;
  cuda::DeviceBuffer<std::int32_t> ids_, sorted_ids_, order_, inverse_, counts_, offsets_;
  cuda::DeviceBuffer<float> weights_;
  cuda::DeviceBuffer<unsigned long long> status_;
  cuda::DeviceBuffer<int> bad_id_;
  cuda::DeviceBuffer<unsigned char> temp_;
  cuda::DeviceBuffer<cuda::kernels::RowBlock> table_;
  cuda::DeviceBuffer<T> send_, recv_, grouped_;
  ExpertRows<T> stored_rows_;
  ExpertRows<float> partial_rows_;
  cuda::DeviceBuffer<float> routed_, shared_, reduced_routed_, reduced_shared_;
};

}  // namespace meshplan
