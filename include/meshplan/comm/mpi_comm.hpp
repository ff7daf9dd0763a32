#pragma once
// MpiComm: ranks as processes under mpirun (link meshplan::mpi).
//
//   int main(int argc, char** argv) {
//     mp::MpiSession session(argc, argv);       // MPI_Init ... MPI_Finalize
//     mp::MpiComm comm;                          // over MPI_COMM_WORLD
//     auto ep = mesh.group<"ep">(comm.rank());
//     comm.all_to_all_v(send, send_counts, recv, recv_counts, ep, "dispatch");
//   }
//
// Each group gets its own MPI communicator (MPI_Comm_create_group, which only the group's
// members call), cached by its member list. Data moves as bytes. Reductions gather every
// member's buffer and reduce in group order, exactly as ThreadComm does, so both give the
// same bits. Before moving data, the members run the shared checks (collective_checks.hpp)
// and agree on them: a mismatch throws on every member instead of leaving some waiting in
// MPI. MPI errors become
// MpiError naming the rank, the collective and MPI's error string.

#include "meshplan/core/detail/public_begin.hpp"

#include <mpi.h>

#include <climits>
#include <concepts>
#include <cstddef>
#include <cstring>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "meshplan/comm/detail/collective_checks.hpp"
#include "meshplan/comm/detail/collective_rules.hpp"
#include "meshplan/comm/communicator.hpp"
#include "meshplan/comm/detail/ordered_reduce.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/mesh/group.hpp"

namespace meshplan {

class MpiError : public std::runtime_error {
 public:
  MpiError(index_t rank, std::string_view what, int code)
      : std::runtime_error("meshplan: MPI error on rank " + std::to_string(rank) + " in " + std::string(what) + ": " +
                           describe(code)) {}

 private:
  static std::string describe(int code) {
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "error " + std::to_string(code);
    return std::string(text, static_cast<std::size_t>(length));
  }
};

/// MPI_Init on construction (if not done yet), MPI_Finalize on destruction.
class MpiSession {
 public:
  MpiSession(int& argc, char**& argv) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      MPI_Init(&argc, &argv);
      owner_ = true;
    }
  }
  ~MpiSession() {
    if (owner_) MPI_Finalize();
  }
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

 private:
  bool owner_ = false;
};

