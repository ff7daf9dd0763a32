#pragma once
// P2PEngine: the collectives of ranks that are threads of one process and read each other's
// buffers directly, the logic ThreadComm (host memory) and CudaLocalComm (device memory on
// one GPU) share. What differs between them is the Mover, which does the copying and the
// reducing (host_mover.hpp; cuda/comm/detail/device_mover.cuh).
//
// Every collective runs the same steps:
//   1. check this rank's own arguments (collective_checks.hpp) and finish its pending work,
//      so that its buffers hold their final values;
//   2. publish its send buffer (and all_to_all_v's send counts) in its Rendezvous slot and
//      wait for the group;
//   3. check every member's offer (read from its slot) against what this rank expects;
//   4. the collective's plan: the copies (or the ordered reduction) from the peers' buffers
//      into this rank's, asked of the mover;
//   5. finish them, and wait for the group again before anyone may reuse a buffer;
//   6. throw what step 3 or 4 found, or count the bytes in CommStats.
// A rank that throws aborts the Rendezvous: the others, waiting in a collective, throw
// CommAborted, and Rendezvous::run rethrows the cause. A rank throws only where no peer can
// be reading its buffers: before it publishes them (step 1) or after the second wait (6);
// where every member brings the same size, a mismatch is seen, and thrown, by all of them.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cstddef>
#include <exception>
#include <span>
#include <string_view>
#include <utility>

#include "meshplan/comm/detail/collective_checks.hpp"
#include "meshplan/comm/detail/collective_rules.hpp"
#include "meshplan/comm/communicator.hpp"
#include "meshplan/comm/detail/rendezvous.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/mesh/group.hpp"
#include "meshplan/placement/placement.hpp"

namespace meshplan {

template <class Mover>
class P2PEngine {
 public:
  P2PEngine(Rendezvous& world, index_t rank, Mover mover = {})
      : world_(&world), rank_(rank), mover_(std::move(mover)) {}

  index_t rank() const noexcept { return rank_; }
  index_t size() const noexcept { return world_->size(); }
  const CommStats& stats() const noexcept { return stats_; }
  CommStats& stats() noexcept { return stats_; }
  Group world_group() const { return whole_world(size(), rank_); }

  template <CommElement T>
  void all_reduce(std::span<T> data, const Group& g, ReduceOp op = ReduceOp::sum, std::string_view label = {}) {
    // The peers read this rank's values while it writes the reduction into `data`: they
    // read a staged copy.
    const T* staged = mover_.stage(std::span<const T>(data));
    exchange<T>(CollectiveCall::all_reduce(g, label, data), g, staged, data.size(), nullptr,
                [&](auto peer) { mover_.reduce(data, g.size(), peer, op); });
  }

  template <CommElement T>
  void all_gather(std::span<const T> send, std::span<T> recv, const Group& g, std::string_view label = {}) {
    exchange<T>(CollectiveCall::all_gather(g, label, send, recv), g, send.data(), send.size(), nullptr, [&](auto peer) {
      for (index_t m = 0; m < g.size(); ++m)
        mover_.copy(recv.data() + static_cast<std::size_t>(m) * send.size(), peer(m), send.size());
    });
  }

  template <CommElement T>
  void all_gather_v(std::span<const T> send, std::span<T> recv, std::span<const index_t> recv_counts, const Group& g,
                    std::string_view label = {}) {
    exchange<T>(CollectiveCall::all_gather_v(g, label, send, recv, recv_counts), g, send.data(), send.size(), nullptr,
                [&](auto peer) {
                  std::size_t at = 0;
                  for (index_t m = 0; m < g.size(); ++m) {
                    const auto count = static_cast<std::size_t>(recv_counts[static_cast<std::size_t>(m)]);
                    mover_.copy(recv.data() + at, peer(m), count);
                    at += count;
                  }
                });
  }

  template <CommElement T>
  void reduce_scatter(std::span<const T> send, std::span<T> recv, const Group& g, ReduceOp op = ReduceOp::sum,
                      std::string_view label = {}) {
    const auto call = CollectiveCall::reduce_scatter(g, label, send, recv);
    const auto mine = static_cast<std::size_t>(g.rank * call.chunk());  // where my chunk starts in every send
    exchange<T>(call, g, send.data(), send.size(), nullptr, [&](auto peer) {
      mover_.reduce(
          recv, g.size(), [&](index_t m) { return peer(m) + mine; }, op);
    });
  }

