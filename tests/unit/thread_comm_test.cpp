// ThreadComm: every collective on groups of every shape against what it must give,
// reductions in group order, the ordered sum's chain in segment order, every refusal with
// its message on the ranks that see it, the bytes CommStats counts, and a failing rank never
// leaving the others waiting.
//
// The ranks only record what they got; the checks run on the test's thread afterwards
// (Catch2's assertions are not made for many threads).
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <numeric>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "meshplan/comm/agree.hpp"
#include "meshplan/comm/detail/ordered_sum.hpp"
#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/mesh/mesh_spec.hpp"

namespace mp = meshplan;
using mp::index_t;

namespace {

// A value that identifies (rank, position) exactly in float.
float value(index_t rank, index_t i) { return static_cast<float>(rank * 1000 + i); }

/// What one rank got from a collective, and what it should have got.
struct Outcome {
  std::vector<double> got, want;
};

using Collective = std::function<Outcome(mp::ThreadComm&, const mp::Group&)>;

/// The reduction over the members in group order, in float, as the communicators compute it.
float reduced(const mp::Group& g, index_t i, mp::ReduceOp op) {
  float acc = value(g.members[0], i);
  for (std::size_t m = 1; m < g.members.size(); ++m) {
    const float v = value(g.members[m], i);
    if (op == mp::ReduceOp::max)
      acc = std::max(acc, v);
    else if (op == mp::ReduceOp::min)
      acc = std::min(acc, v);
    else
      acc = acc + v;
  }
  return op == mp::ReduceOp::avg ? acc / static_cast<float>(g.size()) : acc;
}

Collective all_reduce(mp::ReduceOp op) {
  return [op](mp::ThreadComm& comm, const mp::Group& g) {
    std::vector<float> x(5);
    for (index_t i = 0; i < 5; ++i) x[i] = value(comm.rank(), i);
    comm.all_reduce(std::span<float>(x), g, op, "reduce");
    Outcome o{{x.begin(), x.end()}, {}};
    for (index_t i = 0; i < 5; ++i) o.want.push_back(reduced(g, i, op));
    return o;
  };
}

Collective broadcast_from(index_t root_from_end) {
  return [root_from_end](mp::ThreadComm& comm, const mp::Group& g) {
    const index_t root = std::max<index_t>(g.size() - 1 - root_from_end, 0);
    std::vector<float> b = {value(comm.rank(), 0), value(comm.rank(), 1), value(comm.rank(), 2)};
    comm.broadcast(std::span<float>(b), root, g);
    return Outcome{{b.begin(), b.end()},
                   {value(g.members[root], 0), value(g.members[root], 1), value(g.members[root], 2)}};
  };
}

const std::vector<std::pair<std::string, Collective>> collectives = {
    {"all_reduce sum", all_reduce(mp::ReduceOp::sum)},
    {"all_reduce max", all_reduce(mp::ReduceOp::max)},
    {"all_reduce min", all_reduce(mp::ReduceOp::min)},
    {"all_reduce avg", all_reduce(mp::ReduceOp::avg)},
    {"all_gather",  // member m's 4 values at [4m, 4m + 4)
     [](mp::ThreadComm& comm, const mp::Group& g) {
       std::vector<float> mine(4), all(4 * static_cast<std::size_t>(g.size()));
       for (index_t i = 0; i < 4; ++i) mine[i] = value(comm.rank(), i);
       comm.all_gather(std::span<const float>(mine), std::span<float>(all), g, "gather");
       Outcome o{{all.begin(), all.end()}, {}};
       for (index_t m : g.members)
         for (index_t i = 0; i < 4; ++i) o.want.push_back(value(m, i));
       return o;
     }},
    {"all_gather_v",  // member m brings m + 1 values
     [](mp::ThreadComm& comm, const mp::Group& g) {
       std::vector<float> send;
       for (index_t i = 0; i <= g.rank; ++i) send.push_back(value(comm.rank(), i));
       std::vector<index_t> counts;
       for (index_t m = 0; m < g.size(); ++m) counts.push_back(m + 1);
       std::vector<float> recv(static_cast<std::size_t>(g.size() * (g.size() + 1) / 2));
       comm.all_gather_v(std::span<const float>(send), std::span<float>(recv), counts, g);
       Outcome o{{recv.begin(), recv.end()}, {}};
       for (index_t m = 0; m < g.size(); ++m)
         for (index_t i = 0; i <= m; ++i) o.want.push_back(value(g.members[m], i));
       return o;
     }},
    {"reduce_scatter",  // member m gets the sum of everyone's chunk m
     [](mp::ThreadComm& comm, const mp::Group& g) {
       std::vector<float> send(2 * static_cast<std::size_t>(g.size())), chunk(2);
       for (index_t i = 0; i < 2 * g.size(); ++i) send[i] = value(comm.rank(), i);
       comm.reduce_scatter(std::span<const float>(send), std::span<float>(chunk), g);
       Outcome o{{chunk.begin(), chunk.end()}, {}};
       for (index_t i = 0; i < 2; ++i) o.want.push_back(reduced(g, g.rank * 2 + i, mp::ReduceOp::sum));
       return o;
     }},
    {"all_to_all",  // chunk m of my send goes to member m
     [](mp::ThreadComm& comm, const mp::Group& g) {
       std::vector<index_t> send, recv(2 * static_cast<std::size_t>(g.size()));
       for (index_t m = 0; m < g.size(); ++m) send.insert(send.end(), {comm.rank() * 100 + m, -m});
       comm.all_to_all(std::span<const index_t>(send), std::span<index_t>(recv), g);
       Outcome o{{recv.begin(), recv.end()}, {}};
       for (index_t m = 0; m < g.size(); ++m)
         o.want.insert(o.want.end(), {double(g.members[m] * 100 + g.rank), -double(g.rank)});
       return o;
     }},
    {"all_to_all_v",  // member s sends (s + q) % 3 values to member q: some parts empty
     [](mp::ThreadComm& comm, const mp::Group& g) {
       std::vector<index_t> sc, rc;
       std::vector<float> send;
       for (index_t q = 0; q < g.size(); ++q) {
         sc.push_back((g.rank + q) % 3);
         rc.push_back((q + g.rank) % 3);
         for (index_t i = 0; i < sc.back(); ++i) send.push_back(value(comm.rank(), q * 10 + i));
       }
       std::vector<float> recv(static_cast<std::size_t>(std::accumulate(rc.begin(), rc.end(), index_t{0})));
       comm.all_to_all_v(std::span<const float>(send), sc, std::span<float>(recv), rc, g, "a2av");
       Outcome o{{recv.begin(), recv.end()}, {}};
       for (index_t s = 0; s < g.size(); ++s)
         for (index_t i = 0; i < rc[s]; ++i) o.want.push_back(value(g.members[s], g.rank * 10 + i));
       return o;
     }},
    {"broadcast from the last member", broadcast_from(0)},
    {"broadcast from the one before", broadcast_from(1)},
    {"barrier",
     [](mp::ThreadComm& comm, const mp::Group& g) {
       comm.barrier(g);
       return Outcome{};
     }},
};

/// Groups of every shape on one mesh: one member, one axis, two axes in mesh order and the
/// other way round, the whole world.
const std::vector<std::vector<std::string_view>> group_axes = {{"pp"},       {"ep"},       {"tp"},
                                                               {"dp", "ep"}, {"tp", "dp"}, {"dp", "ep", "tp", "pp"}};

std::string axes_name(const std::vector<std::string_view>& axes) {
  std::string s;
  for (auto a : axes) s += (s.empty() ? "" : ",") + std::string(a);
  return s;
}

}  // namespace

