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
//
// Failure (collective_failure.cuh): a collective returns once it has completed on the
// device. NcclComm waits for it by polling an event recorded after it, the communicator's
// asynchronous error and a timeout (Options::timeout; by default MESHPLAN_NCCL_TIMEOUT_S
// seconds, or 10 minutes). Not a non-blocking communicator: that would only make the
// enqueue calls poll, while a peer that dies or never arrives leaves the collective's
// kernel waiting on the device, which only a wait with a timeout notices. Any error,
// timeout or exception from the enqueue to the completion (a group is always ended first)
// aborts every NCCL communicator of the rank (ncclCommAbort) and throws: the rank does not
// keep half-done collectives that its peers wait on, and its queued NCCL kernels exit.
// Later collectives on an aborted NcclComm throw CommFailure with the first error. The
// size checks agreed over MPI before NCCL moves anything are refusals, not failures: every
// rank throws the same RuleViolation and the communicators stay usable.
//
// Waiting for each collective makes it synchronous for the host, as CudaLocalComm's are;
// the block synchronizes after routing anyway (the host sizes the exchange), and a
// collective left in flight would hang later in a plain cudaStreamSynchronize, where
// nothing polls, instead of failing here with a message.

#include "meshplan/core/detail/public_begin.hpp"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "meshplan/comm/agree.hpp"
#include "meshplan/comm/detail/collective_checks.hpp"
#include "meshplan/comm/detail/collective_rules.hpp"
#include "meshplan/comm/communicator.hpp"
#include "meshplan/comm/mpi_comm.hpp"
#include "meshplan/cuda/comm/collective_failure.cuh"
#include "meshplan/cuda/comm/detail/device_mover.cuh"
#include "meshplan/cuda/core/buffer.cuh"
#include "meshplan/cuda/core/error.cuh"

namespace meshplan::cuda {

class NcclError : public CommFailure {
 public:
  NcclError(index_t rank, std::string_view what, ncclResult_t code)
      : CommFailure("meshplan: NCCL error on rank " + std::to_string(rank) + " in " + std::string(what) + ": " +
                    ncclGetErrorString(code)) {}
};

/// How NcclComm reduces (outside the class: a nested struct with default member
/// initializers cannot be a default argument inside its own class).
struct NcclOptions {
  /// Gather, then reduce in group order (bit-identical to ThreadComm and CudaLocalComm);
  /// false: NCCL's own reductions (less traffic, NCCL's order).
  bool ordered_reductions = true;
  /// How long this rank waits for a collective to complete before it takes a peer for
  /// failed, aborts its communicators and throws CommFailure. By default
  /// MESHPLAN_NCCL_TIMEOUT_S (seconds) when set, else 10 minutes.
  std::chrono::milliseconds timeout = collective_timeout();
};

class NcclComm {
 public:
  using Options = NcclOptions;

  NcclComm(MpiComm& mpi, int device, Options options = {}) : mpi_(&mpi), options_(options), mover_(device) {
    ncclUniqueId id;
    if (mpi.rank() == 0) check(ncclGetUniqueId(&id), "bootstrap");
    auto bytes = std::span<std::int32_t>(reinterpret_cast<std::int32_t*>(&id), sizeof id / sizeof(std::int32_t));
    mpi.broadcast(bytes, 0, mpi.world_group(), "nccl bootstrap");
    check(ncclCommInitRank(&world_, static_cast<int>(mpi.size()), id, static_cast<int>(mpi.rank())), "bootstrap");
    MESHPLAN_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
  }
  ~NcclComm() {
    // After an abort there is nothing left to destroy (ncclCommAbort frees it).
    for (auto& [members, c] : comms_) ncclCommDestroy(c);
    if (world_) ncclCommDestroy(world_);
    if (done_) cudaEventDestroy(done_);
  }
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  index_t rank() const noexcept { return mpi_->rank(); }
  index_t size() const noexcept { return mpi_->size(); }
  const CommStats& stats() const noexcept { return stats_; }
  CommStats& stats() noexcept { return stats_; }
  Group world_group() const { return mpi_->world_group(); }
  cudaStream_t stream() const noexcept { return mover_.stream(); }
  /// The same ranks over MPI, for collectives on host memory.
  MpiComm& host() noexcept { return *mpi_; }
  /// Whether the communicators were aborted after a failure (later collectives throw).
  bool aborted() const noexcept { return !aborted_after_.empty(); }

