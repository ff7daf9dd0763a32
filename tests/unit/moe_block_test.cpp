// The MoE block over simulated ranks (ThreadComm) against the single-rank reference: the
// whole matrix, table-driven.
//
// Every built-in plan of every family (read from the registry, so a new plan is covered by
// its registry line), for tiny Qwen3-MoE, Mixtral and DeepSeek-V3 configs and variants
// (no shared experts, odd sizes, top-k not renormalized), on every mesh of the plan's axes
// in `candidate_meshes` (from one rank to eight, with and without a data-parallel axis),
// with four routings (uniform, skewed, every token's first choice the same expert, half the
// experts never chosen), token counts 0, 1, 7 and 33, in float and bfloat16. Each run goes
// through run_moe_batch, as the runner does, and checks
//   - the routing: every token's expert ids, in slot order, equal the reference's, and
//     every rank that routes or holds a token agrees with the others;
//   - the output, put together from the ranks: bit for bit where the plan only moves data
//     (ep, ep_tp, ep_sp, and data-parallel axes); within a tolerance where it splits a sum
//     over ranks (tp, tp_sp, etp: each expert's, and the shared experts', intermediate dim
//     split over tp). fp32: the partial sums are reassociated across ranks; the error of a
//     reassociated fp32 sum of n terms is at most about n * 6e-8 of the sum of magnitudes,
//     n <= 64 here: 1e-5 of the output's largest magnitude leaves a margin of 2.5x.
//     bfloat16: the reference stores each expert's output row in bf16 (2^-9 relative
//     rounding) before the weighted sum; a split path sums fp32 partials and rounds once.
//     That is a few bf16 roundings, each within 2^-8 of the output's magnitude: 2^-6 =
//     1.6e-2 covers four.
// Sequence parallelism needs equal shards: a token count that does not split evenly over
// tp is refused with sequence_divisible on every rank. A candidate mesh the model cannot
// split (e.g. 12 experts over 8 ranks) must be refused by a divisibility rule.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/model/presets.hpp"
#include "meshplan/moe/batch.hpp"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/moe/reference.hpp"
#include "meshplan/moe/token_layout.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "../support/moe_cases.hpp"
#include "../support/moe_matrix.hpp"

namespace mp = meshplan;
using mp::index_t;

