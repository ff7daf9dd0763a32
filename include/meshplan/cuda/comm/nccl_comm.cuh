#pragma once
// NcclComm: ranks as processes, one GPU each, under mpirun (link meshplan::nccl and
// meshplan::mpi). Bootstrapped over MPI: rank 0 makes the ncclUniqueId, MPI broadcasts it,
// every rank joins the world communicator; that is how it spans nodes.
//
//   mp::MpiSession session(argc, argv);
//   mp::MpiComm mpi;
//   mp::cuda::NcclComm nccl(mpi, /*device=*/local_rank);
//   nccl.all_to_all_v(send, send_counts, recv, recv_counts, mesh.group<"ep">(nccl.rank()), "dispatch");
//
// Each group (the ranks along some mesh axes) gets its own NCCL communicator, split from
// the world communicator with ncclCommSplit the first time it is used. The split is
// collective over the whole world: every rank must reach its first collective on groups
// of the same axes together, as SPMD programs do.
//
// all_to_all_v is grouped ncclSend/ncclRecv (ncclAlltoAll when every count is equal). Sizes
// are agreed over MPI before NCCL moves anything, so a mismatch throws on every rank instead
// of hanging. Reductions are ordered by default (gather, then the reduction in group order on
// each rank, as ThreadComm and CudaLocalComm compute them: reproducible, and bit-identical to
// them); Options::ordered_reductions = false uses NCCL's own reductions instead (less traffic,
// NCCL's order). NCCL and CUDA errors become NcclError / CudaError naming the rank and the
// collective.

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "meshplan/comm/agree.hpp"
#include "meshplan/comm/collective_rules.hpp"
#include "meshplan/comm/communicator.hpp"
#include "meshplan/comm/mpi_comm.hpp"
#include "meshplan/cuda/comm/ordered_reduce.cuh"
#include "meshplan/cuda/core/buffer.cuh"
#include "meshplan/cuda/core/error.cuh"

namespace meshplan::cuda {

class NcclError : public std::runtime_error {
 public:
  NcclError(index_t rank, std::string_view what, ncclResult_t code)
      : std::runtime_error("meshplan: NCCL error on rank " + std::to_string(rank) + " in " + std::string(what) + ": " +
                           ncclGetErrorString(code)) {}
};

/// How NcclComm reduces (outside the class: a nested struct with default member
/// initializers cannot be a default argument inside its own class).
struct NcclOptions {
  /// Gather, then reduce in group order (bit-identical to ThreadComm and CudaLocalComm);
  /// false: NCCL's own reductions (less traffic, NCCL's order).
  bool ordered_reductions = true;
};

class NcclComm {
 public:
  using Options = NcclOptions;

  NcclComm(MpiComm& mpi, int device, Options options = {}) : mpi_(&mpi), options_(options) {
    MESHPLAN_CUDA_CHECK(cudaSetDevice(device));
    stream_ = std::make_unique<Stream>();
    ncclUniqueId id;
    if (mpi.rank() == 0) check(ncclGetUniqueId(&id), "bootstrap");
    auto bytes = std::span<std::int32_t>(reinterpret_cast<std::int32_t*>(&id), sizeof id / sizeof(std::int32_t));
    mpi.broadcast(bytes, 0, mpi.world_group(), "nccl bootstrap");
    check(ncclCommInitRank(&world_, static_cast<int>(mpi.size()), id, static_cast<int>(mpi.rank())), "bootstrap");
  }
  ~NcclComm() {
    for (auto& [members, c] : comms_) ncclCommDestroy(c);
    if (world_) ncclCommDestroy(world_);
  }
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  index_t rank() const noexcept { return mpi_->rank(); }
  index_t size() const noexcept { return mpi_->size(); }
  const CommStats& stats() const noexcept { return stats_; }
  CommStats& stats() noexcept { return stats_; }
  Group world_group() const { return mpi_->world_group(); }
  cudaStream_t stream() const noexcept { return stream_->get(); }
  /// The same ranks over MPI, for collectives on host memory.
  MpiComm& host() noexcept { return *mpi_; }

  template <CommElement T>
  void all_reduce(std::span<T> data, const Group& g, ReduceOp op = ReduceOp::sum, std::string_view label = {}) {
    agree_sizes(g, "all_reduce", label, data.size());
    if (options_.ordered_reductions || !nccl_type<T>() || op == ReduceOp::avg) {
      gathered_.resize(data.size_bytes() * static_cast<std::size_t>(g.size()));
      auto* all = reinterpret_cast<T*>(gathered_.data());
      raw_all_gather(data.data(), all, data.size_bytes(), g, "all_reduce");
      ordered(all, g.size(), static_cast<index_t>(data.size()), 0, static_cast<index_t>(data.size()), op, data.data());
    } else {
      check(ncclAllReduce(data.data(), data.data(), data.size(), *nccl_type<T>(), nccl_op(op), comm_for(g), stream()),
            "all_reduce");
    }
    stats_.record(label, traffic::all_reduce(g, data.size_bytes()));
  }

