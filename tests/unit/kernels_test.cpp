// The CPU reference kernels on cases worked out by hand: the three routers (ties, groups,
// scaling, refusal of non-finite logits), the stable sort by expert, regrouping, slicing.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "meshplan/cpu/detail/permute.hpp"
#include "meshplan/cpu/detail/router.hpp"
#include "meshplan/placement/detail/slice.hpp"
#include "meshplan/model/presets.hpp"
#include "meshplan/moe/detail/dispatch_plan.hpp"

namespace mp = meshplan;
using mp::index_t;

namespace {
mp::Tensor<float> logits(std::vector<std::vector<float>> rows) {
  mp::Tensor<float> t({static_cast<index_t>(rows.size()), static_cast<index_t>(rows[0].size())});
  for (std::size_t r = 0; r < rows.size(); ++r)
    for (std::size_t e = 0; e < rows[r].size(); ++e) t[static_cast<index_t>(r * rows[r].size() + e)] = rows[r][e];
  return t;
}
mp::ModelSpec softmax_model(mp::Family f, index_t experts, index_t k, bool norm) {
  mp::ModelSpec m = mp::models::TinyQwen3Moe::spec;
  m.family = f;
  m.num_experts = experts;
  m.num_experts_per_tok = k;
  m.norm_topk_prob = norm;
  return m;
}
}  // namespace

TEST_CASE("softmax routers: top-k in descending order, ties to the lower expert", "[router]") {
  auto l = logits({{1.0f, 3.0f, 2.0f, 3.0f}});
  // Softmax of [1, 3, 2, 3]: experts 1 and 3 tie for first; 1 comes first.
  const float z = std::exp(-2.0f) + 1 + std::exp(-1.0f) + 1;
  auto qwen = mp::cpu::route(softmax_model(mp::Family::qwen3_moe, 4, 2, false), l);
  CHECK(qwen.experts == std::vector<std::int32_t>{1, 3});
  CHECK(qwen.weights[0] == Approx(1 / z));
  CHECK(qwen.weights[1] == Approx(1 / z));
  auto qwen_norm = mp::cpu::route(softmax_model(mp::Family::qwen3_moe, 4, 3, true), l);
  CHECK(qwen_norm.experts == std::vector<std::int32_t>{1, 3, 2});
  CHECK(qwen_norm.weights[0] + qwen_norm.weights[1] + qwen_norm.weights[2] == Approx(1.0f));
  // Mixtral always renormalizes, whatever norm_topk_prob says.
  auto mixtral = mp::cpu::route(softmax_model(mp::Family::mixtral, 4, 2, false), l);
  CHECK(mixtral.weights[0] == Approx(0.5f));
  CHECK(mixtral.weights[1] == Approx(0.5f));
}

TEST_CASE("DeepSeek-V3 router: sigmoid, bias for choice only, group-limited top-k, scaling", "[router]") {
  mp::ModelSpec m = mp::models::TinyDeepSeekV3::spec;  // 16 experts, 4 groups of 4, keep 2 groups, top-4
  std::vector<float> row(16, -4.0f), bias(16, 0.0f);
  // Group 3 has the single best expert (15) but a weak second; groups 0 and 1 have two strong experts each.
  row[15] = 5.0f;
  row[1] = 2.0f, row[2] = 1.9f;
  row[4] = 1.8f, row[6] = 1.7f;
  bias[6] = 0.5f;  // lifts expert 6 above 4 for the choice, not for its weight
  auto r = mp::cpu::route(m, logits({row}), bias);
  auto sig = [](float x) { return 1.0f / (1.0f + std::exp(-x)); };
  // Group scores (top-2 sums of sigmoid + bias): g0 = s(2)+s(1.9), g1 = s(1.7)+0.5+s(1.8), g3 = s(5)+s(-4).
  // Kept: g1, g0. Top-4 within them by choice score: 6 (s(1.7) + 0.5), 1, 2, 4.
  CHECK(r.experts == std::vector<std::int32_t>{6, 1, 2, 4});
  const float total = sig(1.7f) + sig(1.8f) + sig(2.0f) + sig(1.9f);
  CHECK(r.weights[0] == Approx(sig(1.7f) / (total + 1e-20f) * 2.5f));
  CHECK(r.weights[1] == Approx(sig(2.0f) / total * 2.5f));
  CHECK(r.weights[3] == Approx(sig(1.8f) / total * 2.5f));
}

