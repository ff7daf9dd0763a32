// The host side of the CUDA layer, which runs without a GPU (names "host: ..."): every size
// is refused before a launch, with the rule and a message; the router's report of a bad
// logit reads as the CPU router's; launch shapes and sort widths.
#include <catch2/catch.hpp>

#include <climits>
#include <cstdint>
#include <limits>

#include "meshplan/cpu/detail/router.hpp"
#include "meshplan/cuda/experts/cublas_experts.cuh"
#include "meshplan/cuda/experts/fused_experts.cuh"
#include "meshplan/cuda/permute/device_permute.cuh"
#include "meshplan/cuda/router/device_router.cuh"
#include "meshplan/model/presets.hpp"

namespace mp = meshplan;
using mp::index_t;
using P = mp::cuda::DevicePermute;

TEST_CASE("host: the radix sort keeps only the bits the expert count needs", "[host]") {
  CHECK(mp::cuda::expert_bits(1) == 1);
  CHECK(mp::cuda::expert_bits(2) == 1);
  CHECK(mp::cuda::expert_bits(3) == 2);
  CHECK(mp::cuda::expert_bits(8) == 3);
  CHECK(mp::cuda::expert_bits(9) == 4);
  CHECK(mp::cuda::expert_bits(128) == 7);
  CHECK(mp::cuda::expert_bits(256) == 8);
  CHECK(mp::cuda::expert_bits(257) == 9);
}

TEST_CASE("host: grids cover the work with at least one block", "[host]") {
  CHECK(mp::cuda::grid_for(0, 256) == 1);
  CHECK(mp::cuda::grid_for(1, 256) == 1);
  CHECK(mp::cuda::grid_for(257, 256) == 2);
  CHECK(mp::cuda::grid_for(1LL << 40, 256) == 65535u * 32u);
}

TEST_CASE("host: DevicePermute refuses sizes before launching", "[host]") {
  std::size_t bytes = 0;
  std::int32_t* none = nullptr;
  CHECK_THROWS_WITH(P::sort_by_expert(nullptr, bytes, none, none, none, -1, 8, nullptr),
                    Catch::Contains("[device_size_range]") && Catch::Contains("the pair count is -1"));
  CHECK_THROWS_WITH(P::sort_by_expert(nullptr, bytes, none, none, none, 4, 0, nullptr),
                    Catch::Contains("the expert count 0 is outside 1.."));
  CHECK_THROWS_WITH(P::sort_by_expert(nullptr, bytes, none, none, none, 4, 8, nullptr),
                    Catch::Contains("expert_ids is null but 4 elements are asked for"));
  CHECK_THROWS_WITH(P::expert_offsets(nullptr, bytes, none, 1LL << 31, 8, none, none, nullptr, nullptr),
                    Catch::Contains("the pair count is 2147483648"));
  const float* rows = nullptr;
  float* out = nullptr;
  CHECK_THROWS_WITH(P::gather_rows(rows, none, 2, 10, 64, out, nullptr), Catch::Contains("the rows is null"));
  CHECK_THROWS_WITH(P::gather_rows(rows, none, 2, 10, 1LL << 30, out, nullptr),
                    Catch::Contains("the row width in bytes is 4294967296"));
  CHECK_THROWS_WITH(P::combine(rows, none, nullptr, 1LL << 20, 1LL << 12, 8, out, nullptr),
                    Catch::Contains("the pair count is 4294967296"));
}

TEST_CASE("host: the router refuses what it cannot route before launching", "[host]") {
  mp::cuda::RouterParams p = mp::cuda::RouterParams::of(mp::models::DeepSeek_V3::spec);
  CHECK(p.experts == 256);
  CHECK(p.top_k == 8);
  CHECK(p.groups == 8);
  CHECK(p.kept_groups == 4);
  CHECK(p.scaling == 2.5f);
  CHECK(p.normalize);
  const float* x = nullptr;
  CHECK_THROWS_WITH(mp::cuda::DeviceRouter::route(x, x, nullptr, p, 4, nullptr, nullptr, nullptr, nullptr, nullptr),
                    Catch::Contains("needs e_score_correction_bias"));
  p.top_k = 300;
  CHECK_THROWS_WITH(mp::cuda::DeviceRouter::route(x, x, nullptr, p, 4, nullptr, nullptr, nullptr, nullptr, nullptr),
                    Catch::Contains("[config_top_k]: num_experts_per_tok (300) must be between 1 and the number of "
                                    "experts (256)"));
  p.top_k = 8;
  p.groups = 64;  // 64 groups of 4 experts, one kept: 4 experts cannot hold the top 8
  p.kept_groups = 1;
  CHECK_THROWS_WITH(mp::cuda::DeviceRouter::route(x, x, nullptr, p, 4, nullptr, nullptr, nullptr, nullptr, nullptr),
                    Catch::Contains("[config_groups]: the 1 kept groups hold 4 experts, fewer than "
                                    "num_experts_per_tok (8)"));
  p = mp::cuda::RouterParams::of(mp::models::Qwen3_30B_A3B::spec);
  p.experts = 8192;
  CHECK_THROWS_WITH(mp::cuda::DeviceRouter::route(x, x, nullptr, p, 4, nullptr, nullptr, nullptr, nullptr, nullptr),
                    Catch::Contains("in shared memory"));
}

