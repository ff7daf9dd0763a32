#pragma once
// ThreadComm: N ranks as threads of one process, for tests and for the demo on a machine
// without GPUs.
//
//   mp::ThreadWorld world(8);
//   world.run([&](mp::ThreadComm& comm) {          // on 8 threads; comm.rank() is 0..7
//     auto ep = mesh.group<"ep">(comm.rank());
//     comm.all_to_all_v(send, send_counts, recv, recv_counts, ep, "dispatch");
//   });                                            // rethrows the first exception of any rank
//
// A collective publishes each member's buffers, waits for the group, lets every member read
// its peers' buffers directly, and waits again before anyone may reuse them (rendezvous.hpp:
// a failing rank releases the others).

#include <concepts>
#include <cstddef>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

#include "meshplan/comm/collective_rules.hpp"
#include "meshplan/comm/communicator.hpp"
#include "meshplan/comm/ordered_reduce.hpp"
#include "meshplan/comm/rendezvous.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/mesh/group.hpp"

namespace meshplan {

class ThreadComm;

/// N ranks as threads, meeting through a Rendezvous.
class ThreadWorld : public Rendezvous {
 public:
  explicit ThreadWorld(index_t size) : Rendezvous(size) {}

  /// Runs fn(ThreadComm&) once per rank, each on its own thread (see Rendezvous::run).
  template <class F>
  void run(F&& fn);
};

class ThreadComm {
 public:
  /// Any Rendezvous will do: CudaLocalComm lends its world to a ThreadComm for host-side
  /// exchanges among the same ranks.
  ThreadComm(Rendezvous& world, index_t rank) : world_(&world), rank_(rank) {}

  index_t rank() const noexcept { return rank_; }
  index_t size() const noexcept { return world_->size(); }
  const CommStats& stats() const noexcept { return stats_; }
  CommStats& stats() noexcept { return stats_; }

  /// The group of every rank, in rank order.
  Group world_group() const {
    Group g;
    for (index_t r = 0; r < size(); ++r) g.members.push_back(r);
    g.rank = rank_;
    return g;
  }

  template <CommElement T>
  void all_reduce(std::span<T> data, const Group& g, ReduceOp op = ReduceOp::sum, std::string_view label = {}) {
    std::vector<T> copy(data.begin(), data.end());  // peers read this while we write `data`
    collective<T>(g, copy.data(), copy.size(), nullptr, [&](auto peer) {
      for (index_t m = 0; m < g.size(); ++m) check_size("all_reduce", label, m, peer(m).size(), data.size());
      detail::ordered_reduce<T>(data, g.size(), peer, op);
    });
    stats_.record(label, traffic::all_reduce(g, data.size_bytes()));
  }

  template <CommElement T>
  void all_gather(std::span<const T> send, std::span<T> recv, const Group& g, std::string_view label = {}) {
    collective<T>(g, send.data(), send.size(), nullptr, [&](auto peer) {
      for (index_t m = 0; m < g.size(); ++m) check_size("all_gather", label, m, peer(m).size(), send.size());
      check_size("all_gather", label, g.rank, static_cast<index_t>(recv.size()),
                 static_cast<index_t>(send.size()) * g.size());
      for (index_t m = 0; m < g.size(); ++m)
        std::memcpy(recv.data() + m * send.size(), peer(m).data(), bytes(send));
    });
    stats_.record(label, traffic::all_gather(g, send.size_bytes()));
  }

  template <CommElement T>
  void all_gather_v(std::span<const T> send, std::span<T> recv, std::span<const index_t> recv_counts, const Group& g,
                    std::string_view label = {}) {
    check_size("all_gather_v counts", label, g.rank, static_cast<index_t>(recv_counts.size()), g.size());
    collective<T>(g, send.data(), send.size(), nullptr, [&](auto peer) {
      index_t offset = 0;
      for (index_t m = 0; m < g.size(); ++m) {
        check_size("all_gather_v", label, m, peer(m).size(), recv_counts[static_cast<std::size_t>(m)]);
        offset += recv_counts[static_cast<std::size_t>(m)];
      }
      check_size("all_gather_v", label, g.rank, static_cast<index_t>(recv.size()), offset);
      offset = 0;
      for (index_t m = 0; m < g.size(); ++m) {
        std::memcpy(recv.data() + offset, peer(m).data(), bytes(peer(m)));
        offset += recv_counts[static_cast<std::size_t>(m)];
      }
    });
    stats_.record(label, traffic::all_gather(g, send.size_bytes()));
  }

  template <CommElement T>
  void reduce_scatter(std::span<const T> send, std::span<T> recv, const Group& g, ReduceOp op = ReduceOp::sum,
                      std::string_view label = {}) {
    enforce(comm_rules::divisible("reduce_scatter", static_cast<index_t>(send.size()), g.size()));
    const std::size_t chunk = send.size() / static_cast<std::size_t>(g.size());
    collective<T>(g, send.data(), send.size(), nullptr, [&](auto peer) {
      for (index_t m = 0; m < g.size(); ++m) check_size("reduce_scatter", label, m, peer(m).size(), send.size());
      check_size("reduce_scatter", label, g.rank, static_cast<index_t>(recv.size()), static_cast<index_t>(chunk));
      detail::ordered_reduce<T>(
          recv, g.size(), [&](index_t m) { return peer(m).subspan(static_cast<std::size_t>(g.rank) * chunk, chunk); },
          op);
    });
    stats_.record(label, traffic::reduce_scatter(g, send.size_bytes()));
  }

