// The checks and the byte accounting all four communicators share (collective_checks.hpp):
// every message a member's own arguments can give, every message its peers' offers can
// give, the bytes of each collective, and the check among processes over a simulated
// all-to-all, where every member refuses together.
#include <catch2/catch.hpp>

#include <functional>
#include <string>
#include <vector>

#include "meshplan/comm/detail/collective_checks.hpp"

namespace mp = meshplan;
using mp::CollectiveCall;
using mp::index_t;

namespace {

/// Member `position` of a group of `size` (the members are ranks 10, 11, ...).
mp::Group member(index_t position, index_t size) {
  mp::Group g;
  for (index_t m = 0; m < size; ++m) g.members.push_back(10 + m);
  g.rank = position;
  return g;
}

std::vector<float> floats(std::size_t n) { return std::vector<float>(n); }

// Buffers the calls below point into: a call holds views of its counts.
const std::vector<index_t> three_ones = {1, 1, 1}, two_ones = {1, 1}, one_two_three = {1, 2, 3};

struct OwnArguments {
  const char* what;
  std::function<CollectiveCall()> call;
  std::string message;  // empty: the arguments fit
};

}  // namespace

TEST_CASE("a member's own arguments: every message", "[comm][checks]") {
  const mp::Group g = member(1, 3);
  auto send = floats(6), recv = floats(6), short_recv = floats(5), two = floats(2), three = floats(3);
  std::span<const float> s6(send);
  const std::vector<OwnArguments> rows = {
      {"all_reduce", [&] { return CollectiveCall::all_reduce(g, "x", std::span<float>(recv)); }, ""},
      {"all_gather fits",
       [&] { return CollectiveCall::all_gather(g, "x", std::span<const float>(two), std::span<float>(recv)); }, ""},
      {"all_gather recv",
       [&] { return CollectiveCall::all_gather(g, "x", std::span<const float>(two), std::span<float>(short_recv)); },
       "meshplan [collective_sizes]: all_gather 'x': group member 1 brings 5 elements where 6 are expected"},
      {"unlabelled",
       [&] { return CollectiveCall::all_gather(g, "", std::span<const float>(two), std::span<float>(short_recv)); },
       "meshplan [collective_sizes]: all_gather: group member 1 brings 5 elements where 6 are expected"},
      {"all_gather_v fits",
       [&] {
         return CollectiveCall::all_gather_v(g, "x", std::span<const float>(two), std::span<float>(recv),
                                             std::span(one_two_three));
       },
       ""},
      {"all_gather_v counts",
       [&] {
         return CollectiveCall::all_gather_v(g, "x", std::span<const float>(two), std::span<float>(recv),
                                             std::span(two_ones));
       },
       "meshplan [collective_sizes]: all_gather_v counts 'x': group member 1 brings 2 elements where 3 are expected"},
      {"all_gather_v recv",
       [&] {
         return CollectiveCall::all_gather_v(g, "x", std::span<const float>(two), std::span<float>(short_recv),
                                             std::span(one_two_three));
       },
       "meshplan [collective_sizes]: all_gather_v recv 'x': group member 1 brings 5 elements where 6 are expected"},
      {"reduce_scatter fits", [&] { return CollectiveCall::reduce_scatter(g, "x", s6, std::span<float>(two)); }, ""},
      {"reduce_scatter chunks",
       [&] {
         return CollectiveCall::reduce_scatter(g, "x", std::span<const float>(short_recv), std::span<float>(two));
       },
       "meshplan [collective_sizes]: reduce_scatter: 5 elements do not split into 3 equal chunks"},
      {"reduce_scatter recv", [&] { return CollectiveCall::reduce_scatter(g, "x", s6, std::span<float>(three)); },
       "meshplan [collective_sizes]: reduce_scatter 'x': group member 1 brings 3 elements where 2 are expected"},
      {"all_to_all fits", [&] { return CollectiveCall::all_to_all(g, "x", s6, std::span<float>(recv)); }, ""},
      {"all_to_all chunks",
       [&] {
         return CollectiveCall::all_to_all(g, "x", std::span<const float>(short_recv), std::span<float>(short_recv));
       },
       "meshplan [collective_sizes]: all_to_all: 5 elements do not split into 3 equal chunks"},
      {"all_to_all recv", [&] { return CollectiveCall::all_to_all(g, "x", s6, std::span<float>(three)); },
       "meshplan [collective_sizes]: all_to_all 'x': group member 1 brings 3 elements where 6 are expected"},
      {"all_to_all_v fits",
       [&] {
         return CollectiveCall::all_to_all_v(g, "x", std::span<const float>(three), std::span(three_ones),
                                             std::span<float>(recv), std::span(one_two_three));
       },
       ""},
      {"all_to_all_v send counts",
       [&] {
         return CollectiveCall::all_to_all_v(g, "x", std::span<const float>(two), std::span(two_ones),
                                             std::span<float>(recv), std::span(one_two_three));
       },
       "meshplan [collective_sizes]: all_to_all_v send counts 'x': group member 1 brings 2 elements where 3 are "
       "expected"},
      {"all_to_all_v recv counts",
       [&] {
         return CollectiveCall::all_to_all_v(g, "x", std::span<const float>(three), std::span(three_ones),
                                             std::span<float>(two), std::span(two_ones));
       },
       "meshplan [collective_sizes]: all_to_all_v recv counts 'x': group member 1 brings 2 elements where 3 are "
       "expected"},
      {"all_to_all_v send",
       [&] {
         return CollectiveCall::all_to_all_v(g, "x", std::span<const float>(two), std::span(three_ones),
                                             std::span<float>(recv), std::span(one_two_three));
       },
       "meshplan [collective_sizes]: all_to_all_v send 'x': group member 1 brings 2 elements where 3 are expected"},
      {"all_to_all_v recv",
       [&] {
         return CollectiveCall::all_to_all_v(g, "x", std::span<const float>(three), std::span(three_ones),
                                             std::span<float>(short_recv), std::span(one_two_three));
       },
       "meshplan [collective_sizes]: all_to_all_v recv 'x': group member 1 brings 5 elements where 6 are expected"},
      {"broadcast fits", [&] { return CollectiveCall::broadcast(g, "x", std::span<float>(two), 2); }, ""},
      {"broadcast root past the end", [&] { return CollectiveCall::broadcast(g, "x", std::span<float>(two), 3); },
       "meshplan [collective_root]: broadcast root 3 is outside the group of 3"},
      {"broadcast root negative", [&] { return CollectiveCall::broadcast(g, "x", std::span<float>(two), -1); },
       "meshplan [collective_root]: broadcast root -1 is outside the group of 3"},
  };
  for (const OwnArguments& row : rows) {
    INFO(row.what);
    CHECK(row.call().problem().view() == row.message);
  }
  // Membership is the transports' check (they look the group up first), with its message.
  CHECK(mp::comm_rules::member_of_group(11, g).ok());
  CHECK(mp::comm_rules::member_of_group(12, g).view() ==
        "meshplan [collective_group]: rank 12 called a collective on a group it is not the member it claims to be "
        "(position 1 of 3)");
}