  template <CommElement T>
  void all_gather(std::span<const T> send, std::span<T> recv, const Group& g, std::string_view label = {}) {
    agree_sizes(g, "all_gather", label, send.size(),
                comm_rules::sizes_match("all_gather", label, g.rank, static_cast<index_t>(recv.size()),
                                        static_cast<index_t>(send.size()) * g.size()));
    raw_all_gather(send.data(), recv.data(), send.size_bytes(), g, "all_gather");
    stats_.record(label, traffic::all_gather(g, send.size_bytes()));
  }

  template <CommElement T>
  void all_gather_v(std::span<const T> send, std::span<T> recv, std::span<const index_t> recv_counts, const Group& g,
                    std::string_view label = {}) {
    index_t total = 0;
    for (index_t c : recv_counts) total += c;
    Message problem = first_of(
        {comm_rules::sizes_match("all_gather_v counts", label, g.rank, static_cast<index_t>(recv_counts.size()),
                                 g.size()),
         comm_rules::sizes_match("all_gather_v recv", label, g.rank, static_cast<index_t>(recv.size()), total)});
    agree(*mpi_, problem, g);
    // What every member sends, against what this one expects of each (over MPI, before NCCL).
    std::vector<index_t> sends(static_cast<std::size_t>(g.size()));
    const index_t mine = static_cast<index_t>(send.size());
    mpi_->all_gather(std::span<const index_t>(&mine, 1), std::span<index_t>(sends), g, "sizes");
    for (index_t m = 0; m < g.size() && problem.ok(); ++m)
      problem = comm_rules::sizes_match("all_gather_v", label, m, sends[static_cast<std::size_t>(m)],
                                        recv_counts[static_cast<std::size_t>(m)]);
    agree(*mpi_, problem, g);
    ncclComm_t c = comm_for(g);
    check(ncclGroupStart(), "all_gather_v");
    index_t at = 0;
    for (index_t m = 0; m < g.size(); ++m) {
      const auto count = static_cast<std::size_t>(recv_counts[static_cast<std::size_t>(m)]) * sizeof(T);
      if (!send.empty())
        check(ncclSend(send.data(), send.size_bytes(), ncclInt8, static_cast<int>(m), c, stream()), "all_gather_v");
      if (count > 0)
        check(ncclRecv(recv.data() + at, count, ncclInt8, static_cast<int>(m), c, stream()), "all_gather_v");
      at += recv_counts[static_cast<std::size_t>(m)];
    }
    check(ncclGroupEnd(), "all_gather_v");
    stats_.record(label, traffic::all_gather(g, send.size_bytes()));
  }

  template <CommElement T>
  void reduce_scatter(std::span<const T> send, std::span<T> recv, const Group& g, ReduceOp op = ReduceOp::sum,
                      std::string_view label = {}) {
    const index_t chunk = g.size() > 0 ? static_cast<index_t>(send.size()) / g.size() : 0;
    agree_sizes(
        g, "reduce_scatter", label, send.size(),
        first_of({comm_rules::divisible("reduce_scatter", static_cast<index_t>(send.size()), g.size()),
                  comm_rules::sizes_match("reduce_scatter", label, g.rank, static_cast<index_t>(recv.size()), chunk)}));
    if (options_.ordered_reductions || !nccl_type<T>() || op == ReduceOp::avg) {
      // Every member's chunk for me, then the ordered reduction.
      gathered_.resize(static_cast<std::size_t>(chunk) * sizeof(T) * static_cast<std::size_t>(g.size()));
      auto* mine = reinterpret_cast<T*>(gathered_.data());
      ncclComm_t c = comm_for(g);
      check(ncclGroupStart(), "reduce_scatter");
      for (index_t m = 0; m < g.size(); ++m) {
        check(ncclSend(send.data() + m * chunk, chunk * sizeof(T), ncclInt8, static_cast<int>(m), c, stream()),
              "reduce_scatter");
        check(ncclRecv(mine + m * chunk, chunk * sizeof(T), ncclInt8, static_cast<int>(m), c, stream()),
              "reduce_scatter");
      }
      check(ncclGroupEnd(), "reduce_scatter");
      ordered(mine, g.size(), chunk, 0, chunk, op, recv.data());
    } else {
      check(ncclReduceScatter(send.data(), recv.data(), static_cast<std::size_t>(chunk), *nccl_type<T>(), nccl_op(op),
                              comm_for(g), stream()),
            "reduce_scatter");
    }
    stats_.record(label, traffic::reduce_scatter(g, send.size_bytes()));
  }

