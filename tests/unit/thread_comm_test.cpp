// ThreadComm: every collective on groups of a mesh against what it must give, reductions in
// group order, size mismatches refused on every rank, and a failing rank never leaving the
// others waiting.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <vector>

#include "meshplan/comm/agree.hpp"
#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/mesh/mesh_spec.hpp"

namespace mp = meshplan;
using mp::index_t;

namespace {
// A value that identifies (rank, position) exactly in float.
float value(index_t rank, index_t i) { return static_cast<float>(rank * 1000 + i); }
}  // namespace

TEST_CASE("collectives on the groups of a dp x ep x tp mesh", "[comm]") {
  const auto mesh = mp::MeshSpec::parse("dp=2,ep=3,tp=2");
  mp::ThreadWorld world(mesh.size());
  world.run([&](mp::ThreadComm& comm) {
    const index_t r = comm.rank();
    for (auto axes : {std::vector<std::string_view>{"ep"}, std::vector<std::string_view>{"tp"},
                      std::vector<std::string_view>{"dp", "ep"}}) {
      const mp::Group g = mesh.group(r, axes);
      const index_t n = g.size();

      // all_gather: member m's 4 values at [4m, 4m + 4).
      std::vector<float> mine(4), all(4 * static_cast<std::size_t>(n));
      for (index_t i = 0; i < 4; ++i) mine[i] = value(r, i);
      comm.all_gather(std::span<const float>(mine), std::span<float>(all), g, "gather");
      for (index_t m = 0; m < n; ++m)
        for (index_t i = 0; i < 4; ++i) CHECK(all[m * 4 + i] == value(g.members[m], i));

      // all_reduce (sum and max), identical on every member.
      std::vector<float> sum(mine), max(mine);
      comm.all_reduce(std::span<float>(sum), g, mp::ReduceOp::sum);
      comm.all_reduce(std::span<float>(max), g, mp::ReduceOp::max);
      for (index_t i = 0; i < 4; ++i) {
        float expect = 0, biggest = value(g.members[0], i);
        for (index_t m = 0; m < n; ++m) expect += value(g.members[m], i);
        for (index_t m = 0; m < n; ++m) biggest = std::max(biggest, value(g.members[m], i));
        CHECK(sum[i] == expect);
        CHECK(max[i] == biggest);
      }

      // reduce_scatter: member m gets the sum of everyone's chunk m.
      std::vector<float> send(2 * static_cast<std::size_t>(n)), chunk(2);
      for (index_t i = 0; i < 2 * n; ++i) send[i] = value(r, i);
      comm.reduce_scatter(std::span<const float>(send), std::span<float>(chunk), g);
      for (index_t i = 0; i < 2; ++i) {
        float expect = 0;
        for (index_t m = 0; m < n; ++m) expect += value(g.members[m], g.rank * 2 + i);
        CHECK(chunk[i] == expect);
      }

      // all_to_all: chunk m of my send goes to member m.
      std::vector<index_t> a2a_send(static_cast<std::size_t>(n)), a2a_recv(static_cast<std::size_t>(n));
      for (index_t m = 0; m < n; ++m) a2a_send[m] = r * 100 + m;
      comm.all_to_all(std::span<const index_t>(a2a_send), std::span<index_t>(a2a_recv), g);
      for (index_t m = 0; m < n; ++m) CHECK(a2a_recv[m] == g.members[m] * 100 + g.rank);

      // all_to_all_v: member s sends s + q + 1 values to member q.
      std::vector<index_t> sc(static_cast<std::size_t>(n)), rc(static_cast<std::size_t>(n));
      std::vector<float> vsend, vrecv;
      for (index_t q = 0; q < n; ++q) {
        sc[q] = g.rank + q + 1;
        rc[q] = q + g.rank + 1;
        for (index_t i = 0; i < sc[q]; ++i) vsend.push_back(value(r, q * 10 + i));
      }
      index_t total = 0;
      for (auto c : rc) total += c;
      vrecv.resize(static_cast<std::size_t>(total));
      comm.all_to_all_v(std::span<const float>(vsend), sc, std::span<float>(vrecv), rc, g, "a2av");
      std::size_t at = 0;
      for (index_t s = 0; s < n; ++s)
        for (index_t i = 0; i < rc[s]; ++i) CHECK(vrecv[at++] == value(g.members[s], g.rank * 10 + i));

      // all_gather_v with member m bringing m + 1 values.
      std::vector<float> gv_send(static_cast<std::size_t>(g.rank + 1), static_cast<float>(r));
      std::vector<index_t> counts;
      index_t gv_total = 0;
      for (index_t m = 0; m < n; ++m) gv_total += (counts.emplace_back(m + 1));
      std::vector<float> gv(static_cast<std::size_t>(gv_total));
      comm.all_gather_v(std::span<const float>(gv_send), std::span<float>(gv), counts, g);
      at = 0;
      for (index_t m = 0; m < n; ++m)
        for (index_t i = 0; i <= m; ++i) CHECK(gv[at++] == static_cast<float>(g.members[m]));

      // broadcast from the last member.
      std::vector<float> b(3, static_cast<float>(r));
      comm.broadcast(std::span<float>(b), n - 1, g);
      for (float v : b) CHECK(v == static_cast<float>(g.members[n - 1]));
      comm.barrier(g);
    }
  });
}