TEST_CASE("every collective on groups of every shape gives what it must", "[comm]") {
  const auto mesh = mp::MeshSpec::parse("dp=2,ep=3,tp=2,pp=1");
  // outcomes[rank][collective + " on " + axes]
  std::vector<std::map<std::string, Outcome>> outcomes(static_cast<std::size_t>(mesh.size()));
  mp::ThreadWorld world(mesh.size());
  world.run([&](mp::ThreadComm& comm) {
    for (const auto& axes : group_axes) {
      const mp::Group g = mesh.group(comm.rank(), axes);
      for (const auto& [name, run] : collectives)
        outcomes[static_cast<std::size_t>(comm.rank())][name + " on " + axes_name(axes)] = run(comm, g);
    }
  });
  for (std::size_t r = 0; r < outcomes.size(); ++r) {
    REQUIRE(outcomes[r].size() == collectives.size() * group_axes.size());
    for (const auto& [what, o] : outcomes[r]) {
      INFO("rank " << r << ": " << what);
      CHECK(o.got == o.want);
    }
  }
}

TEST_CASE("reductions run in group order in fp32, whatever the timing", "[comm]") {
  // Values whose float sum depends on the order: only the group order gives `expect`.
  const std::vector<float> v = {1e8f, 1.0f, -1e8f, 1.0f};
  float expect = 0;
  for (float x : v) expect += x;  // ((1e8 + 1) - 1e8) + 1 = 1 in float
  float hexpect = 0;
  for (float x : v) hexpect += static_cast<float>(mp::bfloat16(x));
  std::vector<float> sums(4);
  std::vector<mp::bfloat16> bsums(4);
  mp::ThreadWorld world(4);
  for (int repeat = 0; repeat < 20; ++repeat) {
    world.run([&](mp::ThreadComm& comm) {
      const auto r = static_cast<std::size_t>(comm.rank());
      std::vector<float> x = {v[r]};
      comm.all_reduce(std::span<float>(x), comm.world_group());
      std::vector<mp::bfloat16> h = {mp::bfloat16(v[r])};
      comm.all_reduce(std::span<mp::bfloat16>(h), comm.world_group());
      sums[r] = x[0];
      bsums[r] = h[0];
    });
    CHECK(sums == std::vector<float>(4, expect));
    CHECK(bsums == std::vector<mp::bfloat16>(4, mp::bfloat16(hexpect)));
  }
}