class MpiComm {
 public:
  explicit MpiComm(MPI_Comm world = MPI_COMM_WORLD) : world_(world) {
    MPI_Comm_set_errhandler(world_, MPI_ERRORS_RETURN);
    int r = 0, n = 0;
    MPI_Comm_rank(world_, &r);
    MPI_Comm_size(world_, &n);
    rank_ = r;
    size_ = n;
  }
  ~MpiComm() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    for (auto& [members, comm] : comms_) MPI_Comm_free(&comm);
  }
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  index_t rank() const noexcept { return rank_; }
  index_t size() const noexcept { return size_; }
  const CommStats& stats() const noexcept { return stats_; }
  CommStats& stats() noexcept { return stats_; }

  Group world_group() const { return whole_world(size_, rank_); }

  template <CommElement T>
  void all_reduce(std::span<T> data, const Group& g, ReduceOp op = ReduceOp::sum, std::string_view label = {}) {
    collective(g, CollectiveCall::all_reduce(g, label, data), [&](MPI_Comm c) {
      // Every member's values, then the reduction in group order.
      std::vector<T> all(data.size() * static_cast<std::size_t>(g.size()));
      const int bytes = byte_count(data.size_bytes());
      check(MPI_Allgather(data.data(), bytes, MPI_BYTE, all.data(), bytes, MPI_BYTE, c), "all_reduce");
      detail::ordered_reduce<T>(data, g.size(), member_parts(all, data.size()), op);
    });
  }

  template <CommElement T>
  void all_gather(std::span<const T> send, std::span<T> recv, const Group& g, std::string_view label = {}) {
    collective(g, CollectiveCall::all_gather(g, label, send, recv), [&](MPI_Comm c) {
      const int bytes = byte_count(send.size_bytes());
      check(MPI_Allgather(send.data(), bytes, MPI_BYTE, recv.data(), bytes, MPI_BYTE, c), "all_gather");
    });
  }

  template <CommElement T>
  void all_gather_v(std::span<const T> send, std::span<T> recv, std::span<const index_t> recv_counts, const Group& g,
                    std::string_view label = {}) {
    const auto call = CollectiveCall::all_gather_v(g, label, send, recv, recv_counts);
    collective(g, call, [&](MPI_Comm c) {
      std::vector<int> counts, displs;
      byte_layout<T>(recv_counts, counts, displs);
      check(MPI_Allgatherv(send.data(), byte_count(send.size_bytes()), MPI_BYTE, recv.data(), counts.data(),
                           displs.data(), MPI_BYTE, c),
            "all_gather_v");
    });
  }

  template <CommElement T>
  void reduce_scatter(std::span<const T> send, std::span<T> recv, const Group& g, ReduceOp op = ReduceOp::sum,
                      std::string_view label = {}) {
    const auto call = CollectiveCall::reduce_scatter(g, label, send, recv);
    collective(g, call, [&](MPI_Comm c) {
      // Every member's chunk for me, then the reduction in group order.
      const auto chunk = static_cast<std::size_t>(call.chunk());
      std::vector<T> mine(chunk * static_cast<std::size_t>(g.size()));
      const int bytes = byte_count(chunk * sizeof(T));
      check(MPI_Alltoall(send.data(), bytes, MPI_BYTE, mine.data(), bytes, MPI_BYTE, c), "reduce_scatter");
      detail::ordered_reduce<T>(recv, g.size(), member_parts(mine, chunk), op);
    });
  }

  template <CommElement T>
  void all_to_all(std::span<const T> send, std::span<T> recv, const Group& g, std::string_view label = {}) {
    const auto call = CollectiveCall::all_to_all(g, label, send, recv);
    collective(g, call, [&](MPI_Comm c) {
      const int bytes = byte_count(static_cast<std::size_t>(call.chunk()) * sizeof(T));
      check(MPI_Alltoall(send.data(), bytes, MPI_BYTE, recv.data(), bytes, MPI_BYTE, c), "all_to_all");
    });
  }

  template <CommElement T>
  void all_to_all_v(std::span<const T> send, std::span<const index_t> send_counts, std::span<T> recv,
                    std::span<const index_t> recv_counts, const Group& g, std::string_view label = {}) {
    const auto call = CollectiveCall::all_to_all_v(g, label, send, send_counts, recv, recv_counts);
    collective(g, call, [&](MPI_Comm c) {
      std::vector<int> sc, sd, rc, rd;
      byte_layout<T>(send_counts, sc, sd);
      byte_layout<T>(recv_counts, rc, rd);
      check(MPI_Alltoallv(send.data(), sc.data(), sd.data(), MPI_BYTE, recv.data(), rc.data(), rd.data(), MPI_BYTE, c),
            "all_to_all_v");
    });
  }

  template <CommElement T>
  void broadcast(std::span<T> data, index_t root, const Group& g, std::string_view label = {}) {
    collective(g, CollectiveCall::broadcast(g, label, data, root), [&](MPI_Comm c) {
      check(MPI_Bcast(data.data(), byte_count(data.size_bytes()), MPI_BYTE, static_cast<int>(root), c), "broadcast");
    });
  }

  void barrier(const Group& g) { check(MPI_Barrier(comm_for(g)), "barrier"); }

 private:
  /// The group's communicator, the shared checks agreed among the members (so that MPI
  /// never starts with a mismatch), `move(comm)`, and the bytes counted.
  template <class Move>
  void collective(const Group& g, const CollectiveCall& call, Move&& move) {
    MPI_Comm c = comm_for(g);
    check_among_processes(
        call,
        [&](std::span<const index_t> mine, std::span<index_t> theirs) {
          const int entry = byte_count(mine.size_bytes() / static_cast<std::size_t>(g.size()));
          check(MPI_Alltoall(mine.data(), entry, MPI_BYTE, theirs.data(), entry, MPI_BYTE, c), call.name());
        },
        [&](const Message& problem) { agree(c, problem); });
    move(c);
    stats_.record(call.label(), call.bytes());
  }

  /// member m's `n` elements in `all`, where the members' parts follow each other.
  template <class T>
  static auto member_parts(const std::vector<T>& all, std::size_t n) {
    return [&all, n](index_t m) { return std::span<const T>(all).subspan(static_cast<std::size_t>(m) * n, n); };
  }

  int byte_count(std::size_t bytes) const {
    if (bytes > static_cast<std::size_t>(INT_MAX))
      throw RuleViolation(Message::rule("collective_sizes")
                          << "MpiComm moves at most " << INT_MAX << " bytes per peer and call; " << bytes
                          << " were asked for");
    return static_cast<int>(bytes);
  }

  /// Per member, the bytes of its `counts` elements and where they start, as MPI's v-collectives take them.
  template <class T>
  void byte_layout(std::span<const index_t> counts, std::vector<int>& bytes, std::vector<int>& displacements) const {
    std::size_t at = 0;
    for (index_t n : counts) {
      bytes.push_back(byte_count(static_cast<std::size_t>(n) * sizeof(T)));
      displacements.push_back(byte_count(at * sizeof(T)));
      at += static_cast<std::size_t>(n);
    }
  }

  void check(int code, std::string_view what) const {
    if (code != MPI_SUCCESS) throw MpiError(rank_, what, code);
  }

  /// Every member learns whether any member found a problem; all throw if one did.
  void agree(MPI_Comm c, const Message& problem) {
    int mine = problem.ok() ? 0 : 1, any = 0;
    check(MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, c), "agreement");
    if (!problem.ok()) throw RuleViolation(problem);
    if (any)
      throw RuleViolation(Message::rule("collective_peer_error")
                          << "another member of this group found a problem with the collective and stopped");
  }

  /// The communicator of a group, created on first use by its members only.
  MPI_Comm comm_for(const Group& g) {
    enforce(comm_rules::member_of_group(rank_, g));
    auto it = comms_.find(g.members);
    if (it != comms_.end()) return it->second;
    MPI_Group world_group, group;
    check(MPI_Comm_group(world_, &world_group), "group creation");
    std::vector<int> ranks(g.members.begin(), g.members.end());
    check(MPI_Group_incl(world_group, static_cast<int>(ranks.size()), ranks.data(), &group), "group creation");
    MPI_Comm comm;
    // The tag must be the same on every member: derive it from the member list.
    std::size_t tag = 0;
    for (index_t r : g.members) tag = tag * 1000003u + static_cast<std::size_t>(r) + 1;
    check(MPI_Comm_create_group(world_, group, static_cast<int>(tag % 32768), &comm), "group creation");
    MPI_Group_free(&group);
    MPI_Group_free(&world_group);
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
    comms_.emplace(g.members, comm);
    return comm;
  }

  MPI_Comm world_;
  index_t rank_ = 0;
  index_t size_ = 1;
  std::map<std::vector<index_t>, MPI_Comm> comms_;
  CommStats stats_;
};

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
