// The typed plan view against the run-time lowering: for every rank, every parameter's
// global shape, placements and local shape, and the elements a rank holds, summed by a
// compile-time fold over the Hana map and by lower().
#include <catch2/catch.hpp>

#include <cstddef>
#include <string>
#include <vector>

#include <boost/hana/fold_left.hpp>
#include <boost/hana/for_each.hpp>
#include <boost/hana/length.hpp>

#include "meshplan/model/inventory.hpp"
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/local_shape.hpp"
#include "meshplan/plan/lower.hpp"
#include "meshplan/plan/param_layout.hpp"
#include "meshplan/plan/typed_plan.hpp"

namespace mp = meshplan;
namespace hana = boost::hana;
using mp::Axis;
using mp::DeviceMesh;
using mp::index_t;

namespace {
template <class A>
std::vector<index_t> to_vector(const A& a) {
  return std::vector<index_t>(a.begin(), a.end());
}

index_t product(const std::vector<index_t>& shape) {
  index_t n = 1;
  for (index_t e : shape) n *= e;
  return n;
}

/// The elements one rank holds (every layer's copy), as the fold over the typed map sees it:
/// static where every rank holds the same, `dynamic` otherwise.
template <class Model, class Mesh, class Plan>
constexpr index_t static_elements_per_rank() {
  return hana::fold_left(mp::typed_plan<Model, Mesh, Plan>, index_t{0}, [](index_t n, auto kv) {
    constexpr index_t local = mp::local_elements_v<mp::layout_of_t<decltype(kv)>>;
    return n == mp::dynamic || local == mp::dynamic ? mp::dynamic : n + mp::param_info_of<Model>(kv).count * local;
  });
}

template <class Model, class Mesh, class Plan>
void check_against_lowering() {
  constexpr auto params = mp::typed_params<Model, Mesh, Plan>;
  constexpr index_t static_total = static_elements_per_rank<Model, Mesh, Plan>();
  const Mesh mesh{};
  const index_t world = mp::world_size(mesh);
  for (index_t rank = 0; rank < world; ++rank) {
    const std::vector<mp::LoweredParam> lowered = mp::lower<Model, Plan>(mesh, rank);
    REQUIRE(lowered.size() == decltype(hana::length(params))::value);
    std::size_t i = 0;
    index_t typed_total = 0;
    hana::for_each(params, [&](auto kv) {
      using L = mp::layout_of_t<decltype(kv)>;
      const mp::LoweredParam& p = lowered[i++];
      INFO("rank " << rank << ", " << p.info.name);
      CHECK(p.info.name == mp::param_name_of(kv));
      CHECK(p.global_shape == to_vector(L{}.global_extents().values()));
      CHECK(p.placements == std::vector<mp::PlacementSpec>(L::placements.begin(), L::placements.end()));
      const std::vector<index_t> local = to_vector(L{}.local_extents(rank));
      CHECK(p.local_shape == local);
      for (std::size_t d = 0; d < L::tensor_rank; ++d)
        if (L::static_local_extent(d) != mp::dynamic) CHECK(p.local_shape[d] == L::static_local_extent(d));
      typed_total += mp::param_info_of<Model>(kv).count * product(local);
    });
    index_t lowered_total = 0;
    for (const mp::LoweredParam& p : lowered) lowered_total += p.info.count * p.local_elements();
    CHECK(typed_total == lowered_total);
    CHECK(static_total == lowered_total);
  }
}
}  // namespace

TEST_CASE("typed plans agree with the run-time lowering on every rank", "[plan][typed]") {
  namespace q = mp::plans::qwen3_moe;
  namespace mx = mp::plans::mixtral;
  namespace ds = mp::plans::deepseek_v3;
  using EPxTP = DeviceMesh<Axis<"ep", 2>, Axis<"tp", 2>>;
  using DPxEPxTP = DeviceMesh<Axis<"dp", 2>, Axis<"ep", 2>, Axis<"tp", 2>>;

  SECTION("tiny Qwen3-MoE") {
    check_against_lowering<mp::models::TinyQwen3Moe, DeviceMesh<Axis<"ep", 4>>, q::ep<>>();
    check_against_lowering<mp::models::TinyQwen3Moe, DeviceMesh<Axis<"tp", 4>>, q::tp_sp<>>();
    check_against_lowering<mp::models::TinyQwen3Moe, DPxEPxTP, q::ep_sp<>>();
    check_against_lowering<mp::models::TinyQwen3Moe, EPxTP, q::etp<>>();
  }
  SECTION("tiny Mixtral") {
    check_against_lowering<mp::models::TinyMixtral, EPxTP, mx::ep_tp<>>();
    check_against_lowering<mp::models::TinyMixtral, DeviceMesh<Axis<"ep", 4>, Axis<"tp", 2>>, mx::etp<>>();
  }
  SECTION("tiny DeepSeek-V3") {
    check_against_lowering<mp::models::TinyDeepSeekV3, DPxEPxTP, ds::ep_sp<>>();
    check_against_lowering<mp::models::TinyDeepSeekV3, EPxTP, ds::etp<>>();
    check_against_lowering<mp::models::TinyDeepSeekV3, DeviceMesh<Axis<"tp", 8>>, ds::tp<>>();
  }
  SECTION("published configs") {
    check_against_lowering<mp::models::Qwen3_30B_A3B, DeviceMesh<Axis<"ep", 8>, Axis<"tp", 4>>, q::ep_tp<>>();
    check_against_lowering<mp::models::Mixtral_8x7B, DeviceMesh<Axis<"tp", 8>>, mx::tp_sp<>>();
    check_against_lowering<mp::models::DeepSeek_V3, DeviceMesh<Axis<"ep", 16>, Axis<"tp", 8>>, ds::etp<>>();
  }
}

TEST_CASE("a name the model lacks breaks param_known, with a pointer to the parameter a module holds",
          "[plan][typed]") {
  const auto params = mp::inventory(mp::models::Qwen3_30B_A3B::spec);
  CHECK(mp::plan_rules::param_known("layers.*.mlp.experts.gate_up_proj", params).ok());
  const mp::Message module = mp::plan_rules::param_known("layers.*.self_attn.q_proj", params);
  CHECK(std::string(module.view()) ==
        "meshplan [param_known]: the model has no parameter 'layers.*.self_attn.q_proj'; did you mean "
        "'layers.*.self_attn.q_proj.weight'?");
  const mp::Message other = mp::plan_rules::param_known("layers.*.mlp.shared_experts.up_proj.weight", params);
  CHECK(other.rule_id() == "param_known");
  CHECK(std::string(other.view()).find("'layers.*.mlp.shared_experts.up_proj.weight'") != std::string::npos);
  CHECK(std::string(other.view()).find("did you mean") == std::string::npos);
  // Each of the model's parameters is known by its own name.
  for (const mp::ParamInfo& p : params) CHECK(mp::plan_rules::param_known(p.name, params).ok());
}
