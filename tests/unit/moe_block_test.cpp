// The MoE block over simulated ranks (ThreadComm) against the single-rank reference.
//
// For tiny Qwen3-MoE, Mixtral and DeepSeek-V3 configs, on meshes from one rank to eight,
// with every built-in plan, four routings (uniform, skewed, every token's first choice the
// same expert, half the experts never chosen), token counts 0, 1, 7 and 33, in float and
// bfloat16: the ranks' outputs, put together, equal the reference
//   - bit for bit where the plan only moves data (ep, ep_tp, ep_sp, and data parallel axes);
//   - within a tolerance where it splits a sum over ranks (tp, tp_sp, etp: each expert's,
//     and the shared experts', intermediate dim split over tp). fp32: the partial sums are
//     reassociated across ranks; the error of a reassociated fp32 sum of n terms is at most
//     about n * 6e-8 of the sum of magnitudes, n <= 64 here: 1e-5 of the output's largest
//     magnitude leaves a margin of 2.5x. bfloat16: the reference stores each expert's output
//     row in bf16 (2^-9 relative rounding) before the weighted sum; a split path sums fp32
//     partials and rounds once. That is a few bf16 roundings, each within 2^-8 of the
//     output's magnitude: 2^-6 = 1.6e-2 covers four.
// Sequence parallelism needs equal shards: a token count that does not split evenly over
// tp is refused with sequence_divisible on every rank.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/model/presets.hpp"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/moe/reference.hpp"
#include "meshplan/moe/token_layout.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "../support/moe_cases.hpp"

namespace mp = meshplan;
using mp::index_t;

namespace {

using namespace moe_cases;
using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep">, mp::Axis<"tp">>;

enum class Expect { exact, close };

/// Runs the block on every rank of the mesh and compares with the reference.
template <class Model, class Plan, class T>
void check(Sizes sizes, RoutingKind kind, index_t tokens, Expect expect) {
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

  Mesh mesh{sizes.dp, sizes.ep, sizes.tp};
  const mp::MeshSpec spec(mesh);
  const mp::LayoutSpec token_layout = mp::moe_token_layout(model, spec, Plan::entries, tokens);

  // Sequence parallel entry (gathering shards) needs equal shards in every tp group.
  bool unequal_shards = false;
  if (mp::moe_block_plan(Plan::entries).entry_count > 0 && mp::moe_block_plan(Plan::entries).entry[0].from == mp::Act::shard_seq)
    for (index_t r = 0; r < spec.size(); ++r)
      for (index_t peer : spec.group(r, {"tp"}).members)
        unequal_shards = unequal_shards || token_layout.local_extent(0, r) != token_layout.local_extent(0, peer);

  std::vector<mp::Tensor<T>> outs(static_cast<std::size_t>(spec.size()));
  mp::ThreadWorld world(spec.size());
  auto run_all = [&] {
    world.run([&](mp::ThreadComm& comm) {
      mp::MoEBlock<Model, Mesh, Plan, mp::CpuBackend<T>> block(mesh, comm.rank(), w);
      outs[static_cast<std::size_t>(comm.rank())] = block.forward(comm, rows_of(x, token_layout, comm.rank()));
    });
  };
  if (unequal_shards) {
    REQUIRE_THROWS_WITH(run_all(), Catch::Contains("[sequence_divisible]"));
    return;
  }
  run_all();

  Comparison c;
  for (index_t r = 0; r < spec.size(); ++r) compare_rows(outs[static_cast<std::size_t>(r)], ref, token_layout, r, c);
  REQUIRE(c.shape_ok);
  if (expect == Expect::exact)
    CHECK(c.mismatches == 0);
  else
    CHECK(c.max_diff <= split_sum_rtol<T>() * std::max(c.max_ref, 1e-30));
}

template <class Model, class Plan, class T>
void sweep(Sizes sizes, Expect expect) {
  for (RoutingKind kind : all_routings)
    for (index_t tokens : {0, 1, 7, 33}) check<Model, Plan, T>(sizes, kind, tokens, expect);
}

/// Every plan of a family on the meshes it runs on, both storage types.
template <class Model, template <mp::fixed_string> class EPPlan, template <mp::fixed_string, mp::fixed_string> class EPTP,
          template <mp::fixed_string, mp::fixed_string> class EPSP, template <mp::fixed_string, mp::fixed_string> class ETP,
          template <mp::fixed_string> class TP, template <mp::fixed_string> class TPSP, class T>
void family_sweep() {
  SECTION("ep: bit for bit on 1, 2, 4 and 8 ranks, and with a data-parallel axis") {
    for (index_t ep : {1, 2, 4, 8}) sweep<Model, EPPlan<"ep">, T>({1, ep, 1}, Expect::exact);
    sweep<Model, EPPlan<"ep">, T>({2, 2, 1}, Expect::exact);
  }
  SECTION("ep x tp with tokens split over tp in the MoE block, and with sequence parallelism: bit for bit") {
    sweep<Model, EPTP<"ep", "tp">, T>({1, 2, 2}, Expect::exact);
    sweep<Model, EPSP<"ep", "tp">, T>({1, 2, 2}, Expect::exact);
    sweep<Model, EPSP<"ep", "tp">, T>({1, 4, 2}, Expect::exact);
  }
  SECTION("expert tensor parallelism: within tolerance") {
    sweep<Model, ETP<"ep", "tp">, T>({1, 2, 2}, Expect::close);
    sweep<Model, ETP<"ep", "tp">, T>({1, 4, 2}, Expect::close);
  }
  SECTION("tensor parallelism, with and without sequence parallelism: within tolerance") {
    sweep<Model, TP<"tp">, T>({1, 1, 2}, Expect::close);
    sweep<Model, TPSP<"tp">, T>({1, 1, 2}, Expect::close);
    sweep<Model, TPSP<"tp">, T>({1, 1, 4}, Expect::close);
  }
}

}  // namespace

TEMPLATE_TEST_CASE("Qwen3-MoE block over simulated ranks equals the reference", "[moe]", float, mp::bfloat16) {
  namespace p = mp::plans::qwen3_moe;
  family_sweep<mp::models::TinyQwen3Moe, p::ep, p::ep_tp, p::ep_sp, p::etp, p::tp, p::tp_sp, TestType>();
}

TEMPLATE_TEST_CASE("Mixtral block over simulated ranks equals the reference", "[moe]", float, mp::bfloat16) {
  namespace p = mp::plans::mixtral;
  family_sweep<mp::models::TinyMixtral, p::ep, p::ep_tp, p::ep_sp, p::etp, p::tp, p::tp_sp, TestType>();
}

TEMPLATE_TEST_CASE("DeepSeek-V3 block (shared experts included) over simulated ranks equals the reference", "[moe]",
                   float, mp::bfloat16) {
  namespace p = mp::plans::deepseek_v3;
  family_sweep<mp::models::TinyDeepSeekV3, p::ep, p::ep_tp, p::ep_sp, p::etp, p::tp, p::tp_sp, TestType>();
}