  /// Aborts every NCCL communicator of this rank (ncclCommAbort): its queued NCCL kernels
  /// exit and its peers' connections close. Done by the collectives on any failure; for a
  /// caller that fails outside them while peers may wait in a collective.
  void abort(std::string_view why) noexcept {
    if (aborted()) return;
    aborted_after_ = why.empty() ? std::string("an abort") : std::string(why);
    for (auto& [members, c] : comms_) (void)ncclCommAbort(c);
    comms_.clear();
    if (world_) (void)ncclCommAbort(world_);
    world_ = nullptr;
  }

  template <CommElement T>
  void all_reduce(std::span<T> data, const Group& g, ReduceOp op = ReduceOp::sum, std::string_view label = {}) {
    const auto call = CollectiveCall::all_reduce(g, label, data);
    collective(g, call, [&](ncclComm_t c) {
      if (ordered<T>(op)) {
        gathered_.resize(data.size_bytes() * static_cast<std::size_t>(g.size()));
        const auto* all = reinterpret_cast<T*>(gathered_.data());
        check(ncclAllGather(data.data(), gathered_.data(), data.size_bytes(), ncclInt8, c, stream()), "all_reduce");
        mover_.reduce(
            data, g.size(), [&](index_t m) { return all + static_cast<std::size_t>(m) * data.size(); }, op);
      } else {
        check(ncclAllReduce(data.data(), data.data(), data.size(), *nccl_type<T>(), nccl_op(op), c, stream()),
              "all_reduce");
      }
    });
  }

  template <CommElement T>
  void all_gather(std::span<const T> send, std::span<T> recv, const Group& g, std::string_view label = {}) {
    const auto call = CollectiveCall::all_gather(g, label, send, recv);
    collective(g, call, [&](ncclComm_t c) {
      check(ncclAllGather(send.data(), recv.data(), send.size_bytes(), ncclInt8, c, stream()), "all_gather");
    });
  }

  template <CommElement T>
  void all_gather_v(std::span<const T> send, std::span<T> recv, std::span<const index_t> recv_counts, const Group& g,
                    std::string_view label = {}) {
    const auto call = CollectiveCall::all_gather_v(g, label, send, recv, recv_counts);
    collective(g, call, [&](ncclComm_t c) {
      grouped("all_gather_v", [&] {
        index_t at = 0;
        for (index_t m = 0; m < g.size(); ++m) {
          const auto count = static_cast<std::size_t>(recv_counts[static_cast<std::size_t>(m)]) * sizeof(T);
          if (!send.empty())
            check(ncclSend(send.data(), send.size_bytes(), ncclInt8, static_cast<int>(m), c, stream()), "all_gather_v");
          if (count > 0)
            check(ncclRecv(recv.data() + at, count, ncclInt8, static_cast<int>(m), c, stream()), "all_gather_v");
          at += recv_counts[static_cast<std::size_t>(m)];
        }
      });
    });
  }