namespace {

/// A collective called wrongly on a world of three, and what the ranks must say.
struct Refusal {
  const char* what;
  std::function<void(mp::ThreadComm&)> call;
  std::string message;  // the text the world rethrows (the lowest refusing rank's)
  index_t refusing;     // the ranks that see the problem and throw it; the others are released, or finish
                        // where the problem is only between a sender and its receiver
};

const std::vector<Refusal> refusals = {
    {"sizes differ (every member sees it)",
     [](mp::ThreadComm& comm) {
       std::vector<float> x(comm.rank() == 1 ? 5 : 4);
       comm.all_reduce(std::span<float>(x), comm.world_group(), mp::ReduceOp::sum, "grads");
     },
     "meshplan [collective_sizes]: all_reduce 'grads': group member 1 brings 5 elements where 4 are expected", 3},
    {"element types differ",
     [](mp::ThreadComm& comm) {
       if (comm.rank() == 1) {
         std::vector<index_t> x(4);
         comm.all_reduce(std::span<index_t>(x), comm.world_group());
       } else {
         std::vector<float> x(4);
         comm.all_reduce(std::span<float>(x), comm.world_group());
       }
     },
     "meshplan [collective_types]: all_reduce: group member 1 brings elements of 8 bytes where 4 are expected", 3},
    {"all_gather: recv of the wrong size",
     [](mp::ThreadComm& comm) {
       std::vector<float> send(2), recv(comm.rank() == 2 ? 7 : 6);
       comm.all_gather(std::span<const float>(send), std::span<float>(recv), comm.world_group(), "x");
     },
     "meshplan [collective_sizes]: all_gather 'x': group member 2 brings 7 elements where 6 are expected", 1},
    {"all_gather_v: a member brings other than its count",
     [](mp::ThreadComm& comm) {
       std::vector<float> send(comm.rank() == 1 ? 3 : 2), recv(6);
       const std::vector<index_t> counts = {2, 2, 2};
       comm.all_gather_v(std::span<const float>(send), std::span<float>(recv), counts, comm.world_group(), "x");
     },
     "meshplan [collective_sizes]: all_gather_v 'x': group member 1 brings 3 elements where 2 are expected", 3},
    {"all_gather_v: one count too few",
     [](mp::ThreadComm& comm) {
       std::vector<float> send(2), recv(6);
       const std::vector<index_t> counts = {2, 2};
       comm.all_gather_v(std::span<const float>(send), std::span<float>(recv), counts, comm.world_group());
     },
     "meshplan [collective_sizes]: all_gather_v counts: group member 0 brings 2 elements where 3 are expected", 3},
    {"reduce_scatter: chunks that do not divide",
     [](mp::ThreadComm& comm) {
       std::vector<float> send(4), recv(1);
       comm.reduce_scatter(std::span<const float>(send), std::span<float>(recv), comm.world_group());
     },
     "meshplan [collective_sizes]: reduce_scatter: 4 elements do not split into 3 equal chunks", 3},
    {"all_to_all: recv of the wrong size",
     [](mp::ThreadComm& comm) {
       std::vector<float> send(6), recv(comm.rank() == 0 ? 3 : 6);
       comm.all_to_all(std::span<const float>(send), std::span<float>(recv), comm.world_group(), "x");
     },
     "meshplan [collective_sizes]: all_to_all 'x': group member 0 brings 3 elements where 6 are expected", 1},
    {"all_to_all_v: a sender's count is not the receiver's",
     [](mp::ThreadComm& comm) {
       // Rank 0 sends 2 to rank 1, which expects 1; everything else is 1.
       const std::vector<index_t> sc = {1, comm.rank() == 0 ? 2 : 1, 1}, rc = {1, 1, 1};
       std::vector<float> send(static_cast<std::size_t>(sc[0] + sc[1] + sc[2])), recv(3);
       comm.all_to_all_v(std::span<const float>(send), sc, std::span<float>(recv), rc, comm.world_group(), "x");
     },
     "meshplan [collective_sizes]: all_to_all_v 'x': group member 0 brings 2 elements where 1 are expected", 1},
    {"all_to_all_v: send shorter than its counts",
     [](mp::ThreadComm& comm) {
       const std::vector<index_t> counts = {1, 1, 1};
       std::vector<float> send(2), recv(3);
       comm.all_to_all_v(std::span<const float>(send), counts, std::span<float>(recv), counts, comm.world_group());
     },
     "meshplan [collective_sizes]: all_to_all_v send: group member 0 brings 2 elements where 3 are expected", 3},
    {"broadcast: root outside the group",
     [](mp::ThreadComm& comm) {
       std::vector<float> x(2);
       comm.broadcast(std::span<float>(x), 3, comm.world_group());
     },
     "meshplan [collective_root]: broadcast root 3 is outside the group of 3", 3},
    {"broadcast: sizes differ",
     [](mp::ThreadComm& comm) {
       std::vector<float> x(comm.rank() == 2 ? 2 : 3);
       comm.broadcast(std::span<float>(x), 0, comm.world_group(), "x");
     },
     "meshplan [collective_sizes]: broadcast 'x': group member 2 brings 2 elements where 3 are expected", 3},
    {"a rank claims another's position",
     [](mp::ThreadComm& comm) {
       mp::Group g = comm.world_group();
       if (comm.rank() == 1) g.rank = 0;
       comm.barrier(g);
     },
     "meshplan [collective_group]: rank 1 called a collective on a group it is not the member it claims to be "
     "(position 0 of 3)",
     1},
};

}  // namespace

