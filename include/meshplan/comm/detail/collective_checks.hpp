#pragma once
// The argument checks and the byte accounting of every collective, written once for all
// communicators (ThreadComm, CudaLocalComm, MpiComm, NcclComm).
//
// A CollectiveCall is one member's call of one collective. It knows what the member's own
// arguments say (problem(): counts of the wrong length, a send that does not split into
// equal chunks, a root outside the group), what the member offers each peer (offer_to),
// what it expects from each (expected_from), and the bytes CommStats counts for it. The
// communicators differ only in how a member learns its peers' offers: ranks in one process
// read them from each other's slots (p2p_engine.hpp); processes exchange them with an
// all-to-all (check_among_processes below, used by MpiComm and NcclComm).
//
//   const auto call = CollectiveCall::all_gather(g, label, send, recv);
//   enforce(call.problem());                                // before anything moves
//   enforce(call.peers([&](index_t m) { return offer of member m; }));
//   ... move the data ...
//   stats.record(call.label(), call.bytes());

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cstddef>
#include <span>
#include <string_view>
#include <vector>

#include "meshplan/comm/detail/collective_rules.hpp"
#include "meshplan/comm/communicator.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/mesh/group.hpp"

namespace meshplan {

/// What one member brings another in a collective: how many elements, of how many bytes.
struct Offer {
  index_t elements = 0;
  index_t element_bytes = 0;
  friend bool operator==(const Offer&, const Offer&) = default;
};

class CollectiveCall {
 public:
  template <class T>
  static CollectiveCall all_reduce(const Group& g, std::string_view label, std::span<T> data) {
    CollectiveCall c("all_reduce", label, g, sizeof(T), data.size());
    c.checks_own_arguments_ = false;  // any buffer will do, if all members bring the same size
    c.bytes_ = traffic::all_reduce(g, data.size_bytes());
    return c;
  }

  template <class T>
  static CollectiveCall all_gather(const Group& g, std::string_view label, std::span<const T> send, std::span<T> recv) {
    CollectiveCall c("all_gather", label, g, sizeof(T), send.size());
    c.problem_ = c.own_size("all_gather", recv.size(), c.elements_ * g.size());
    c.bytes_ = traffic::all_gather(g, send.size_bytes());
    return c;
  }

  /// Member m brings recv_counts[m] elements.
  template <class T>
  static CollectiveCall all_gather_v(const Group& g, std::string_view label, std::span<const T> send, std::span<T> recv,
                                     std::span<const index_t> recv_counts) {
    CollectiveCall c("all_gather_v", label, g, sizeof(T), send.size());
    c.expected_ = recv_counts;
    c.problem_ = c.own_size("all_gather_v counts", recv_counts.size(), g.size());
    if (c.problem_.ok()) c.problem_ = c.own_size("all_gather_v recv", recv.size(), total(recv_counts));
    c.bytes_ = traffic::all_gather(g, send.size_bytes());
    return c;
  }

  /// send holds one equal chunk per member; recv gets this member's chunk, reduced.
  template <class T>
  static CollectiveCall reduce_scatter(const Group& g, std::string_view label, std::span<const T> send,
                                       std::span<T> recv) {
    CollectiveCall c("reduce_scatter", label, g, sizeof(T), send.size());
    c.problem_ = first_of({comm_rules::divisible("reduce_scatter", c.elements_, g.size()),
                           c.own_size("reduce_scatter", recv.size(), c.chunk())});
    c.bytes_ = traffic::reduce_scatter(g, send.size_bytes());
    return c;
  }

  template <class T>
  static CollectiveCall all_to_all(const Group& g, std::string_view label, std::span<const T> send, std::span<T> recv) {
    CollectiveCall c("all_to_all", label, g, sizeof(T), send.size());
    c.problem_ = first_of({comm_rules::divisible("all_to_all", c.elements_, g.size()),
                           c.own_size("all_to_all", recv.size(), c.elements_)});
    c.bytes_ = traffic::all_to_all(g, send.size_bytes());
    return c;
  }

  /// send_counts[m] elements go to member m; recv_counts[m] come from it.
  template <class T>
  static CollectiveCall all_to_all_v(const Group& g, std::string_view label, std::span<const T> send,
                                     std::span<const index_t> send_counts, std::span<T> recv,
                                     std::span<const index_t> recv_counts) {
    CollectiveCall c("all_to_all_v", label, g, sizeof(T), send.size());
    c.send_counts_ = send_counts;
    c.expected_ = recv_counts;
    c.problem_ = first_of({c.own_size("all_to_all_v send counts", send_counts.size(), g.size()),
                           c.own_size("all_to_all_v recv counts", recv_counts.size(), g.size()),
                           c.own_size("all_to_all_v send", send.size(), total(send_counts)),
                           c.own_size("all_to_all_v recv", recv.size(), total(recv_counts))});
    c.bytes_ = traffic::all_to_all_v(g, send_counts, sizeof(T));
    return c;
  }

  /// `root` is a position in the group.
  template <class T>
  static CollectiveCall broadcast(const Group& g, std::string_view label, std::span<T> data, index_t root) {
    CollectiveCall c("broadcast", label, g, sizeof(T), data.size());
    c.problem_ = comm_rules::root_in_group(root, g.size());
    c.bytes_ = traffic::broadcast(g, root, data.size_bytes());
    return c;
  }

