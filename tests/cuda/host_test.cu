// The host side of the CUDA layer, which runs without a GPU (names "host: ..."): every size
// is refused before a launch, with the rule and a message; the router's report of a bad
// logit reads as the CPU router's; launch shapes and sort widths.
#include <catch2/catch.hpp>

#include <climits>
#include <cstdint>
#include <limits>

#include "meshplan/cpu/router.hpp"
#include "meshplan/cuda/experts/cublas_experts.cuh"
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
                    Catch::Contains("[device_sizes]") && Catch::Contains("the pair count is -1"));
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
  CHECK(nan.view() == mp::cpu_rules::router_logits_finite(3, 5, std::numeric_limits<float>::quiet_NaN()).view());
  const auto inf = mp::cuda::bad_logit((0 * 16 + 15) * 2, 16);
  CHECK(inf.view() == mp::cpu_rules::router_logits_finite(0, 15, std::numeric_limits<float>::infinity()).view());
}

TEST_CASE("host: the cuBLAS path refuses sizes before it touches the GPU", "[host]") {
  CHECK_THROWS_WITH(mp::cuda::CublasExperts(-1), Catch::Contains("chunk_rows is -1"));
  const float* x = nullptr;
  float* y = nullptr;
  CHECK_THROWS_WITH(mp::cuda::linear_rows(nullptr, x, 1LL << 31, x, 8, 8, y, 8),
                    Catch::Contains("[device_sizes]") && Catch::Contains("the row count is 2147483648"));
}