TEST_CASE("host: the router's report of a non-finite logit is the CPU router's message", "[host]") {
  CHECK(mp::cuda::bad_logit(mp::cuda::no_bad_logit, 16).ok());
  const auto nan = mp::cuda::bad_logit((3 * 16 + 5) * 2 + 1, 16);
  CHECK(nan.view() == mp::routing_rules::router_logits_finite(3, 5, std::numeric_limits<float>::quiet_NaN()).view());
  const auto inf = mp::cuda::bad_logit((0 * 16 + 15) * 2, 16);
  CHECK(inf.view() == mp::routing_rules::router_logits_finite(0, 15, std::numeric_limits<float>::infinity()).view());
}

TEST_CASE("host: the cuBLAS path refuses sizes before it touches the GPU", "[host]") {
  CHECK_THROWS_WITH(mp::cuda::CublasExperts(-1), Catch::Contains("chunk_rows is -1"));
  const float* x = nullptr;
  float* y = nullptr;
  CHECK_THROWS_WITH(mp::cuda::linear_rows(nullptr, x, 1LL << 31, x, 8, 8, y, 8),
                    Catch::Contains("[device_size_range]") && Catch::Contains("the row count is 2147483648"));
}

TEST_CASE("host: the fused experts cut every expert's rows into tiles, skipping experts without rows", "[host]") {
  using mp::cuda::GemmTile;
  // Experts 0..3 with 0, 130, 1 and 64 rows, tiles of 64 rows.
  const std::vector<index_t> offsets = {0, 0, 130, 131, 195};
  CHECK(mp::cuda::expert_tiles(offsets, 64) ==
        std::vector<GemmTile>{{1, 0, 64}, {1, 64, 64}, {1, 128, 2}, {2, 130, 1}, {3, 131, 64}});
  CHECK(mp::cuda::expert_tiles(std::vector<index_t>{0, 0, 0}, 64).empty());
  CHECK(mp::cuda::expert_tiles(std::vector<index_t>{}, 64).empty());
  // One expert with all the rows of a skewed batch.
  const auto skewed = mp::cuda::expert_tiles(std::vector<index_t>{0, 0, 1000, 1000}, 128);
  CHECK(skewed.size() == 8);
  CHECK(skewed.back() == GemmTile{1, 896, 104});
}

TEST_CASE("host: the tile shape follows the load, the path the device and the storage", "[host]") {
  CHECK_FALSE(mp::cuda::large_tiles(std::vector<index_t>{0, 10, 20}));
  CHECK(mp::cuda::large_tiles(std::vector<index_t>{0, 0, 300}));  // one busy expert of 300 rows
  CHECK_FALSE(mp::cuda::large_tiles(std::vector<index_t>{0, 0, 0}));
  using Path = mp::cuda::ExpertPath;
  CHECK(mp::cuda::expert_path(90, true, true) == Path::wgmma);
  CHECK(mp::cuda::expert_path(90, true, false) == Path::mma_sync);  // a build without sm_90a code
  CHECK(mp::cuda::expert_path(100, true, true) == Path::mma_sync);  // wgmma is sm_90's alone
  CHECK(mp::cuda::expert_path(80, true, false) == Path::mma_sync);
  CHECK(mp::cuda::expert_path(75, true, false) == Path::cublas);
  CHECK(mp::cuda::expert_path(90, false, true) == Path::cublas);
  using P = mp::cuda::ExpertGemmPolicies;
  STATIC_REQUIRE(P::gate_up_small::block_m == P::down_small::block_m);
  STATIC_REQUIRE(P::gate_up_large::block_m == P::down_large::block_m);
  STATIC_REQUIRE(P::gate_up_small::block_k == P::gate_up_large::block_k);  // the same summation order
  STATIC_REQUIRE(P::down_small::block_k == P::down_large::block_k);
}

TEST_CASE("host: the fused experts refuse sizes before launching", "[host]") {
  mp::cuda::FusedExperts experts;
  const __nv_bfloat16* w = nullptr;
  float* out = nullptr;
  CHECK_THROWS_WITH(experts.dense(w, 4, w, w, w, 0, 8, out, nullptr),
                    Catch::Contains("[device_size_range]") && Catch::Contains("hidden 0"));
  CHECK_THROWS_WITH(experts.dense(w, 1LL << 31, w, w, w, 64, 8, out, nullptr), Catch::Contains("rows 2147483648"));
  CHECK_THROWS_WITH(experts.dense(w, 4, w, w, w, 64, mp::cuda::fused_max_width + 1, out, nullptr),
                    Catch::Contains("widths of 1 to 2097120"));
}
