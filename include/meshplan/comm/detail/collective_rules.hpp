#pragma once
// The checks every communicator applies before moving data, with one message each. A
// mismatch between ranks is reported on every rank that can see it, so that no rank is
// left waiting for a partner that gave up.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cstddef>
#include <string_view>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/mesh/group.hpp"

namespace meshplan::comm_rules {

inline Message member_of_group(index_t rank, const Group& g) {
  bool ok = g.rank >= 0 && g.rank < g.size() && g.members[static_cast<std::size_t>(g.rank)] == rank;
  if (ok) return {};
  return Message::rule("collective_group") << "rank " << rank
                                           << " called a collective on a group it is not the member it claims to be "
                                              "(position "
                                           << g.rank << " of " << g.size() << ")";
}

inline Message sizes_match(std::string_view collective, std::string_view label, index_t member, index_t got,
                           index_t expected) {
  if (got == expected) return {};
  Message m = Message::rule("collective_sizes");
  m << collective;
  if (!label.empty()) m << " '" << label << "'";
  m << ": group member " << member << " brings " << got << " elements where " << expected << " are expected";
  return m;
}

inline Message element_types_match(std::string_view collective, index_t member, std::size_t got,
                                   std::size_t expected) {
  if (got == expected) return {};
  return Message::rule("collective_types") << collective << ": group member " << member
                                           << " brings elements of " << got << " bytes where " << expected
                                           << " are expected";
}

inline Message root_in_group(index_t root, index_t size) {
  if (root >= 0 && root < size) return {};
  return Message::rule("collective_root") << "broadcast root " << root << " is outside the group of " << size;
}

inline Message divisible(std::string_view collective, index_t elements, index_t size) {
  if (size > 0 && elements % size == 0) return {};
  return Message::rule("collective_sizes") << collective << ": " << elements
                                           << " elements do not split into " << size << " equal chunks";
}

}  // namespace meshplan::comm_rules