  std::string_view name() const noexcept { return name_; }
  std::string_view label() const noexcept { return label_; }
  /// What this member's own arguments show, before anything moves; ok when they fit.
  const Message& problem() const noexcept { return problem_; }
  /// False where no member's own arguments can be wrong (all_reduce), so that members
  /// need not agree on them.
  bool checks_own_arguments() const noexcept { return checks_own_arguments_; }
  /// What this member sends, as CommStats counts it (communicator.hpp's traffic::).
  double bytes() const noexcept { return bytes_; }
  /// For reduce_scatter and all_to_all: the elements of one member's chunk.
  index_t chunk() const noexcept { return members_ > 0 ? elements_ / members_ : 0; }

  /// What this member brings member `m`. (The rest assume problem() is ok.)
  Offer offer_to(index_t m) const {
    return {send_counts_.empty() ? elements_ : send_counts_[static_cast<std::size_t>(m)], element_bytes_};
  }
  /// The elements this member expects from member `m`: what it brings itself, where every
  /// member brings the same.
  index_t expected_from(index_t m) const {
    return expected_.empty() ? elements_ : expected_[static_cast<std::size_t>(m)];
  }
  /// Where every member brings the same, a member that differs is seen by every member (each
  /// compares with itself), so all of them refuse without having to agree first. Counts
  /// (all_gather_v, all_to_all_v) are seen only by the members that expect them.
  bool mismatches_seen_by_every_member() const noexcept { return expected_.empty(); }

  /// Every member's offer to this one (`offer_from(m)` -> Offer) against what this one
  /// expects: elements of the same size first, then the counts.
  template <class OfferFrom>
  Message peers(OfferFrom&& offer_from) const {
    for (index_t m = 0; m < members_; ++m) {
      Message wrong_type = comm_rules::element_types_match(
          name_, m, static_cast<std::size_t>(offer_from(m).element_bytes), static_cast<std::size_t>(element_bytes_));
      if (!wrong_type.ok()) return wrong_type;
    }
    for (index_t m = 0; m < members_; ++m) {
      Message wrong_size = comm_rules::sizes_match(name_, label_, m, offer_from(m).elements, expected_from(m));
      if (!wrong_size.ok()) return wrong_size;
    }
    return {};
  }

  /// This member's offers as processes exchange them: two numbers per member (elements,
  /// element bytes), for an all-to-all; offer_in() reads the table received.
  std::vector<index_t> offers_table() const {
    std::vector<index_t> table(2 * static_cast<std::size_t>(members_));
    for (index_t m = 0; m < members_; ++m) {
      const Offer o = offer_to(m);
      table[2 * static_cast<std::size_t>(m)] = o.elements;
      table[2 * static_cast<std::size_t>(m) + 1] = o.element_bytes;
    }
    return table;
  }
  static Offer offer_in(std::span<const index_t> table, index_t m) {
    return {table[2 * static_cast<std::size_t>(m)], table[2 * static_cast<std::size_t>(m) + 1]};
  }

 private:
  CollectiveCall(std::string_view name, std::string_view label, const Group& g, std::size_t element_bytes,
                 std::size_t elements)
      : name_(name),
        label_(label),
        members_(g.size()),
        position_(g.rank),
        element_bytes_(static_cast<index_t>(element_bytes)),
        elements_(static_cast<index_t>(elements)) {}

  static index_t total(std::span<const index_t> counts) noexcept {
    index_t sum = 0;
    for (index_t c : counts) sum += c;
    return sum;
  }

  /// One of this member's own sizes against what its other arguments ask for.
  template <class A, class B>
  Message own_size(std::string_view what, A got, B expected) const {
    return comm_rules::sizes_match(what, label_, position_, static_cast<index_t>(got), static_cast<index_t>(expected));
  }

  std::string_view name_;
  std::string_view label_;
  index_t members_ = 0;
  index_t position_ = 0;
  index_t element_bytes_ = 0;
  index_t elements_ = 0;                  // this member's send (or data) elements
  std::span<const index_t> send_counts_;  // all_to_all_v: what goes to each member
  std::span<const index_t> expected_;     // what comes from each member; empty: elements_ from all
  Message problem_;
  bool checks_own_arguments_ = true;
  double bytes_ = 0;
};

/// The checks of `call` where the members are processes (MpiComm, NcclComm): they agree on
/// every member's own arguments, exchange their offers with `all_to_all(mine, theirs)` (the
/// offers tables, two numbers per member), and refuse together. `agree(message)` throws on
/// every member when the message of any member is not ok.
template <class AllToAll, class Agree>
void check_among_processes(const CollectiveCall& call, AllToAll&& all_to_all, Agree&& agree) {
  if (call.checks_own_arguments()) agree(call.problem());
  const std::vector<index_t> mine = call.offers_table();
  std::vector<index_t> theirs(mine.size());
  all_to_all(std::span<const index_t>(mine), std::span<index_t>(theirs));
  const Message problem = call.peers([&](index_t m) { return CollectiveCall::offer_in(theirs, m); });
  if (call.mismatches_seen_by_every_member())
    enforce(problem);
  else
    agree(problem);
}

}  // namespace meshplan