TEST_CASE("ordered_sum: one chain in segment order over the owners, whatever the accumulator held", "[comm]") {
  // Segment i adds x_i y_j to element j of two parts (sizes 3 and 5), one fma each: a chain
  // whose bits depend on the order. Every member starts from NaN, which no step may read.
  const std::vector<float> x{1e8f, 1.0f, -1e8f, 3.0f, 0.5f};
  auto y = [](std::size_t j) { return 1.0f + static_cast<float>(j) * 0x1p-20f; };
  std::vector<float> want(8);
  for (std::size_t j = 0; j < want.size(); ++j) {
    float acc = 0.0f;
    for (float xi : x) acc = std::fma(xi, y(j), acc);
    want[j] = acc;
  }
  for (const std::vector<index_t>& owners : {std::vector<index_t>{0, 0, 2, 1, 2}, std::vector<index_t>{1, 1, 1, 1, 1},
                                             std::vector<index_t>{2, 0, 1, 0, 2}}) {
    const index_t n = 3;
    std::vector<std::vector<float>> got(n);
    std::vector<std::vector<std::size_t>> added(n);
    mp::ThreadWorld(n).run([&](mp::ThreadComm& comm) {
      const auto r = static_cast<std::size_t>(comm.rank());
      std::vector<float> a(3, std::numeric_limits<float>::quiet_NaN()), b(5, std::numeric_limits<float>::quiet_NaN());
      const std::span<float> parts[2] = {a, b};
      mp::ordered_sum(comm, comm.world_group(), owners, std::span<const std::span<float>>(parts),
                      [&](std::size_t segment, bool fresh) {
                        added[r].push_back(segment);
                        for (std::size_t j = 0; j < 8; ++j) {
                          float& acc = j < 3 ? a[j] : b[j - 3];
                          acc = std::fma(x[segment], y(j), fresh ? 0.0f : acc);
                        }
                      },
                      "test");
      got[r] = a;
      got[r].insert(got[r].end(), b.begin(), b.end());
    });
    for (index_t r = 0; r < n; ++r) {
      INFO("owners " << ::Catch::Detail::stringify(owners) << ", rank " << r);
      CHECK(std::memcmp(got[static_cast<std::size_t>(r)].data(), want.data(), want.size() * sizeof(float)) == 0);
      std::vector<std::size_t> mine;
      for (std::size_t i = 0; i < owners.size(); ++i)
        if (owners[i] == r) mine.push_back(i);
      CHECK(added[static_cast<std::size_t>(r)] == mine);
    }
  }
  // One member: every segment its own, no traffic.
  mp::ThreadWorld(1).run([&](mp::ThreadComm& comm) {
    std::vector<float> acc(8, -1.0f);
    const std::vector<index_t> owners(x.size(), 0);
    mp::ordered_sum(comm, comm.world_group(), owners, std::span<float>(acc),
                    [&](std::size_t segment, bool fresh) {
                      for (std::size_t j = 0; j < 8; ++j) acc[j] = std::fma(x[segment], y(j), fresh ? 0.0f : acc[j]);
                    },
                    "test");
    if (std::memcmp(acc.data(), want.data(), want.size() * sizeof(float)) != 0) throw std::runtime_error("one member");
  });
}