  template <CommElement T>
  void all_to_all(std::span<const T> send, std::span<T> recv, const Group& g, std::string_view label = {}) {
    const auto call = CollectiveCall::all_to_all(g, label, send, recv);
    const auto chunk = static_cast<std::size_t>(call.chunk());
    exchange<T>(call, g, send.data(), send.size(), nullptr, [&](auto peer) {
      for (index_t m = 0; m < g.size(); ++m)
        mover_.copy(recv.data() + static_cast<std::size_t>(m) * chunk,
                    peer(m) + static_cast<std::size_t>(g.rank) * chunk, chunk);
    });
  }

  /// The counts are host memory; the data is the mover's kind of memory.
  template <CommElement T>
  void all_to_all_v(std::span<const T> send, std::span<const index_t> send_counts, std::span<T> recv,
                    std::span<const index_t> recv_counts, const Group& g, std::string_view label = {}) {
    exchange<T>(CollectiveCall::all_to_all_v(g, label, send, send_counts, recv, recv_counts), g, send.data(),
                send.size(), send_counts.data(), [&](auto peer) {
                  std::size_t out = 0;
                  for (index_t m = 0; m < g.size(); ++m) {
                    // Where my part starts in member m's send buffer: after its parts for
                    // the members before me.
                    const index_t* counts = slot(g, m).counts;
                    std::size_t offset = 0;
                    for (index_t q = 0; q < g.rank; ++q) offset += static_cast<std::size_t>(counts[q]);
                    const auto count = static_cast<std::size_t>(counts[g.rank]);
                    mover_.copy(recv.data() + out, peer(m) + offset, count);
                    out += count;
                  }
                });
  }

  /// Only the root's buffer is read and only the others' are written, so nothing is staged.
  template <CommElement T>
  void broadcast(std::span<T> data, index_t root, const Group& g, std::string_view label = {}) {
    exchange<T>(CollectiveCall::broadcast(g, label, data, root), g, data.data(), data.size(), nullptr, [&](auto peer) {
      if (g.rank != root) mover_.copy(data.data(), peer(root), data.size());
    });
  }

  void barrier(const Group& g) {
    enforce(comm_rules::member_of_group(rank_, g));
    mover_.finish();  // what a rank enqueued before a barrier is done when the barrier returns
    world_->wait(g);
  }

 protected:
  Mover& mover() noexcept { return mover_; }
  const Mover& mover() const noexcept { return mover_; }

 private:
  const Rendezvous::Slot& slot(const Group& g, index_t member) const {
    return world_->slot(g.members[static_cast<std::size_t>(member)]);
  }

  /// Steps 1 to 6 above; `plan(peer)` asks the mover for the copies, where peer(m) is where
  /// member m's published send buffer starts.
  template <class T, class Plan>
  void exchange(const CollectiveCall& call, const Group& g, const T* send, std::size_t elements, const index_t* counts,
                Plan&& plan) {
    enforce(comm_rules::member_of_group(rank_, g));
    enforce(call.problem());
    mover_.finish();
    world_->slot(rank_) = {send, elements, sizeof(T), counts};
    world_->wait(g);
    // From here on the peers may be reading this rank's buffers (and its counts), so it
    // does not leave before the second wait, not even to refuse: a problem found now is
    // thrown after it.
    const Message problem = call.peers([&](index_t m) {
      const Rendezvous::Slot& s = slot(g, m);
      const index_t offered = s.counts ? s.counts[g.rank] : static_cast<index_t>(s.send_elements);
      return Offer{offered, static_cast<index_t>(s.element_bytes)};
    });
    std::exception_ptr failed;
    if (problem.ok()) {
      try {
        plan([&](index_t m) { return static_cast<const T*>(slot(g, m).send); });
        mover_.finish();
      } catch (...) {
        failed = std::current_exception();
      }
    }
    world_->wait(g);
    if (failed) std::rethrow_exception(failed);
    enforce(problem);
    stats_.record(call.label(), call.bytes());
  }

  Rendezvous* world_;
  index_t rank_;
  Mover mover_;
  CommStats stats_;
};

}  // namespace meshplan