  template <CommElement T>
  void reduce_scatter(std::span<const T> send, std::span<T> recv, const Group& g, ReduceOp op = ReduceOp::sum,
                      std::string_view label = {}) {
    const auto call = CollectiveCall::reduce_scatter(g, label, send, recv);
    collective(g, call, [&](ncclComm_t c) {
      const index_t chunk = call.chunk();
      if (ordered<T>(op)) {
        // Every member's chunk for me, then the ordered reduction.
        gathered_.resize(static_cast<std::size_t>(chunk) * sizeof(T) * static_cast<std::size_t>(g.size()));
        auto* mine = reinterpret_cast<T*>(gathered_.data());
        grouped("reduce_scatter", [&] {
          for (index_t m = 0; m < g.size(); ++m) {
            check(ncclSend(send.data() + m * chunk, chunk * sizeof(T), ncclInt8, static_cast<int>(m), c, stream()),
                  "reduce_scatter");
            check(ncclRecv(mine + m * chunk, chunk * sizeof(T), ncclInt8, static_cast<int>(m), c, stream()),
                  "reduce_scatter");
          }
        });
        mover_.reduce(
            recv, g.size(), [&](index_t m) { return static_cast<const T*>(mine + m * chunk); }, op);
      } else {
        check(ncclReduceScatter(send.data(), recv.data(), static_cast<std::size_t>(chunk), *nccl_type<T>(), nccl_op(op),
                                c, stream()),
              "reduce_scatter");
      }
    });
  }

  template <CommElement T>
  void all_to_all(std::span<const T> send, std::span<T> recv, const Group& g, std::string_view label = {}) {
    const auto call = CollectiveCall::all_to_all(g, label, send, recv);
    collective(g, call, [&](ncclComm_t c) {
      const auto chunk = static_cast<std::size_t>(call.chunk());
      check(ncclAlltoAll(send.data(), recv.data(), chunk * sizeof(T), ncclInt8, c, stream()), "all_to_all");
    });
  }

  /// send_counts and recv_counts are host memory; the data is device memory.
  template <CommElement T>
  void all_to_all_v(std::span<const T> send, std::span<const index_t> send_counts, std::span<T> recv,
                    std::span<const index_t> recv_counts, const Group& g, std::string_view label = {}) {
    const auto call = CollectiveCall::all_to_all_v(g, label, send, send_counts, recv, recv_counts);
    collective(g, call, [&](ncclComm_t c) {
      bool equal = true;
      for (index_t m = 0; m < g.size(); ++m)
        equal = equal && send_counts[static_cast<std::size_t>(m)] == send_counts[0] &&
                recv_counts[static_cast<std::size_t>(m)] == send_counts[0];
      // Equal counts everywhere (one flag over MPI) take NCCL's all-to-all.
      std::vector<std::int32_t> all_equal = {equal ? 1 : 0};
      mpi_->all_reduce(std::span<std::int32_t>(all_equal), g, ReduceOp::min, "counts");
      if (all_equal[0]) {
        check(ncclAlltoAll(send.data(), recv.data(), static_cast<std::size_t>(send_counts[0]) * sizeof(T), ncclInt8, c,
                           stream()),
              "all_to_all_v");
      } else {
        grouped("all_to_all_v", [&] {
          index_t so = 0, ro = 0;
          for (index_t m = 0; m < g.size(); ++m) {
            const auto sc = static_cast<std::size_t>(send_counts[static_cast<std::size_t>(m)]);
            const auto rc = static_cast<std::size_t>(recv_counts[static_cast<std::size_t>(m)]);
            if (sc > 0)
              check(ncclSend(send.data() + so, sc * sizeof(T), ncclInt8, static_cast<int>(m), c, stream()),
                    "all_to_all_v");
            if (rc > 0)
              check(ncclRecv(recv.data() + ro, rc * sizeof(T), ncclInt8, static_cast<int>(m), c, stream()),
                    "all_to_all_v");
            so += static_cast<index_t>(sc);
            ro += static_cast<index_t>(rc);
          }
        });
      }
    });
  }

  template <CommElement T>
  void broadcast(std::span<T> data, index_t root, const Group& g, std::string_view label = {}) {
    const auto call = CollectiveCall::broadcast(g, label, data, root);
    collective(g, call, [&](ncclComm_t c) {
      check(ncclBroadcast(data.data(), data.data(), data.size_bytes(), ncclInt8, static_cast<int>(root), c, stream()),
            "broadcast");
    });
  }

  void barrier(const Group& g) {
    mover_.finish();
    mpi_->barrier(g);
  }