namespace {
struct PeerOffers {
  const char* what;
  std::function<CollectiveCall()> call;
  std::vector<mp::Offer> offers;  // member m's offer to the calling member
  std::string message;
  bool seen_by_every_member;
};
}  // namespace

TEST_CASE("the peers' offers against what a member expects: every message", "[comm][checks]") {
  const mp::Group g = member(1, 3);
  auto four = floats(4), twelve = floats(12), six = floats(6);
  const std::vector<PeerOffers> rows = {
      {"equal sizes",
       [&] { return CollectiveCall::all_reduce(g, "grads", std::span<float>(four)); },
       {{4, 4}, {4, 4}, {4, 4}},
       "",
       true},
      {"one member brings more",
       [&] { return CollectiveCall::all_reduce(g, "grads", std::span<float>(four)); },
       {{4, 4}, {4, 4}, {5, 4}},
       "meshplan [collective_sizes]: all_reduce 'grads': group member 2 brings 5 elements where 4 are expected",
       true},
      {"another element type, reported before sizes",
       [&] { return CollectiveCall::all_gather(g, "x", std::span<const float>(four), std::span<float>(twelve)); },
       {{4, 4}, {4, 4}, {3, 8}},
       "meshplan [collective_types]: all_gather: group member 2 brings elements of 8 bytes where 4 are expected",
       true},
      {"broadcast",
       [&] { return CollectiveCall::broadcast(g, "x", std::span<float>(four), 0); },
       {{3, 4}, {4, 4}, {4, 4}},
       "meshplan [collective_sizes]: broadcast 'x': group member 0 brings 3 elements where 4 are expected",
       true},
      {"reduce_scatter",
       [&] {
         return CollectiveCall::reduce_scatter(g, "", std::span<const float>(six), std::span<float>(four).first(2));
       },
       {{6, 4}, {6, 4}, {9, 4}},
       "meshplan [collective_sizes]: reduce_scatter: group member 2 brings 9 elements where 6 are expected",
       true},
      {"all_gather_v: a member's send against its count",
       [&] {
         return CollectiveCall::all_gather_v(g, "x", std::span<const float>(four).first(2), std::span<float>(six),
                                             std::span(one_two_three));
       },
       {{1, 4}, {2, 4}, {2, 4}},
       "meshplan [collective_sizes]: all_gather_v 'x': group member 2 brings 2 elements where 3 are expected",
       false},
      {"all_to_all_v: what a member sends me against what I expect of it",
       [&] {
         return CollectiveCall::all_to_all_v(g, "x", std::span<const float>(four).first(3), std::span(three_ones),
                                             std::span<float>(six), std::span(one_two_three));
       },
       {{2, 4}, {2, 4}, {3, 4}},
       "meshplan [collective_sizes]: all_to_all_v 'x': group member 0 brings 2 elements where 1 are expected",
       false},
  };
  for (const PeerOffers& row : rows) {
    INFO(row.what);
    const CollectiveCall call = row.call();
    REQUIRE(call.problem().ok());
    CHECK(call.peers([&](index_t m) { return row.offers[static_cast<std::size_t>(m)]; }).view() == row.message);
    CHECK(call.mismatches_seen_by_every_member() == row.seen_by_every_member);
  }
}

