#pragma once
// Agreement before collectives: every rank of a group learns whether any of them found a
// problem with its input, and all of them throw if one did. Without it a rank that stops
// on bad input would leave the others waiting in the next collective (under MPI, forever).

#include "meshplan/core/detail/public_begin.hpp"

#include <cstdint>
#include <span>

#include "meshplan/comm/communicator.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/mesh/group.hpp"

namespace meshplan {

template <class C>
void agree(C& comm, const Message& problem, const Group& group) {
  std::int32_t flag = problem.ok() ? 0 : 1;
  comm.all_reduce(std::span<std::int32_t>(&flag, 1), group, ReduceOp::max, "agreement");
  if (!problem.ok()) throw RuleViolation(problem);
  if (flag)
    throw RuleViolation(Message::rule("peer_input_error")
                        << "another rank found a problem with its input and stopped; its message says which");
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
