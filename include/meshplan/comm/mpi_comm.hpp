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
// same bits. Before moving data, the members agree that their sizes match; a mismatch
// throws on every member instead of leaving some waiting in MPI. MPI errors become
// MpiError naming the rank, the collective and MPI's error string.

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

#include "meshplan/comm/collective_rules.hpp"
#include "meshplan/comm/communicator.hpp"
#include "meshplan/comm/ordered_reduce.hpp"
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

  Group world_group() const {
    Group g;
    for (index_t r = 0; r < size_; ++r) g.members.push_back(r);
    g.rank = rank_;
    return g;
  }

  template <CommElement T>
  void all_reduce(std::span<T> data, const Group& g, ReduceOp op = ReduceOp::sum, std::string_view label = {}) {
    MPI_Comm c = comm_for(g);
    agree_on_equal_sizes(c, g, "all_reduce", label, data.size(), sizeof(T));
    std::vector<T> all(data.size() * static_cast<std::size_t>(g.size()));
    check(MPI_Allgather(data.data(), byte_count(data.size() * sizeof(T)), MPI_BYTE, all.data(),
                        byte_count(data.size() * sizeof(T)), MPI_BYTE, c),
          "all_reduce");
    detail::ordered_reduce<T>(
        data, g.size(), [&](index_t m) { return std::span<const T>(all).subspan(member_offset(m, data.size()), data.size()); },
        op);
    stats_.record(label, traffic::all_reduce(g, data.size_bytes()));
  }

  template <CommElement T>
  void all_gather(std::span<const T> send, std::span<T> recv, const Group& g, std::string_view label = {}) {
    MPI_Comm c = comm_for(g);
    agree(c, comm_rules::sizes_match("all_gather", label, g.rank, static_cast<index_t>(recv.size()),
                                     static_cast<index_t>(send.size()) * g.size()));
    agree_on_equal_sizes(c, g, "all_gather", label, send.size(), sizeof(T));
    check(MPI_Allgather(send.data(), byte_count(send.size_bytes()), MPI_BYTE, recv.data(),
                        byte_count(send.size_bytes()), MPI_BYTE, c),
          "all_gather");
    stats_.record(label, traffic::all_gather(g, send.size_bytes()));
  }

  template <CommElement T>
  void all_gather_v(std::span<const T> send, std::span<T> recv, std::span<const index_t> recv_counts, const Group& g,
                    std::string_view label = {}) {
    MPI_Comm c = comm_for(g);
    Message problem = comm_rules::sizes_match("all_gather_v counts", label, g.rank,
                                              static_cast<index_t>(recv_counts.size()), g.size());
    std::vector<int> counts(static_cast<std::size_t>(g.size())), displs(counts.size());
    if (problem.ok()) {
      index_t total = 0;
      for (std::size_t m = 0; m < counts.size(); ++m) {
        displs[m] = byte_count(static_cast<std::size_t>(total) * sizeof(T));
        counts[m] = byte_count(static_cast<std::size_t>(recv_counts[m]) * sizeof(T));
        total += recv_counts[m];
      }
      problem = first_of({comm_rules::sizes_match("all_gather_v", label, g.rank, static_cast<index_t>(send.size()),
                                                  recv_counts[static_cast<std::size_t>(g.rank)]),
                          comm_rules::sizes_match("all_gather_v recv", label, g.rank,
                                                  static_cast<index_t>(recv.size()), total)});
    }
    agree(c, problem);
    check(MPI_Allgatherv(send.data(), byte_count(send.size_bytes()), MPI_BYTE, recv.data(), counts.data(),
                         displs.data(), MPI_BYTE, c),
          "all_gather_v");
    stats_.record(label, traffic::all_gather(g, send.size_bytes()));
  }

  template <CommElement T>
  void reduce_scatter(std::span<const T> send, std::span<T> recv, const Group& g, ReduceOp op = ReduceOp::sum,
                      std::string_view label = {}) {
    MPI_Comm c = comm_for(g);
    const std::size_t chunk = g.size() > 0 ? send.size() / static_cast<std::size_t>(g.size()) : 0;
    agree(c, first_of({comm_rules::divisible("reduce_scatter", static_cast<index_t>(send.size()), g.size()),
                       comm_rules::sizes_match("reduce_scatter", label, g.rank, static_cast<index_t>(recv.size()),
                                               static_cast<index_t>(chunk))}));
    agree_on_equal_sizes(c, g, "reduce_scatter", label, send.size(), sizeof(T));
    // Every member's chunk for me, then reduce them in group order.
    std::vector<T> mine(chunk * static_cast<std::size_t>(g.size()));
    check(MPI_Alltoall(send.data(), byte_count(chunk * sizeof(T)), MPI_BYTE, mine.data(),
                       byte_count(chunk * sizeof(T)), MPI_BYTE, c),
          "reduce_scatter");
    detail::ordered_reduce<T>(
        recv, g.size(), [&](index_t m) { return std::span<const T>(mine).subspan(member_offset(m, chunk), chunk); }, op);
    stats_.record(label, traffic::reduce_scatter(g, send.size_bytes()));
  }

  template <CommElement T>
  void all_to_all(std::span<const T> send, std::span<T> recv, const Group& g, std::string_view label = {}) {
    MPI_Comm c = comm_for(g);
    const std::size_t chunk = g.size() > 0 ? send.size() / static_cast<std::size_t>(g.size()) : 0;
    agree(c, first_of({comm_rules::divisible("all_to_all", static_cast<index_t>(send.size()), g.size()),
                       comm_rules::sizes_match("all_to_all", label, g.rank, static_cast<index_t>(recv.size()),
                                               static_cast<index_t>(send.size()))}));
    agree_on_equal_sizes(c, g, "all_to_all", label, send.size(), sizeof(T));
    check(MPI_Alltoall(send.data(), byte_count(chunk * sizeof(T)), MPI_BYTE, recv.data(),
                       byte_count(chunk * sizeof(T)), MPI_BYTE, c),
          "all_to_all");
    stats_.record(label, traffic::all_to_all(g, send.size_bytes()));
  }

  template <CommElement T>
  void all_to_all_v(std::span<const T> send, std::span<const index_t> send_counts, std::span<T> recv,
                    std::span<const index_t> recv_counts, const Group& g, std::string_view label = {}) {
    MPI_Comm c = comm_for(g);
    const auto n = static_cast<std::size_t>(g.size());
    Message problem = first_of({comm_rules::sizes_match("all_to_all_v send counts", label, g.rank,
                                                        static_cast<index_t>(send_counts.size()), g.size()),
                                comm_rules::sizes_match("all_to_all_v recv counts", label, g.rank,
                                                        static_cast<index_t>(recv_counts.size()), g.size())});
    agree(c, problem);
    // What each member will send me, against what I expect.
    std::vector<index_t> incoming(n);
    check(MPI_Alltoall(send_counts.data(), sizeof(index_t), MPI_BYTE, incoming.data(), sizeof(index_t), MPI_BYTE, c),
          "all_to_all_v counts");
    index_t total_send = 0, total_recv = 0;
    for (std::size_t m = 0; m < n; ++m) {
      total_send += send_counts[m];
      total_recv += recv_counts[m];
      if (problem.ok())
        problem = comm_rules::sizes_match("all_to_all_v", label, static_cast<index_t>(m), incoming[m], recv_counts[m]);
    }
    if (problem.ok())
      problem = first_of({comm_rules::sizes_match("all_to_all_v send", label, g.rank,
                                                  static_cast<index_t>(send.size()), total_send),
                          comm_rules::sizes_match("all_to_all_v recv", label, g.rank,
                                                  static_cast<index_t>(recv.size()), total_recv)});
    agree(c, problem);
    std::vector<int> sc(n), sd(n), rc(n), rd(n);
    std::size_t so = 0, ro = 0;
    for (std::size_t m = 0; m < n; ++m) {
      sc[m] = byte_count(static_cast<std::size_t>(send_counts[m]) * sizeof(T));
      sd[m] = byte_count(so * sizeof(T));
      rc[m] = byte_count(static_cast<std::size_t>(recv_counts[m]) * sizeof(T));
      rd[m] = byte_count(ro * sizeof(T));
      so += static_cast<std::size_t>(send_counts[m]);
      ro += static_cast<std::size_t>(recv_counts[m]);
    }
    check(MPI_Alltoallv(send.data(), sc.data(), sd.data(), MPI_BYTE, recv.data(), rc.data(), rd.data(), MPI_BYTE, c),
          "all_to_all_v");
    stats_.record(label, traffic::all_to_all_v(g, send_counts, sizeof(T)));
  }

  template <CommElement T>
  void broadcast(std::span<T> data, index_t root, const Group& g, std::string_view label = {}) {
    MPI_Comm c = comm_for(g);
    agree(c, comm_rules::root_in_group(root, g.size()));
    agree_on_equal_sizes(c, g, "broadcast", label, data.size(), sizeof(T));
    check(MPI_Bcast(data.data(), byte_count(data.size_bytes()), MPI_BYTE, static_cast<int>(root), c), "broadcast");
    stats_.record(label, traffic::broadcast(g, root, data.size_bytes()));
  }

  void barrier(const Group& g) { check(MPI_Barrier(comm_for(g)), "barrier"); }

 private:
  static std::size_t member_offset(index_t m, std::size_t chunk) noexcept { return static_cast<std::size_t>(m) * chunk; }

  int byte_count(std::size_t bytes) const {
    if (bytes > static_cast<std::size_t>(INT_MAX))
      throw RuleViolation(Message::rule("collective_sizes")
                          << "MpiComm moves at most " << INT_MAX << " bytes per peer and call; " << bytes
                          << " were asked for");
    return static_cast<int>(bytes);
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

  /// All members bring the same number of elements of the same size.
  void agree_on_equal_sizes(MPI_Comm c, const Group& g, std::string_view what, std::string_view label,
                            std::size_t elements, std::size_t element_bytes) {
    index_t mine[2] = {static_cast<index_t>(elements), static_cast<index_t>(element_bytes)};
    std::vector<index_t> all(2 * static_cast<std::size_t>(g.size()));
    check(MPI_Allgather(mine, sizeof mine, MPI_BYTE, all.data(), sizeof mine, MPI_BYTE, c), what);
    Message problem;
    for (index_t m = 0; m < g.size() && problem.ok(); ++m)
      problem = first_of({comm_rules::element_types_match(what, m, static_cast<std::size_t>(all[2 * m + 1]),
                                                          element_bytes),
                          comm_rules::sizes_match(what, label, m, all[2 * m], static_cast<index_t>(elements))});
    if (!problem.ok()) throw RuleViolation(problem);  // every member sees the same table
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