  template <CommElement T>
  void all_to_all(std::span<const T> send, std::span<T> recv, const Group& g, std::string_view label = {}) {
    agree_sizes(g, "all_to_all", label, send.size(),
                first_of({comm_rules::divisible("all_to_all", static_cast<index_t>(send.size()), g.size()),
                          comm_rules::sizes_match("all_to_all", label, g.rank, static_cast<index_t>(recv.size()),
                                                  static_cast<index_t>(send.size()))}));
    const std::size_t chunk = g.size() > 0 ? send.size() / static_cast<std::size_t>(g.size()) : 0;
    check(ncclAlltoAll(send.data(), recv.data(), chunk * sizeof(T), ncclInt8, comm_for(g), stream()), "all_to_all");
    stats_.record(label, traffic::all_to_all(g, send.size_bytes()));
  }

  /// send_counts and recv_counts are host memory; the data is device memory.
  template <CommElement T>
  void all_to_all_v(std::span<const T> send, std::span<const index_t> send_counts, std::span<T> recv,
                    std::span<const index_t> recv_counts, const Group& g, std::string_view label = {}) {
    // The counts each member sends me, against those I expect (over MPI, on the host).
    Message problem = first_of({comm_rules::sizes_match("all_to_all_v send counts", label, g.rank,
                                                        static_cast<index_t>(send_counts.size()), g.size()),
                                comm_rules::sizes_match("all_to_all_v recv counts", label, g.rank,
                                                        static_cast<index_t>(recv_counts.size()), g.size())});
    agree(*mpi_, problem, g);
    std::vector<index_t> incoming(static_cast<std::size_t>(g.size()));
    mpi_->all_to_all(send_counts, std::span<index_t>(incoming), g, "counts");
    index_t total_send = 0, total_recv = 0;
    bool equal = true;
    for (index_t m = 0; m < g.size(); ++m) {
      total_send += send_counts[static_cast<std::size_t>(m)];
      total_recv += recv_counts[static_cast<std::size_t>(m)];
      equal = equal && send_counts[static_cast<std::size_t>(m)] == send_counts[0];
      if (problem.ok())
        problem = comm_rules::sizes_match("all_to_all_v", label, m, incoming[static_cast<std::size_t>(m)],
                                          recv_counts[static_cast<std::size_t>(m)]);
    }
    if (problem.ok())
      problem = first_of(
          {comm_rules::sizes_match("all_to_all_v send", label, g.rank, static_cast<index_t>(send.size()), total_send),
           comm_rules::sizes_match("all_to_all_v recv", label, g.rank, static_cast<index_t>(recv.size()), total_recv)});
    agree(*mpi_, problem, g);
    // Equal counts everywhere (one flag over MPI) take NCCL's all-to-all.
    std::vector<std::int32_t> all_equal = {equal && total_recv == total_send ? 1 : 0};
    mpi_->all_reduce(std::span<std::int32_t>(all_equal), g, ReduceOp::min, "counts");
    ncclComm_t c = comm_for(g);
    if (all_equal[0]) {
      check(ncclAlltoAll(send.data(), recv.data(), static_cast<std::size_t>(send_counts[0]) * sizeof(T), ncclInt8, c,
                         stream()),
            "all_to_all_v");
    } else {
      check(ncclGroupStart(), "all_to_all_v");
      index_t so = 0, ro = 0;
      for (index_t m = 0; m < g.size(); ++m) {
        const auto sc = static_cast<std::size_t>(send_counts[static_cast<std::size_t>(m)]);
        const auto rc = static_cast<std::size_t>(recv_counts[static_cast<std::size_t>(m)]);
        if (sc > 0)
          check(ncclSend(send.data() + so, sc * sizeof(T), ncclInt8, static_cast<int>(m), c, stream()), "all_to_all_v");
        if (rc > 0)
          check(ncclRecv(recv.data() + ro, rc * sizeof(T), ncclInt8, static_cast<int>(m), c, stream()), "all_to_all_v");
        so += static_cast<index_t>(sc);
        ro += static_cast<index_t>(rc);
      }
      check(ncclGroupEnd(), "all_to_all_v");
    }
    stats_.record(label, traffic::all_to_all_v(g, send_counts, sizeof(T)));
  }