TEST_CASE("each collective's bytes, as CommStats counts them", "[comm][checks]") {
  // Member 1 of 4, float elements.
  const mp::Group g = member(1, 4);
  auto eight = floats(8), thirty_two = floats(32), two = floats(2);
  const std::vector<index_t> sends = {1, 5, 2, 3}, recvs = {1, 1, 1, 1};
  auto eleven = floats(11), four = floats(4);
  std::span<const float> e8(eight);
  CHECK(CollectiveCall::all_reduce(g, "", std::span<float>(eight)).bytes() == 2.0 * 3 / 4 * 32);
  CHECK(CollectiveCall::all_gather(g, "", e8, std::span<float>(thirty_two)).bytes() == 3.0 * 32);
  CHECK(CollectiveCall::all_gather_v(g, "", e8, std::span<float>(thirty_two), std::span(recvs)).bytes() == 3.0 * 32);
  CHECK(CollectiveCall::reduce_scatter(g, "", e8, std::span<float>(two)).bytes() == 3.0 / 4 * 32);
  CHECK(CollectiveCall::all_to_all(g, "", e8, std::span<float>(eight)).bytes() == 3.0 / 4 * 32);
  // Everything but what stays with member 1 itself (5 elements).
  CHECK(CollectiveCall::all_to_all_v(g, "", std::span<const float>(eleven), std::span(sends), std::span<float>(four),
                                     std::span(recvs))
            .bytes() == 6.0 * 4);
  CHECK(CollectiveCall::broadcast(g, "", std::span<float>(eight), 1).bytes() == 3.0 * 32);
  CHECK(CollectiveCall::broadcast(g, "", std::span<float>(eight), 0).bytes() == 0.0);
}

TEST_CASE("offers, and the offers table processes exchange", "[comm][checks]") {
  const mp::Group g = member(1, 3);
  auto six = floats(6), three = floats(3);
  const std::vector<index_t> sends = {0, 2, 1};
  const auto equal = CollectiveCall::all_to_all(g, "", std::span<const float>(six), std::span<float>(six));
  const auto counted = CollectiveCall::all_to_all_v(g, "", std::span<const float>(three), std::span(sends),
                                                    std::span<float>(six), std::span(one_two_three));
  CHECK(equal.chunk() == 2);
  CHECK(equal.offers_table() == std::vector<index_t>{6, 4, 6, 4, 6, 4});
  CHECK(counted.offers_table() == std::vector<index_t>{0, 4, 2, 4, 1, 4});
  CHECK(CollectiveCall::offer_in(counted.offers_table(), 2) == mp::Offer{1, 4});
  CHECK(counted.expected_from(2) == 3);
  CHECK(equal.expected_from(2) == 6);
  // all_reduce takes any buffer: there is nothing of its own arguments to agree on.
  CHECK_FALSE(CollectiveCall::all_reduce(g, "", std::span<float>(six)).checks_own_arguments());
  CHECK(equal.checks_own_arguments());
}

