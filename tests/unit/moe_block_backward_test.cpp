// The MoE block's backward over simulated ranks (ThreadComm) against the single-rank
// reference's gradients (moe/reference_backward.hpp, itself checked against PyTorch
// autograd and finite differences in moe_backward_test.cpp): the whole matrix,
// table-driven like the forward's (moe_block_test.cpp).
//
// Every built-in plan of every family (from the registry), tiny Qwen3-MoE, Mixtral and
// DeepSeek-V3 configs and variants, every mesh of the plan's axes in `candidate_meshes`
// (one to eight ranks, with and without a data-parallel axis), four routings (uniform,
// skewed, every token's first choice one expert, half the experts idle), 0, 1, 7 and 33
// tokens, float and bfloat16, activations kept (and, on the uniform routing, recomputed in
// the backward). Each rank's input gradient rows and its parameter pieces are compared
// with the reference's, sliced as the plan slices the weights:
//   - bit for bit where the plan only moves data (ep, ep_tp, ep_sp, data-parallel axes):
//     the weight gradients are ordered sums in token order (comm/detail/ordered_sum.hpp);
//   - where a plan splits a sum over ranks (tp, tp_sp, etp: the intermediate dims over tp),
//     the input gradient and the routing weights' gradients are sums of tp partials in
//     another order. fp32: a reassociated sum of n <= 64 terms moves by about n * 6e-8 of
//     the sum of magnitudes; 1e-5 of the largest magnitude leaves a margin as in the forward.
//     bfloat16: the reference's <y, dy> reads y rounded to bf16 (2^-9), the split path fp32
//     partials: 1.6e-2 of the largest magnitude, the forward's tolerance, covers a few
//     such roundings.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "../support/moe_backward_run.hpp"
#include "../support/moe_matrix.hpp"

namespace mp = meshplan;
using mp::index_t;

namespace {

using namespace moe_cases;
using Mesh = MatrixMesh;

template <class Model, class Plan, class T>
void check(Sizes sizes, RoutingKind kind, index_t tokens, bool exact, mp::Training training) {
  INFO("mesh " << sizes.text() << ", " << name(kind) << " routing, " << tokens << " tokens, "
               << (std::is_same_v<T, float> ? "float" : "bfloat16")
               << (training == mp::Training::recompute ? ", recomputed" : ""));
  constexpr mp::ModelSpec model = Model::spec;
  auto [w, x] = make_case<T>(model, kind, tokens, 2000 + static_cast<std::uint64_t>(tokens));
  const mp::Tensor<float> dy = random_grad_output(tokens, model.hidden_size, 77 + static_cast<std::uint64_t>(tokens));
  const mp::MoEGradients ref = mp::reference_moe_backward(model, w, x, dy);
  const Mesh mesh{sizes.dp, sizes.ep, sizes.tp};
  using Block = mp::MoEBlock<Model, Mesh, Plan, mp::CpuBackend<T>>;
  // A sequence-parallel entry with unequal shards is refused by the forward (moe_block_test).
  constexpr mp::MoEBlockPlan bp = mp::moe_block_plan(Plan::entries);
  if (bp.reduce_scatters()) {
    const mp::LayoutSpec layout = mp::moe_token_layout(model, mp::MeshSpec(mesh), Plan::entries, tokens);
    for (index_t r = 1; r < layout.mesh().size(); ++r)
      if (layout.local_extent(0, r) != layout.local_extent(0, 0)) return;
  }
  const BackwardRun run = run_backward<Block>(model, mesh, Plan::entries, w, x, dy, ref, training);
  REQUIRE(run.input.shapes_ok);
  REQUIRE(run.params.shapes_ok);
  if (exact) {
    CHECK(run.input.mismatches == 0);
    CHECK(run.params.mismatches == 0);
  } else {
    CHECK(run.input.worst_relative <= split_sum_rtol<T>());
    CHECK(run.params.worst_relative <= split_sum_rtol<T>());
  }
}

template <class Model, class T>
void family_matrix() {
  mp::plans::family_plans_t<Model::spec.family>::for_each([&]<class Plan>(std::string_view plan_name) {
    constexpr mp::MoEBlockPlan bp = mp::moe_block_plan(Plan::entries);
    constexpr bool exact = bp.expert_tp_axis.empty() && bp.shared_tp_axis.empty();
    int meshes_run = 0;
    for (Sizes sizes : candidate_meshes) {
      if (!fits_axes(Plan::entries, sizes)) continue;
      INFO("plan " << plan_name << " on " << sizes.text());
      const mp::Message rule = mp::check_plan(
          Model::spec, mp::MeshSpecView(mp::MeshSpec(Mesh{sizes.dp, sizes.ep, sizes.tp})).view(), Plan::entries);
      if (!rule.ok()) continue;  // moe_block_test checks the refusal
      ++meshes_run;
      for (RoutingKind kind : all_routings)
        for (index_t tokens : {0, 1, 7, 33})
          check<Model, Plan, T>(sizes, kind, tokens, exact, mp::Training::keep_activations);
      check<Model, Plan, T>(sizes, RoutingKind::uniform, 7, exact, mp::Training::recompute);
    }
    INFO("plan " << plan_name);
    CHECK(meshes_run >= 3);
  });
}

}  // namespace

TEMPLATE_TEST_CASE("Qwen3-MoE backward: every plan x mesh x routing x token count equals the reference", "[moe][backward]",
                   float, mp::bfloat16) {
  family_matrix<mp::models::TinyQwen3Moe, TestType>();
}

TEMPLATE_TEST_CASE("Qwen3-MoE backward at odd sizes (12 experts, top-3, hidden 24)", "[moe][backward]", float,
                   mp::bfloat16) {
  family_matrix<Qwen3MoeOdd, TestType>();
}

TEMPLATE_TEST_CASE("Mixtral backward: every plan x mesh x routing x token count equals the reference", "[moe][backward]",
                   float, mp::bfloat16) {
  family_matrix<mp::models::TinyMixtral, TestType>();
}

TEMPLATE_TEST_CASE("DeepSeek-V3 backward (shared experts): every plan x mesh equals the reference", "[moe][backward]",
                   float, mp::bfloat16) {
  family_matrix<mp::models::TinyDeepSeekV3, TestType>();
}

TEMPLATE_TEST_CASE("DeepSeek-V3 backward without shared experts, one expert group", "[moe][backward]", float,
                   mp::bfloat16) {
  family_matrix<DeepSeekV3NoShared, TestType>();
}
