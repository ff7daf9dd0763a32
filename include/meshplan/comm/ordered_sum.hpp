#pragma once
// ordered_sum: a sum over ranks whose bits do not depend on the mesh.
//
// A weight gradient is a sum over tokens. One rank sums its tokens as one chain of fused
// multiply-adds in token order (cpu/gemm.hpp's defined order); when the tokens are spread
// over ranks, an all-reduce of per-rank partial sums would reassociate that chain, and the
// bits would change with the mesh. Instead the chain itself travels: the tokens fall into
// segments in global token order, each owned by one member of the group; the owner of a
// segment continues the chain from the accumulator it holds (cpu::GemmTask::accumulate)
// and, when the next segment belongs to another member, hands the accumulator on. The last
// owner then broadcasts the result. Every member ends with exactly the single-rank bits.
//
//   ordered_sum(comm, group, owners, acc, [&](std::size_t segment) { add segment's terms to acc; });
//
// `owners[i]`: the member (a position in `group`) that holds segment i; every member passes
// the same list. `acc` holds zeros on every member when it is called (the caller clears
// it: it may be device memory, which the host does not write, with a device communicator)
// and has the same size everywhere; a hand-over lands in the receiver's `acc` itself.
// Bytes: one accumulator per hand-over plus the broadcast. With one segment per member
// that is n - 1 hand-overs and a broadcast to n - 1 members: 2 (n - 1) / n of the
// accumulator per member on average, what a ring all-reduce sends.
//
// The hand-overs run one after another (a member waits for the chain to reach it); a
// pipelined version would split `acc` into chunks and pass them along as they finish.

#include <algorithm>
#include <span>
#include <string_view>
#include <vector>

#include "meshplan/comm/communicator.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/mesh/group.hpp"

namespace meshplan {

template <Communicator C, class AddSegment>
void ordered_sum(C& comm, const Group& group, std::span<const index_t> owners, std::span<float> acc,
                 AddSegment&& add_segment, std::string_view label) {
  enforce(!owners.empty() && std::all_of(owners.begin(), owners.end(),
                                         [&](index_t o) { return o >= 0 && o < group.size(); })
              ? Message{}
              : Message::rule("group_member") << "an ordered sum over a group of " << group.size()
                                              << " needs each of its segments owned by a member");
  const auto n = static_cast<std::size_t>(group.size());
  const auto size = static_cast<index_t>(acc.size());
  std::vector<index_t> send_counts(n), recv_counts(n);
  for (std::size_t i = 0; i < owners.size(); ++i) {
    if (owners[i] == group.rank) add_segment(i);
    if (i + 1 == owners.size() || owners[i + 1] == owners[i]) continue;
    // Hand the accumulator from owners[i] to owners[i + 1]; the other members take part
    // with nothing to send, as a collective needs.
    const index_t from = owners[i], to = owners[i + 1];
    std::fill(send_counts.begin(), send_counts.end(), 0);
    std::fill(recv_counts.begin(), recv_counts.end(), 0);
    if (group.rank == from) send_counts[static_cast<std::size_t>(to)] = size;
    if (group.rank == to) recv_counts[static_cast<std::size_t>(from)] = size;
    // The receiver's chain is replaced by the one it receives, in place; the two buffers of
    // a member never alias (each member only sends, only receives, or neither).
    const std::span<const float> send = group.rank == from ? std::span<const float>(acc) : std::span<const float>();
    const std::span<float> recv = group.rank == to ? acc : std::span<float>();
    comm.all_to_all_v(send, send_counts, recv, recv_counts, group, label);
  }
  if (n > 1) comm.broadcast(acc, owners.back(), group, label);
}

}  // namespace meshplan