  template <CommElement T>
  void broadcast(std::span<T> data, index_t root, const Group& g, std::string_view label = {}) {
    agree_sizes(g, "broadcast", label, data.size(), comm_rules::root_in_group(root, g.size()));
    check(ncclBroadcast(data.data(), data.data(), data.size_bytes(), ncclInt8, static_cast<int>(root), comm_for(g),
                        stream()),
          "broadcast");
    stats_.record(label, traffic::broadcast(g, root, data.size_bytes()));
  }

  void barrier(const Group& g) {
    stream_->synchronize();
    mpi_->barrier(g);
  }

 private:

  void check(ncclResult_t code, std::string_view what) const {
    if (code != ncclSuccess) throw NcclError(rank(), what, code);
  }

  template <class T>
  static const ncclDataType_t* nccl_type() noexcept {
    static constexpr ncclDataType_t f32 = ncclFloat32, bf16 = ncclBfloat16, i32 = ncclInt32, i64 = ncclInt64;
    if constexpr (std::is_same_v<T, float>)
      return &f32;
    else if constexpr (std::is_same_v<T, bfloat16>)
      return &bf16;
    else if constexpr (std::is_same_v<T, std::int32_t>)
      return &i32;
    else if constexpr (std::is_same_v<T, index_t>)
      return &i64;
    else
      return nullptr;
  }
  static ncclRedOp_t nccl_op(ReduceOp op) noexcept {
    switch (op) {
      case ReduceOp::max:
        return ncclMax;
      case ReduceOp::min:
        return ncclMin;
      default:
        return ncclSum;
    }
  }

  /// Sizes equal on every member (and `local`, a rank's own problem), agreed over MPI.
  void agree_sizes(const Group& g, std::string_view what, std::string_view label, std::size_t elements,
                   const Message& local = {}) {
    agree(*mpi_, local, g);
    std::vector<index_t> all(static_cast<std::size_t>(g.size()));
    const index_t mine = static_cast<index_t>(elements);
    mpi_->all_gather(std::span<const index_t>(&mine, 1), std::span<index_t>(all), g, "sizes");
    for (index_t m = 0; m < g.size(); ++m)
      enforce(
          comm_rules::sizes_match(what, label, m, all[static_cast<std::size_t>(m)], mine));  // same table everywhere
  }

  void raw_all_gather(const void* send, void* recv, std::size_t bytes, const Group& g, std::string_view what) {
    check(ncclAllGather(send, recv, bytes, ncclInt8, comm_for(g), stream()), what);
  }

  /// The ordered reduction of `members` consecutive chunks of `stride` elements in `all`.
  template <class T>
  void ordered(const T* all, index_t members, index_t n, index_t offset, index_t stride, ReduceOp op, T* out) {
    std::vector<const T*> pointers;
    for (index_t m = 0; m < members; ++m) pointers.push_back(all + m * stride);
    pointer_table_.resize(pointers.size() * sizeof(const T*));
    MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(pointer_table_.data(), pointers.data(), pointer_table_.bytes(),
                                        cudaMemcpyHostToDevice, stream()));
    launch_ordered_reduce(reinterpret_cast<const T* const*>(pointer_table_.data()), members, n, offset, op, out,
                          stream());
    stream_->synchronize();  // `pointers` is pageable host memory read by the copy
  }

  /// The communicator of a group, split from the world communicator on first use.
  ncclComm_t comm_for(const Group& g) {
    enforce(comm_rules::member_of_group(rank(), g));
    // The world communicator serves a group only with the world's members in rank order:
    // NCCL peers are positions, and a group over axes in another order permutes them.
    bool world_order = g.size() == size();
    for (index_t m = 0; world_order && m < g.size(); ++m) world_order = g.members[static_cast<std::size_t>(m)] == m;
    if (world_order) return world_;
    auto it = comms_.find(g.members);
    if (it != comms_.end()) return it->second;
    ncclComm_t c;
    // Color: the group's first member (unique per group); key: the position in the group.
    check(ncclCommSplit(world_, static_cast<int>(g.members[0]), static_cast<int>(g.rank), &c, nullptr), "group split");
    comms_.emplace(g.members, c);
    return c;
  }

  MpiComm* mpi_;
  Options options_;
  std::unique_ptr<Stream> stream_;
  ncclComm_t world_ = nullptr;
  std::map<std::vector<index_t>, ncclComm_t> comms_;
  DeviceBuffer<unsigned char> gathered_;
  DeviceBuffer<unsigned char> pointer_table_;
  CommStats stats_;
};

}  // namespace meshplan::cuda