TEST_CASE("non-finite router logits are refused, naming the token", "[router]") {
  auto m = softmax_model(mp::Family::qwen3_moe, 4, 2, true);
  auto l = logits({{0, 1, 2, 3}, {0, std::numeric_limits<float>::quiet_NaN(), 2, 3}});
  CHECK_THROWS_WITH(mp::cpu::route(m, l), "meshplan [router_logits_finite]: the router logit of token 1 for expert 1 "
                                          "is NaN; routing needs finite logits (check the hidden states)");
  l[3] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(mp::cpu::route(m, l), Catch::Contains("token 0 for expert 3 is infinite"));
  auto empty = mp::cpu::route(m, mp::Tensor<float>({0, 4}));
  CHECK(empty.tokens == 0);
  CHECK(empty.experts.empty());
}

TEST_CASE("pairs sort by expert stably; regrouping puts received blocks expert-major", "[permute]") {
  mp::Routing r{3, 2, {2, 0, 0, 2, 1, 2}, {}};  // pairs: (t0: 2, 0), (t1: 0, 2), (t2: 1, 2)
  auto o = mp::cpu::sort_by_expert(r, 4);
  CHECK(o.order == std::vector<index_t>{1, 2, 4, 0, 3, 5});
  CHECK(o.counts == std::vector<index_t>{2, 1, 3, 0});
  CHECK(o.offsets == std::vector<index_t>{0, 2, 3, 6, 6});
  CHECK(mp::cpu::tokens_of(o, 2) == std::vector<index_t>{0, 1, 2, 0, 1, 2});
  // Received from 2 sources for 2 local experts: counts (s0: 1, 2), (s1: 3, 0).
  std::vector<index_t> counts = {1, 2, 3, 0};
  CHECK(mp::regroup_blocks(counts, 2, 2) ==
        std::vector<mp::RowBlock>{{0, 0, 1}, {3, 1, 3}, {1, 4, 2}});
  mp::Routing bad{1, 1, {7}, {1.0f}};
  CHECK_THROWS_WITH(mp::cpu::sort_by_expert(bad, 4), Catch::Contains("[expert_id_valid]"));
}

TEST_CASE("local pieces of a tensor follow its layout, and put back together", "[slice]") {
  auto mesh = mp::MeshSpec::parse("ep=2,tp=2");
  mp::LayoutSpec layout(mesh, {4, 8}, {mp::PlacementSpec::shard(0), mp::PlacementSpec::strided_shard(1, 2)});
  mp::Tensor<float> full({4, 8});
  for (index_t i = 0; i < 32; ++i) full[i] = static_cast<float>(i);
  mp::Tensor<float> rebuilt({4, 8});
  for (index_t r = 0; r < 4; ++r) {
    auto piece = mp::local_piece(full, layout, r);
    CHECK(piece.shape() == std::vector<index_t>{2, 4});
    mp::place_piece(piece, layout, r, rebuilt);
  }
  // Rank 1 (ep 0, tp 1): rows 0-1; of each half of the columns ([0, 4) and [4, 8)) the second quarter pair.
  CHECK(mp::local_piece(full, layout, 1).vector() == std::vector<float>{2, 3, 6, 7, 10, 11, 14, 15});
  CHECK(rebuilt == full);
  CHECK_THROWS_WITH(mp::local_piece(mp::Tensor<float>({4, 6}), layout, 0), Catch::Contains("[shape_matches]"));
}

TEST_CASE("the sizes of an expert-parallel exchange come from the two count tables", "[permute]") {
  // 6 experts over 3 members (2 each). This rank routes to experts 0..5: 1, 0, 2, 3, 0, 4.
  const std::vector<index_t> to_expert = {1, 0, 2, 3, 0, 4};
  // Rows members 0, 1, 2 route to this rank's local experts 0 and 1.
  const std::vector<index_t> from = {5, 0, 0, 0, 2, 7};
  const mp::DispatchCounts d = mp::dispatch_counts(to_expert, from, 3);
  CHECK(d.send_rows == std::vector<index_t>{1, 5, 4});
  CHECK(d.recv_rows == std::vector<index_t>{5, 0, 9});
  CHECK(d.rows_per_local_expert == std::vector<index_t>{7, 7});
  CHECK(d.local_offsets == std::vector<index_t>{0, 7, 14});
  CHECK(d.received() == 14);
  CHECK(mp::DispatchCounts::elements(d.send_rows, 64) == std::vector<index_t>{64, 320, 256});
  CHECK_THROWS_WITH(mp::dispatch_counts(to_expert, from, 4), Catch::Contains("[experts_divisible]"));
}