TEST_CASE("reductions run in group order in fp32, whatever the timing", "[comm]") {
  // Values whose float sum depends on the order: only the group order gives `expect`.
  const std::vector<float> v = {1e8f, 1.0f, -1e8f, 1.0f};
  float expect = 0;
  for (float x : v) expect += x;  // ((1e8 + 1) - 1e8) + 1 = 1 in float
  mp::ThreadWorld world(4);
  for (int repeat = 0; repeat < 20; ++repeat)
    world.run([&](mp::ThreadComm& comm) {
      std::vector<float> x = {v[static_cast<std::size_t>(comm.rank())]};
      comm.all_reduce(std::span<float>(x), comm.world_group());
      CHECK(x[0] == expect);
      std::vector<mp::bfloat16> h = {mp::bfloat16(v[static_cast<std::size_t>(comm.rank())])};
      comm.all_reduce(std::span<mp::bfloat16>(h), comm.world_group());
      float hexpect = 0;
      for (float x0 : v) hexpect += static_cast<float>(mp::bfloat16(x0));
      CHECK(h[0] == mp::bfloat16(hexpect));
    });
}

TEST_CASE("mismatched sizes are refused on every rank; a failing rank releases the others", "[comm]") {
  mp::ThreadWorld world(3);
  // Member 1 brings 5 elements where the others bring 4: every member throws.
  std::atomic<int> refused{0};
  CHECK_THROWS_WITH(world.run([&](mp::ThreadComm& comm) {
    std::vector<float> x(comm.rank() == 1 ? 5 : 4);
    try {
      comm.all_reduce(std::span<float>(x), comm.world_group(), mp::ReduceOp::sum, "grads");
    } catch (const mp::RuleViolation&) {
      ++refused;
      throw;
    }
  }),
                    Catch::Contains("[collective_sizes]: all_reduce 'grads'"));
  CHECK(refused == 3);

  // Rank 2 throws before a collective the others wait in: they are released.
  CHECK_THROWS_WITH(world.run([&](mp::ThreadComm& comm) {
    if (comm.rank() == 2) throw std::runtime_error("rank 2 gave up");
    comm.barrier(comm.world_group());
  }),
                    "rank 2 gave up");

  // The world is usable again afterwards.
  world.run([&](mp::ThreadComm& comm) {
    std::vector<index_t> x = {comm.rank()};
    comm.all_reduce(std::span<index_t>(x), comm.world_group());
    CHECK(x[0] == 3);
  });

  // agree(): a problem on one rank becomes an exception on all, with the cause on its rank.
  std::atomic<int> peers{0};
  CHECK_THROWS_WITH(world.run([&](mp::ThreadComm& comm) {
    mp::Message problem;
    if (comm.rank() == 0) problem = mp::Message::rule("bad_input") << "rank 0's input is bad";
    try {
      mp::agree(comm, problem, comm.world_group());
    } catch (const mp::RuleViolation& e) {
      if (e.rule() == "peer_input_error") ++peers;
      throw;
    }
  }),
                    Catch::Contains("bad_input"));
  CHECK(peers == 2);
}

TEST_CASE("statistics count the bytes each rank sends", "[comm]") {
  mp::ThreadWorld world(4);
  world.run([&](mp::ThreadComm& comm) {
    std::vector<float> x(8), all(32);
    comm.all_gather(std::span<const float>(x), std::span<float>(all), comm.world_group(), "gather");
    comm.all_reduce(std::span<float>(x), comm.world_group(), mp::ReduceOp::sum, "reduce");
    CHECK(comm.stats().by_label.at("gather").bytes == 3 * 8 * 4);      // to each of 3 peers
    CHECK(comm.stats().by_label.at("reduce").bytes == 2.0 * 3 / 4 * 32);  // a ring all-reduce
    CHECK(comm.stats().by_label.at("gather").calls == 1);
  });
}
