#pragma once
// ordered_sum: a sum over ranks whose bits do not depend on the mesh.
//
// A weight gradient is a sum over tokens. One rank sums its tokens as one chain of fused
// multiply-adds in token order (cpu/detail/gemm.hpp's defined order); when the tokens are spread
// over ranks, an all-reduce of per-rank partial sums would reassociate that chain, and the
// bits would change with the mesh. Instead the chain itself travels: the tokens fall into
// segments in global token order, each owned by one member of the group; the owner of a
// segment continues the chain from the accumulator it holds (cpu::GemmTask::accumulate)
// and, when the next segment belongs to another member, hands the accumulator on. The last
// owner then broadcasts the result. Every member ends with exactly the single-rank bits.
//
//   ordered_sum(comm, group, owners, acc, [&](std::size_t segment, bool fresh) {
//     add segment's terms to acc, or with `fresh` start the chains from +0 in acc;
//   });
//
// `owners[i]`: the member (a position in `group`) that holds segment i; every member passes
// the same list. What `acc` holds when called is never read: the first segment starts the
// chains (`fresh`: its owner writes every element, the sum of nothing being +0), a
// hand-over lands in the receiver's `acc` itself, and the broadcast reaches the rest. So a
// caller neither clears the accumulator (192 MB of an MoE layer's expert gradients) nor
// needs to, and it may be device memory with a device communicator. `acc` has the same
// size on every member.
// Bytes: one accumulator per hand-over plus the broadcast. With one segment per member
// that is n - 1 hand-overs and a broadcast to n - 1 members: 2 (n - 1) / n of the
// accumulator per member on average, what a ring all-reduce sends.
//
// The hand-overs run one after another (a member waits for the chain to reach it); a
// pipelined version would split `acc` into chunks and pass them along as they finish.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <algorithm>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "meshplan/comm/communicator.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/mesh/group.hpp"

namespace meshplan {

/// The sum over `parts` (buffers summed together, e.g. a parameter's pieces: each hand-over
/// and the broadcast pass every part, so no part is copied into one buffer first).
template <Communicator C, class AddSegment>
void ordered_sum(C& comm, const Group& group, std::span<const index_t> owners, std::span<const std::span<float>> parts,
                 AddSegment&& add_segment, std::string_view label) {
  enforce(!owners.empty() && std::all_of(owners.begin(), owners.end(),
                                         [&](index_t o) { return o >= 0 && o < group.size(); })
              ? Message{}
              : Message::rule("group_member") << "an ordered sum over a group of " << group.size()
                                              << " needs each of its segments owned by a member");
  const auto n = static_cast<std::size_t>(group.size());
  std::vector<index_t> send_counts(n), recv_counts(n);
  for (std::size_t i = 0; i < owners.size(); ++i) {
    if (owners[i] == group.rank) add_segment(i, i == 0);
    if (i + 1 == owners.size() || owners[i + 1] == owners[i]) continue;
    // Hand the accumulator from owners[i] to owners[i + 1]; the other members take part
    // with nothing to send, as a collective needs.
    const index_t from = owners[i], to = owners[i + 1];
    for (const std::span<float> acc : parts) {
      std::fill(send_counts.begin(), send_counts.end(), 0);
      std::fill(recv_counts.begin(), recv_counts.end(), 0);
      if (group.rank == from) send_counts[static_cast<std::size_t>(to)] = static_cast<index_t>(acc.size());
      if (group.rank == to) recv_counts[static_cast<std::size_t>(from)] = static_cast<index_t>(acc.size());
      // The receiver's chain is replaced by the one it receives, in place; the two buffers
      // of a member never alias (each member only sends, only receives, or neither).
      const std::span<const float> send = group.rank == from ? std::span<const float>(acc) : std::span<const float>();
      const std::span<float> recv = group.rank == to ? acc : std::span<float>();
      comm.all_to_all_v(send, send_counts, recv, recv_counts, group, label);
    }
  }
  if (n > 1)
    for (const std::span<float> acc : parts) comm.broadcast(acc, owners.back(), group, label);
}

/// The sum in one buffer.
template <Communicator C, class AddSegment>
void ordered_sum(C& comm, const Group& group, std::span<const index_t> owners, std::span<float> acc,
                 AddSegment&& add_segment, std::string_view label) {
  const std::span<float> parts[1] = {acc};
  ordered_sum(comm, group, owners, std::span<const std::span<float>>(parts), std::forward<AddSegment>(add_segment),
              label);
}

}  // namespace meshplan