namespace {

/// check_among_processes on every member of a simulated group: the all-to-all is the
/// transposition of the members' tables, and an agreement throws on every member when any
/// member's message is not ok. Returns what each member threw ("" for nothing).
std::vector<std::string> check_everywhere(const std::vector<CollectiveCall>& calls) {
  const std::size_t n = calls.size();
  std::vector<std::vector<index_t>> tables(n);
  for (std::size_t m = 0; m < n; ++m) tables[m] = calls[m].offers_table();
  std::vector<std::string> thrown(n);
  auto agreement = [&](const std::vector<mp::Message>& problems, std::size_t me) {
    bool any = false;
    for (const auto& p : problems) any = any || !p.ok();
    if (!problems[me].ok()) throw mp::RuleViolation(problems[me]);
    if (any) throw mp::RuleViolation(mp::Message::rule("collective_peer_error") << "another member refused");
  };
  // What each member's own arguments and its peer check give, for the agreements.
  std::vector<mp::Message> own(n), peers(n);
  for (std::size_t m = 0; m < n; ++m) {
    own[m] = calls[m].problem();
    auto offer_from = [&](index_t from) {
      return CollectiveCall::offer_in(tables[static_cast<std::size_t>(from)], static_cast<index_t>(m));
    };
    if (own[m].ok()) peers[m] = calls[m].peers(offer_from);
  }
  // The agreements the members reach, in order: on their own arguments where the collective
  // has any, then on the peer checks where not every member sees a mismatch itself.
  std::vector<const std::vector<mp::Message>*> stages;
  if (calls[0].checks_own_arguments()) stages.push_back(&own);
  if (!calls[0].mismatches_seen_by_every_member()) stages.push_back(&peers);
  for (std::size_t me = 0; me < n; ++me) {
    std::size_t stage = 0;
    try {
      mp::check_among_processes(
          calls[me],
          [&](std::span<const index_t> mine, std::span<index_t> theirs) {
            REQUIRE(mine.size() == 2 * n);
            for (std::size_t from = 0; from < n; ++from) {
              theirs[2 * from] = tables[from][2 * me];
              theirs[2 * from + 1] = tables[from][2 * me + 1];
            }
          },
          [&](const mp::Message&) { agreement(*stages.at(stage++), me); });
    } catch (const mp::RuleViolation& e) {
      thrown[me] = e.what();
    }
  }
  return thrown;
}

}  // namespace

TEST_CASE("among processes, every member refuses together", "[comm][checks]") {
  auto four = floats(4), five = floats(5), six = floats(6);
  const auto g = [](index_t m) { return member(m, 3); };
  const std::string peer = "meshplan [collective_peer_error]: another member refused";

  // Sizes that differ: every member sees the difference itself and throws it, unagreed.
  auto sizes = check_everywhere({CollectiveCall::all_reduce(g(0), "x", std::span<float>(four)),
                                 CollectiveCall::all_reduce(g(1), "x", std::span<float>(five)),
                                 CollectiveCall::all_reduce(g(2), "x", std::span<float>(four))});
  CHECK(sizes[0] ==
        "meshplan [collective_sizes]: all_reduce 'x': group member 1 brings 5 elements where 4 are expected");
  CHECK(sizes[1] ==
        "meshplan [collective_sizes]: all_reduce 'x': group member 0 brings 4 elements where 5 are expected");
  CHECK(sizes[2] == sizes[0]);

  // One member's own arguments: it says why, the others that another refused.
  auto own = check_everywhere({CollectiveCall::broadcast(g(0), "x", std::span<float>(four), 0),
                               CollectiveCall::broadcast(g(1), "x", std::span<float>(four), 3),
                               CollectiveCall::broadcast(g(2), "x", std::span<float>(four), 0)});
  CHECK(own ==
        std::vector<std::string>{peer, "meshplan [collective_root]: broadcast root 3 is outside the group of 3", peer});

  // Counts only the receiver can see: agreed, so the sender and the bystander throw too.
  const std::vector<index_t> ones = {1, 1, 1}, more = {1, 2, 1};
  auto counts =
      check_everywhere({CollectiveCall::all_to_all_v(g(0), "x", std::span<const float>(four), std::span(more),
                                                     std::span<float>(six).first(3), std::span(ones)),
                        CollectiveCall::all_to_all_v(g(1), "x", std::span<const float>(four).first(3), std::span(ones),
                                                     std::span<float>(six).first(3), std::span(ones)),
                        CollectiveCall::all_to_all_v(g(2), "x", std::span<const float>(four).first(3), std::span(ones),
                                                     std::span<float>(six).first(3), std::span(ones))});
  CHECK(counts == std::vector<std::string>{peer,
                                           "meshplan [collective_sizes]: all_to_all_v 'x': group member 0 brings 2 "
                                           "elements where 1 are expected",
                                           peer});

  // Nothing wrong: nobody throws.
  auto fine = check_everywhere({CollectiveCall::all_reduce(g(0), "x", std::span<float>(four)),
                                CollectiveCall::all_reduce(g(1), "x", std::span<float>(four)),
                                CollectiveCall::all_reduce(g(2), "x", std::span<float>(four))});
  CHECK(fine == std::vector<std::string>(3));
}
