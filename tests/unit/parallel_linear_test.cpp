// Tensor-parallel linear layers and sequence-parallel conversions over ThreadComm, against
// the single-rank linear: colwise pieces bit for bit; rowwise partial sums within fp32
// reassociation (1e-5 of the largest output; see moe_block_test.cpp for the bound).
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/cpu/detail/parallel_linear.hpp"
#include "meshplan/placement/detail/slice.hpp"
#include "meshplan/mesh/mesh_spec.hpp"

namespace mp = meshplan;
using mp::index_t;

namespace {
mp::Tensor<float> random(std::vector<index_t> shape, unsigned seed) {
  mp::Tensor<float> t(std::move(shape));
  std::mt19937 rng(seed);
  std::normal_distribution<float> n;
  for (auto& v : t.vector()) v = n(rng);
  return t;
}
}  // namespace

TEST_CASE("colwise then rowwise over tp equals the single-rank MLP", "[linear]") {
  for (index_t tp : {1, 2, 4}) {
    const auto mesh = mp::MeshSpec::parse("tp=" + std::to_string(tp));
    const index_t T = 5, H = 16, I = 24;
    auto x = random({T, H}, 1), w1 = random({I, H}, 2), w2 = random({H, I}, 3), b2 = random({H}, 4);
    // Single rank: h = x w1^T; y = h w2^T + b2.
    auto h = mp::cpu::colwise_linear(x, w1);
    mp::Tensor<float> y_ref({T, H});
    mp::cpu::linear<float, float>(h.span(), T, w2.span(), H, I, y_ref.span());
    for (index_t i = 0; i < y_ref.numel(); ++i) y_ref[i] += b2[i % H];

    mp::LayoutSpec rows(mesh, {I, H}, {mp::PlacementSpec::shard(0)}), cols(mesh, {H, I}, {mp::PlacementSpec::shard(1)});
    std::vector<mp::Tensor<float>> y(static_cast<std::size_t>(tp)), y_sp(static_cast<std::size_t>(tp));
    mp::ThreadWorld world(tp);
    world.run([&](mp::ThreadComm& comm) {
      const auto g = mesh.group(comm.rank(), {"tp"});
      auto h_cols = mp::cpu::colwise_linear(x, mp::local_piece(w1, rows, comm.rank()));
      // The colwise piece is exactly the matching columns of the single-rank h.
      const auto held = rows.held_indices(0, comm.rank());
      for (index_t t = 0; t < T; ++t)
        for (index_t j = 0; j < h_cols.dim(1); ++j) CHECK(h_cols[t * h_cols.dim(1) + j] == h[t * I + held[0].begin + j]);
      const auto w2_cols = mp::local_piece(w2, cols, comm.rank());
      y[comm.rank()] = mp::cpu::rowwise_linear(comm, g, h_cols, w2_cols, &b2);
      // Sequence parallel: reduce-scatter needs T divisible by tp; pad to 8 tokens.
      mp::Tensor<float> h8({8, h_cols.dim(1)});
      std::copy(h_cols.vector().begin(), h_cols.vector().end(), h8.vector().begin());
      auto shard = mp::cpu::rowwise_linear(comm, g, h8, w2_cols, &b2, /*reduce_scatter=*/true);
      y_sp[comm.rank()] = mp::cpu::sp_gather(comm, g, shard);
      CHECK(mp::cpu::sp_split(g, y_sp[comm.rank()]) == shard);
    });
    double max_ref = 0;
    for (float v : y_ref.vector()) max_ref = std::max(max_ref, static_cast<double>(std::abs(v)));
    for (index_t r = 0; r < tp; ++r) {
      REQUIRE(y[r].shape() == y_ref.shape());
      for (index_t i = 0; i < y_ref.numel(); ++i) {
        CHECK(std::abs(y[r][i] - y_ref[i]) <= 1e-5 * max_ref);
        CHECK(std::abs(y_sp[r][i] - y_ref[i]) <= 1e-5 * max_ref);  // first 5 of 8 rows are the real tokens
      }
    }
  }
}

TEST_CASE("rowwise reduce-scatter refuses tokens that do not split", "[linear]") {
  mp::ThreadWorld world(2);
  CHECK_THROWS_WITH(world.run([&](mp::ThreadComm& comm) {
    auto x = random({3, 4}, 1), w = random({4, 4}, 2);
    mp::cpu::rowwise_linear(comm, comm.world_group(), x, w, nullptr, true);
  }),
                    Catch::Contains("[sequence_divisible]: rowwise_linear: 3 tokens do not split evenly over 2 ranks"));
}