 private:
  void check(ncclResult_t code, std::string_view what) const {
    if (code != ncclSuccess) throw NcclError(rank(), what, code);
  }

  /// body() between ncclGroupStart and ncclGroupEnd; the group is ended even when body
  /// throws (a group left open would hold every later NCCL call of this thread).
  template <class Body>
  void grouped(std::string_view what, Body&& body) {
    check(ncclGroupStart(), what);
    GroupGuard group([] { return ncclGroupEnd(); });
    body();
    check(group.close(), what);
  }

  /// What await_completion polls for the collective just enqueued on `c`.
  struct Completion {
    cudaEvent_t done_event;
    ncclComm_t comm;
    PollPause rest;
    bool done() const {
      const cudaError_t state = cudaEventQuery(done_event);
      if (state == cudaErrorNotReady) return false;
      MESHPLAN_CUDA_CHECK(state);
      return true;
    }
    std::string async_error() const {
      ncclResult_t state = ncclSuccess;
      const ncclResult_t asked = ncclCommGetAsyncError(comm, &state);
      if (asked != ncclSuccess) state = asked;
      if (state == ncclSuccess || state == ncclInProgress) return {};
      std::string text = ncclGetErrorString(state);
      if (const char* last = ncclGetLastError(comm); last && *last) text += std::string(" (") + last + ")";
      return text;
    }
    static std::chrono::steady_clock::time_point now() noexcept { return std::chrono::steady_clock::now(); }
    void pause() { rest(); }
  };

  /// Waits for everything enqueued on the stream (the collective on `c`) to complete.
  void wait(ncclComm_t c, const CollectiveCall& call) {
    MESHPLAN_CUDA_CHECK(cudaEventRecord(done_, stream()));
    Completion probe{done_, c, {}};
    await_completion(probe, options_.timeout, rank(),
                     std::string(call.name()) + " '" + std::string(call.label()) + "'");
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

  /// Whether a reduction gathers and reduces in group order (the default, and the only way
  /// for avg, which NCCL's reductions do not give in the same order) instead of NCCL's own.
  template <class T>
  bool ordered(ReduceOp op) const noexcept {
    return options_.ordered_reductions || !nccl_type<T>() || op == ReduceOp::avg;
  }

  /// The shared checks of the call (collective_checks.hpp), agreed over MPI before NCCL
  /// moves anything, so a mismatch throws on every rank instead of hanging in NCCL; then
  /// `move(comm)` with the group's NCCL communicator, its completion awaited (any failure
  /// from the enqueue on aborts the communicators), and the bytes counted.
  template <class Move>
  void collective(const Group& g, const CollectiveCall& call, Move&& move) {
    check_among_processes(
        call,
        [&](std::span<const index_t> mine, std::span<index_t> theirs) { mpi_->all_to_all(mine, theirs, g, "sizes"); },
        [&](const Message& problem) { agree(*mpi_, problem, g); });
    if (aborted())
      throw CommFailure("meshplan: rank " + std::to_string(rank()) + " cannot run " + std::string(call.name()) + " '" +
                        std::string(call.label()) + "': its NCCL communicators were aborted after " + aborted_after_);
    abort_on_failure(
        [&] {
          const ncclComm_t c = comm_for(g);
          move(c);
          wait(c, call);
        },
        [&](std::string_view why) { abort(why); });
    stats_.record(call.label(), call.bytes());
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
  DeviceMover mover_;  // the rank's stream on `device`, and the ordered reductions
  ncclComm_t world_ = nullptr;
  std::map<std::vector<index_t>, ncclComm_t> comms_;
  cudaEvent_t done_ = nullptr;  // recorded after each collective, polled by wait()
  std::string aborted_after_;   // the failure that aborted the communicators (empty: none)
  // Regrown in the stream's order: the previous collective's kernels may still read it
  // only in stream order, which is where its free is queued.
  DeviceBuffer<unsigned char> gathered_{0, mover_.stream()};
  CommStats stats_;
};

}  // namespace meshplan::cuda

#include "meshplan/core/detail/public_end.hpp"