TEST_CASE("every refusal has its message, on the ranks that see it; the others are released", "[comm]") {
  mp::ThreadWorld world(3);
  for (const Refusal& refusal : refusals) {
    INFO(refusal.what);
    std::atomic<index_t> refused{0}, released{0}, finished{0};
    std::string thrown;
    try {
      world.run([&](mp::ThreadComm& comm) {
        try {
          refusal.call(comm);
          ++finished;
        } catch (const mp::RuleViolation&) {
          ++refused;
          throw;
        } catch (const mp::CommAborted&) {
          ++released;
          throw;
        }
      });
    } catch (const std::exception& e) {
      thrown = e.what();
    }
    CHECK(thrown == refusal.message);
    CHECK(refused == refusal.refusing);
    CHECK(released + finished == 3 - refusal.refusing);
  }
  // The world runs again afterwards.
  std::vector<index_t> sums(3);
  world.run([&](mp::ThreadComm& comm) {
    std::vector<index_t> x = {comm.rank()};
    comm.all_reduce(std::span<index_t>(x), comm.world_group());
    sums[static_cast<std::size_t>(comm.rank())] = x[0];
  });
  CHECK(sums == std::vector<index_t>{3, 3, 3});
}

TEST_CASE("a failing rank releases the others; agree() turns one rank's problem into all ranks' error", "[comm]") {
  mp::ThreadWorld world(3);
  // Rank 2 throws before a collective the others wait in: they are released.
  CHECK_THROWS_WITH(world.run([&](mp::ThreadComm& comm) {
    if (comm.rank() == 2) throw std::runtime_error("rank 2 gave up");
    comm.barrier(comm.world_group());
  }),
                    "rank 2 gave up");

  std::atomic<int> peers{0};
  CHECK_THROWS_WITH(world.run([&](mp::ThreadComm& comm) {
    mp::Message problem;
    if (comm.rank() == 0) problem = mp::Message::rule("batch_shape") << "rank 0's input is bad";
    try {
      mp::agree(comm, problem, comm.world_group());
    } catch (const mp::RuleViolation& e) {
      if (e.rule() == "peer_input_error") ++peers;
      throw;
    }
  }),
                    Catch::Contains("batch_shape"));
  CHECK(peers == 2);
}

