#pragma once
// The Communicator concept: the collectives a rank runs with the other ranks of a group
// (the ranks along one or more mesh axes, as a mesh's group<...>() gives them).
//
//   all_reduce(data, group, op)                 every member ends with the reduction
//   all_gather(send, recv, group)               recv = the members' sends, in group order
//   all_gather_v(send, recv, recv_counts, group)  the same with one count per member
//   reduce_scatter(send, recv, group, op)       send holds group.size() equal chunks;
//                                               member i gets the reduction of chunk i
//   all_to_all(send, recv, group)               chunk i of send goes to member i
//   all_to_all_v(send, send_counts, recv, recv_counts, group)
//   broadcast(data, root, group)                root is a position in the group
//   barrier(group)
//
// Element types: float, bfloat16, std::int32_t, index_t. Reductions run in group order
// (member 0 first) in fp32 for floating types, on every rank alike, so results do not
// depend on timing or on the communicator: ThreadComm and MpiComm give the same bits.
// Every collective takes an optional label; CommStats counts, per label, the calls and
// the bytes this rank sent (what a ring, or a direct all-to-all exchange, sends).

#include "meshplan/core/detail/public_begin.hpp"

#include <concepts>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/mesh/group.hpp"
#include "meshplan/placement/placement.hpp"

namespace meshplan {

/// What a rank sent, per collective label.
struct CommStats {
  struct Entry {
    index_t calls = 0;
    double bytes = 0;
  };
  std::map<std::string, Entry, std::less<>> by_label;

  /// Adds a call of `label` (an empty label counts as "unlabelled") that sent `bytes`.
  void record(std::string_view label, double bytes) {
    if (label.empty()) label = "unlabelled";
    auto it = by_label.find(label);
    if (it == by_label.end()) it = by_label.emplace(std::string(label), Entry{}).first;
    ++it->second.calls;
    it->second.bytes += bytes;
  }
  double total_bytes() const {
    double b = 0;
    for (const auto& [label, e] : by_label) b += e.bytes;
    return b;
  }
  void clear() { by_label.clear(); }
};

/// The bytes a member sends in each collective, as CommStats counts them: what a ring (for
/// the reductions and gathers) or a direct exchange (all-to-all, broadcast) sends, the
/// same for every communicator (collective_checks.hpp's CollectiveCall picks each call's).
namespace traffic {
inline double ring_fraction(const Group& g) noexcept {
  return g.size() > 1 ? static_cast<double>(g.size() - 1) / static_cast<double>(g.size()) : 0.0;
}
inline double all_reduce(const Group& g, std::size_t bytes) noexcept {
  return 2.0 * ring_fraction(g) * static_cast<double>(bytes);
}
/// `send_bytes`: this member's contribution.
inline double all_gather(const Group& g, std::size_t send_bytes) noexcept {
  return static_cast<double>(g.size() - 1) * static_cast<double>(send_bytes);
}
inline double reduce_scatter(const Group& g, std::size_t send_bytes) noexcept {
  return ring_fraction(g) * static_cast<double>(send_bytes);
}
inline double all_to_all(const Group& g, std::size_t send_bytes) noexcept {
  return ring_fraction(g) * static_cast<double>(send_bytes);
}
/// Every element sent to another member (not to itself).
inline double all_to_all_v(const Group& g, std::span<const index_t> send_counts, std::size_t element_bytes) noexcept {
  double sent = 0;
  for (index_t m = 0; m < g.size() && m < static_cast<index_t>(send_counts.size()); ++m)
    if (m != g.rank)
      sent += static_cast<double>(send_counts[static_cast<std::size_t>(m)]) * static_cast<double>(element_bytes);
  return sent;
}
inline double broadcast(const Group& g, index_t root, std::size_t bytes) noexcept {
  return g.rank == root ? static_cast<double>(g.size() - 1) * static_cast<double>(bytes) : 0.0;
}
}  // namespace traffic

/// The group of every rank of a world of `size`, in rank order, seen from `rank`.
inline Group whole_world(index_t size, index_t rank) {
  Group g;
  for (index_t r = 0; r < size; ++r) g.members.push_back(r);
  g.rank = rank;
  return g;
}

template <class T>
concept CommElement = std::is_same_v<T, float> || std::is_same_v<T, bfloat16> || std::is_same_v<T, std::int32_t> ||
    std::is_same_v<T, index_t>;

template <class C>
concept Communicator = requires(C& c, const Group& g, std::span<float> out, std::span<const float> in,
                                std::span<const index_t> counts, std::string_view label) {
  { c.rank() } -> std::convertible_to<index_t>;
  { c.size() } -> std::convertible_to<index_t>;
  { c.stats() } -> std::convertible_to<const CommStats&>;
  c.all_reduce(out, g, ReduceOp::sum, label);
  c.all_gather(in, out, g, label);
  c.all_gather_v(in, out, counts, g, label);
  c.reduce_scatter(in, out, g, ReduceOp::sum, label);
  c.all_to_all(in, out, g, label);
  c.all_to_all_v(in, counts, out, counts, g, label);
  c.broadcast(out, index_t{0}, g, label);
  c.barrier(g);
};

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