namespace {

using namespace moe_cases;
using Mesh = MatrixMesh;

/// Runs the block on every rank of the mesh and compares with the reference.
template <class Model, class Plan, class T>
void check(Sizes sizes, RoutingKind kind, index_t tokens, bool exact) {
  INFO("mesh " << sizes.text() << ", " << name(kind) << " routing, " << tokens << " tokens, "
               << (std::is_same_v<T, float> ? "float" : "bfloat16"));
  constexpr mp::ModelSpec model = Model::spec;
  auto [w, x] = make_case<T>(model, kind, tokens, 1000 + static_cast<std::uint64_t>(tokens));
  mp::Routing routing;
  const mp::Tensor<T> ref = mp::reference_moe_forward(model, w, x, &routing);
  if (kind == RoutingKind::one_expert)
    for (index_t t = 0; t < tokens; ++t) REQUIRE(routing.expert(t, 0) == model.num_experts / 2 + 1);
  if (kind == RoutingKind::idle_experts)
    for (auto e : routing.experts) REQUIRE(e < model.num_experts / 2);

  const Mesh mesh{sizes.dp, sizes.ep, sizes.tp};
  const mp::MeshSpec spec(mesh);
  const mp::LayoutSpec token_layout = mp::moe_token_layout(model, spec, Plan::entries, tokens);

  // Sequence parallel entry (gathering shards) needs equal shards in every tp group.
  constexpr mp::MoEBlockPlan bp = mp::moe_block_plan(Plan::entries);
  bool unequal_shards = false;
  if (bp.reduce_scatters())
    for (index_t r = 0; r < spec.size(); ++r)
      for (index_t peer : spec.group(r, {"tp"}).members)
        unequal_shards = unequal_shards || token_layout.local_extent(0, r) != token_layout.local_extent(0, peer);

  mp::ThreadWorld world(spec.size());
  auto run_all = [&] {
    return mp::run_moe_batch(world, token_layout, x, [&](index_t rank) {
      return mp::MoEBlock<Model, Mesh, Plan, mp::CpuBackend<T>>(mesh, rank, w);
    });
  };
  if (unequal_shards) {
    REQUIRE_THROWS_WITH(run_all(), Catch::Contains("[sequence_divisible]"));
    return;
  }
  const mp::MoEBatchResult<T> got = run_all();
  REQUIRE(got.disagreements() == 0);  // ranks holding or routing the same token agree
  REQUIRE(got.topk_ids.shape() == std::vector<index_t>{tokens, model.num_experts_per_tok});
  index_t wrong_ids = 0;
  for (std::size_t i = 0; i < routing.experts.size(); ++i) wrong_ids += got.topk_ids[static_cast<index_t>(i)] != routing.experts[i];
  CHECK(wrong_ids == 0);

  const Comparison c = compare_whole(got.hidden_states, ref);
  REQUIRE(c.shape_ok);
  if (exact)
    CHECK(c.mismatches == 0);
  else
    CHECK(c.max_diff <= split_sum_rtol<T>() * std::max(c.max_ref, 1e-30));
}

/// Every plan of the model's family on every mesh of its axes, both storage types.
template <class Model, class T>
void family_matrix() {
  mp::plans::family_plans_t<Model::spec.family>::for_each([&]<class Plan>(std::string_view plan_name) {
    constexpr mp::MoEBlockPlan bp = mp::moe_block_plan(Plan::entries);
    constexpr bool exact = bp.expert_tp_axis.empty() && bp.shared_tp_axis.empty();
    int meshes_run = 0;
    for (Sizes sizes : candidate_meshes) {
      if (!fits_axes(Plan::entries, sizes)) continue;
      INFO("plan " << plan_name << " on " << sizes.text());
      const mp::Message rule = mp::check_plan(Model::spec, mp::MeshSpecView(mp::MeshSpec(Mesh{sizes.dp, sizes.ep, sizes.tp})).view(),
                                              Plan::entries);
      if (!rule.ok()) {  // the model cannot be split so: a divisibility rule says why
        CHECK(std::string(rule.rule_id()).ends_with("_divisible"));
        continue;
      }
      ++meshes_run;
      for (RoutingKind kind : all_routings)
        for (index_t tokens : {0, 1, 7, 33}) check<Model, Plan, T>(sizes, kind, tokens, exact);
    }
    INFO("plan " << plan_name);
    CHECK(meshes_run >= 3);
  });
}

}  // namespace

TEMPLATE_TEST_CASE("Qwen3-MoE block: every plan x mesh x routing x token count equals the reference", "[moe]",
                   float, mp::bfloat16) {
  family_matrix<mp::models::TinyQwen3Moe, TestType>();
}

TEMPLATE_TEST_CASE("Qwen3-MoE block at odd sizes (12 experts, top-3, hidden 24) equals the reference", "[moe]",
                   float, mp::bfloat16) {
  family_matrix<Qwen3MoeOdd, TestType>();
}

TEMPLATE_TEST_CASE("Mixtral block: every plan x mesh x routing x token count equals the reference", "[moe]", float,
                   mp::bfloat16) {
  family_matrix<mp::models::TinyMixtral, TestType>();
}

TEMPLATE_TEST_CASE("DeepSeek-V3 block (shared experts included): every plan x mesh equals the reference", "[moe]",
                   float, mp::bfloat16) {
  family_matrix<mp::models::TinyDeepSeekV3, TestType>();
}

TEMPLATE_TEST_CASE("DeepSeek-V3 block without shared experts, one expert group: every plan x mesh", "[moe]", float,
                   mp::bfloat16) {
  family_matrix<DeepSeekV3NoShared, TestType>();
}