TEST_CASE("statistics count, per label, the calls and the bytes each rank sends", "[comm]") {
  // On a world of 4, rank r; float elements. What a ring or a direct exchange sends.
  struct Row {
    const char* label;
    std::function<void(mp::ThreadComm&)> call;
    std::function<double(index_t rank)> bytes;
  };
  const std::vector<Row> rows = {
      {"all_reduce",
       [](mp::ThreadComm& c) {
         std::vector<float> x(8);
         c.all_reduce(std::span<float>(x), c.world_group(), mp::ReduceOp::sum, "all_reduce");
       },
       [](index_t) { return 2.0 * 3 / 4 * 32; }},
      {"all_gather",
       [](mp::ThreadComm& c) {
         std::vector<float> x(8), all(32);
         c.all_gather(std::span<const float>(x), std::span<float>(all), c.world_group(), "all_gather");
       },
       [](index_t) { return 3.0 * 32; }},  // to each of 3 peers
      {"all_gather_v",
       [](mp::ThreadComm& c) {
         std::vector<float> x(static_cast<std::size_t>(c.rank())), all(6);
         const std::vector<index_t> counts = {0, 1, 2, 3};
         c.all_gather_v(std::span<const float>(x), std::span<float>(all), counts, c.world_group(), "all_gather_v");
       },
       [](index_t r) { return 3.0 * 4 * static_cast<double>(r); }},
      {"reduce_scatter",
       [](mp::ThreadComm& c) {
         std::vector<float> x(8), part(2);
         c.reduce_scatter(std::span<const float>(x), std::span<float>(part), c.world_group(), mp::ReduceOp::sum,
                          "reduce_scatter");
       },
       [](index_t) { return 3.0 / 4 * 32; }},
      {"all_to_all",
       [](mp::ThreadComm& c) {
         std::vector<float> x(8), y(8);
         c.all_to_all(std::span<const float>(x), std::span<float>(y), c.world_group(), "all_to_all");
       },
       [](index_t) { return 3.0 / 4 * 32; }},
      {"all_to_all_v",
       [](mp::ThreadComm& c) {  // rank r sends r + 1 to each, keeps its own part
         const index_t r = c.rank();
         const std::vector<index_t> sc(4, r + 1), rc = {1, 2, 3, 4};
         std::vector<float> x(static_cast<std::size_t>(4 * (r + 1))), y(10);
         c.all_to_all_v(std::span<const float>(x), sc, std::span<float>(y), rc, c.world_group(), "all_to_all_v");
       },
       [](index_t r) { return 3.0 * 4 * static_cast<double>(r + 1); }},
      {"broadcast",
       [](mp::ThreadComm& c) {
         std::vector<float> x(8);
         c.broadcast(std::span<float>(x), 1, c.world_group(), "broadcast");
       },
       [](index_t r) { return r == 1 ? 3.0 * 32 : 0.0; }},
  };
  std::vector<mp::CommStats> stats(4);
  mp::ThreadWorld world(4);
  world.run([&](mp::ThreadComm& comm) {
    for (const Row& row : rows) row.call(comm);
    for (const Row& row : rows) row.call(comm);
    stats[static_cast<std::size_t>(comm.rank())] = comm.stats();
  });
  for (index_t r = 0; r < 4; ++r)
    for (const Row& row : rows) {
      INFO("rank " << r << ": " << row.label);
      const auto& entry = stats[static_cast<std::size_t>(r)].by_label.at(row.label);
      CHECK(entry.calls == 2);
      CHECK(entry.bytes == 2 * row.bytes(r));
    }
}