  template <CommElement T>
  void all_to_all(std::span<const T> send, std::span<T> recv, const Group& g, std::string_view label = {}) {
    enforce(comm_rules::divisible("all_to_all", static_cast<index_t>(send.size()), g.size()));
    const std::size_t chunk = send.size() / static_cast<std::size_t>(g.size());
    collective<T>(g, send.data(), send.size(), nullptr, [&](auto peer) {
      for (index_t m = 0; m < g.size(); ++m) check_size("all_to_all", label, m, peer(m).size(), send.size());
      check_size("all_to_all", label, g.rank, static_cast<index_t>(recv.size()), static_cast<index_t>(send.size()));
      for (index_t m = 0; m < g.size(); ++m)
        std::memcpy(recv.data() + static_cast<std::size_t>(m) * chunk,
                    peer(m).data() + static_cast<std::size_t>(g.rank) * chunk, chunk * sizeof(T));
    });
    stats_.record(label, traffic::all_to_all(g, send.size_bytes()));
  }

  template <CommElement T>
  void all_to_all_v(std::span<const T> send, std::span<const index_t> send_counts, std::span<T> recv,
                    std::span<const index_t> recv_counts, const Group& g, std::string_view label = {}) {
    check_size("all_to_all_v send counts", label, g.rank, static_cast<index_t>(send_counts.size()), g.size());
    check_size("all_to_all_v recv counts", label, g.rank, static_cast<index_t>(recv_counts.size()), g.size());
    index_t total_send = 0, total_recv = 0;
    for (index_t c : send_counts) total_send += c;
    for (index_t c : recv_counts) total_recv += c;
    check_size("all_to_all_v send", label, g.rank, static_cast<index_t>(send.size()), total_send);
    check_size("all_to_all_v recv", label, g.rank, static_cast<index_t>(recv.size()), total_recv);
    collective<T>(g, send.data(), send.size(), send_counts.data(), [&](auto peer) {
      std::size_t out = 0;
      for (index_t m = 0; m < g.size(); ++m) {
        const Rendezvous::Slot& s = slot(g, m);
        // Where my part starts in member m's send buffer, and how long it is.
        index_t offset = 0;
        for (index_t q = 0; q < g.rank; ++q) offset += s.counts[q];
        index_t count = s.counts[g.rank];
        check_size("all_to_all_v", label, m, count, recv_counts[static_cast<std::size_t>(m)]);
        std::memcpy(recv.data() + out, peer(m).data() + offset, static_cast<std::size_t>(count) * sizeof(T));
        out += static_cast<std::size_t>(count);
      }
    });
    stats_.record(label, traffic::all_to_all_v(g, send_counts, sizeof(T)));
  }

  template <CommElement T>
  void broadcast(std::span<T> data, index_t root, const Group& g, std::string_view label = {}) {
    enforce(comm_rules::root_in_group(root, g.size()));
    std::vector<T> copy(data.begin(), data.end());
    collective<T>(g, copy.data(), copy.size(), nullptr, [&](auto peer) {
      check_size("broadcast", label, root, peer(root).size(), data.size());
      if (g.rank != root) std::memcpy(data.data(), peer(root).data(), bytes(data));
    });
    stats_.record(label, traffic::broadcast(g, root, data.size_bytes()));
  }

  void barrier(const Group& g) {
    enforce(comm_rules::member_of_group(rank_, g));
    world_->wait(g);
  }

 private:
  template <class T>
  static double bytes(std::span<T> s) noexcept {
    return static_cast<double>(s.size() * sizeof(T));
  }

  template <std::integral A, std::integral B>
  static void check_size(std::string_view what, std::string_view label, index_t member, A got, B expected) {
    enforce(comm_rules::sizes_match(what, label, member, static_cast<index_t>(got), static_cast<index_t>(expected)));
  }

  const Rendezvous::Slot& slot(const Group& g, index_t member) const {
    return world_->slot(g.members[static_cast<std::size_t>(member)]);
  }

  /// Publish, wait, run `body(peer)` where peer(m) is member m's send buffer, wait.
  template <class T, class Body>
  void collective(const Group& g, const T* send, std::size_t elements, const index_t* counts, Body&& body) {
    enforce(comm_rules::member_of_group(rank_, g));
    world_->slot(rank_) = {send, elements, sizeof(T), counts};
    world_->wait(g);
    for (index_t m = 0; m < g.size(); ++m)
      enforce(comm_rules::element_types_match("collective", m, slot(g, m).element_bytes, sizeof(T)));
    auto peer = [&](index_t m) {
      const auto& s = slot(g, m);
      return std::span<const T>(static_cast<const T*>(s.send), s.send_elements);
    };
    body(peer);
    world_->wait(g);
  }

  Rendezvous* world_;
  index_t rank_;
  CommStats stats_;
};

template <class F>
void ThreadWorld::run(F&& fn) {
  Rendezvous::run([this](index_t r) { return ThreadComm(*this, r); }, [&](ThreadComm& comm) { fn(comm); });
}

}  // namespace meshplan
