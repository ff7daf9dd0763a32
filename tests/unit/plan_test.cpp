// Plans at run time: validation of every built-in plan on every preset, the same text as
// the compile-time path, lowering, and run-time-only rules.
#include <catch2/catch.hpp>

#include <map>
#include <string>

#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/lower.hpp"
#include "meshplan/plan/plan_walk.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
using mp::index_t;

namespace {
std::string outcome(const mp::ModelSpec& model, const std::string& mesh, std::string_view plan) {
  try {
    mp::validate(model, mp::MeshSpec::parse(mesh), mp::plans::builtin_plan(model.family, plan).entries);
    return "ok";
  } catch (const mp::RuleViolation& e) {
    return e.rule();
  }
}
}  // namespace

TEST_CASE("built-in plans on realistic meshes: valid ones pass, known-bad ones name their rule", "[plan]") {
  using mp::models::DeepSeek_V3;
  using mp::models::Mixtral_8x7B;
  using mp::models::Qwen3_235B_A22B;
  using mp::models::Qwen3_30B_A3B;
  for (const char* ep : {"ep=8", "ep=16", "ep=32", "ep=64"}) CHECK(outcome(Qwen3_30B_A3B::spec, ep, "ep") == "ok");
  CHECK(outcome(Qwen3_30B_A3B::spec, "ep=256", "ep") == "experts_divisible");
  for (const char* plan : {"ep_tp", "ep_sp", "etp"}) {
    CHECK(outcome(Qwen3_30B_A3B::spec, "ep=16,tp=4", plan) == "ok");
    CHECK(outcome(Qwen3_30B_A3B::spec, "ep=8,tp=8", plan) == "kv_heads_divisible");
    CHECK(outcome(Qwen3_235B_A22B::spec, "dp=2,ep=32,tp=4", plan) == "ok");
    CHECK(outcome(DeepSeek_V3::spec, "dp=2,ep=64,tp=8", plan) == "ok");
  }
  CHECK(outcome(DeepSeek_V3::spec, "ep=64", "ep") == "ok");
  CHECK(outcome(DeepSeek_V3::spec, "ep=512", "ep") == "experts_divisible");
  CHECK(outcome(DeepSeek_V3::spec, "tp=16", "tp") == "ok");
  CHECK(outcome(DeepSeek_V3::spec, "tp=6", "tp_sp") == "vocab_divisible");  // 129280 % 6; heads come later
  for (const char* plan : {"tp", "tp_sp"}) {
    CHECK(outcome(Mixtral_8x7B::spec, "tp=8", plan) == "ok");
    CHECK(outcome(Mixtral_8x7B::spec, "tp=16", plan) == "kv_heads_divisible");
    CHECK(outcome(Qwen3_30B_A3B::spec, "tp=8", plan) == "kv_heads_divisible");
  }
  CHECK(outcome(Mixtral_8x7B::spec, "ep=16", "ep") == "experts_divisible");
  CHECK(outcome(Mixtral_8x7B::spec, "ep=8,tp=8", "etp") == "ok");
  CHECK(outcome(Mixtral_8x7B::spec, "ep=8", "ep_tp") == "style_axis_known");
  CHECK(outcome(mp::models::Qwen3_8B::spec, "tp=8", "tp_sp") == "ok");
}

TEST_CASE("every built-in plan of every preset validates on a small ep x tp mesh", "[plan]") {
  for (const auto& preset : mp::models::all_presets)
    for (const auto& plan : mp::plans::builtin_plans(preset.spec.family)) {
      INFO(preset.name << " " << plan.name);
      CHECK(outcome(preset.spec, "dp=2,ep=2,tp=2", plan.name) == "ok");
    }
}

TEST_CASE("the run-time message is the compile-time message", "[plan]") {
  using Model = mp::models::Qwen3_30B_A3B;
  using Mesh = mp::DeviceMesh<mp::Axis<"tp", 8>>;
  using Plan = mp::plans::qwen3_moe::tp<>;
  // What the compiler prints inside rule_check<...> when validate<Model, Mesh, Plan>() fails.
  constexpr mp::Message compile_time = mp::detail::check_static<Model, Mesh, Plan>();
  STATIC_REQUIRE(!compile_time.ok());
  CHECK(compile_time.view() ==
        "meshplan [kv_heads_divisible]: num_key_value_heads (4) is not divisible by 8 (mesh axis 'tp'), which shards "
        "dim 0 of 'layers.*.self_attn.k_proj.weight'");
  // A mesh whose tp size is known only at run time: the compiler lets it through...
  using DynamicMesh = mp::DeviceMesh<mp::Axis<"tp">>;
  STATIC_REQUIRE(mp::valid_plan_v<Model, DynamicMesh, Plan>);
  // ...and the run-time check throws the same text.
  CHECK_THROWS_WITH((mp::validate<Model, Plan>(DynamicMesh{8})), std::string(compile_time.view()));
  CHECK_THROWS_WITH(mp::validate(Model::spec, mp::MeshSpec::parse("tp=8"), Plan::entries),
                    std::string(compile_time.view()));
  CHECK_NOTHROW((mp::validate<Model, Plan>(DynamicMesh{4})));
}

TEST_CASE("run-time-only rules: world size and sequence divisibility", "[plan]") {
  auto mesh = mp::MeshSpec::parse("dp=2,ep=4,tp=2");
  CHECK_NOTHROW(mp::validate_world_size(mesh, 16));
  CHECK_THROWS_WITH(mp::validate_world_size(mesh, 12),
                    "meshplan [world_size_matches]: the job has 12 ranks but the mesh has 16 (the product of its axis "
                    "sizes); they must be equal");
  const auto& model = mp::models::Qwen3_30B_A3B::spec;
  auto plan = [&](std::string_view name) { return mp::plans::builtin_plan(model.family, name).entries; };
  // Sequence parallelism needs tokens that divide over tp; ep_tp's split in the MoE block does not.
  CHECK(mp::sequence_parallel_axes(model, mesh, plan("ep_sp")) == std::vector<std::size_t>{2});
  CHECK(mp::sequence_parallel_axes(model, mesh, plan("tp_sp")) == std::vector<std::size_t>{2});
  CHECK(mp::sequence_parallel_axes(model, mesh, plan("ep_tp")).empty());
  CHECK(mp::sequence_parallel_axes(model, mesh, plan("etp")).empty());
  CHECK(mp::sequence_parallel_axes(model, mesh, plan("ep")).empty());
  CHECK_NOTHROW(mp::validate_tokens(model, mesh, plan("ep_sp"), 4096));
  CHECK_THROWS_WITH(mp::validate_tokens(model, mesh, plan("ep_sp"), 4095),
                    "meshplan [sequence_divisible]: the sequence of 4095 tokens does not divide evenly over mesh axis "
                    "'tp' (2), which the plan shards it on");
  CHECK_NOTHROW(mp::validate_tokens(model, mesh, plan("etp"), 4095));
  CHECK_NOTHROW(mp::validate_tokens(model, mesh, plan("ep_tp"), 4095));
}

TEST_CASE("lower gives placements per axis and local shapes by DTensor's rules", "[plan][lower]") {
  const auto& model = mp::models::Qwen3_30B_A3B::spec;
  auto mesh = mp::MeshSpec::parse("ep=8,tp=4");
  const auto& plan = mp::plans::builtin_plan(model.family, "etp");
  for (index_t rank : {index_t{0}, index_t{13}, index_t{31}}) {
    auto params = mp::lower(model, mesh, plan.entries, rank);
    std::map<std::string, const mp::LoweredParam*> by_name;
    for (const auto& p : params) by_name[std::string(p.info.name)] = &p;
    const auto& gate_up = *by_name.at("layers.*.mlp.experts.gate_up_proj");
    CHECK(gate_up.placements == std::vector{mp::PlacementSpec::shard(0), mp::PlacementSpec::strided_shard(1, 2)});
    CHECK(gate_up.local_shape == std::vector<index_t>{16, 384, 2048});
    CHECK(by_name.at("layers.*.mlp.experts.down_proj")->local_shape == std::vector<index_t>{16, 2048, 192});
    CHECK(by_name.at("layers.*.self_attn.k_proj.weight")->local_shape == std::vector<index_t>{128, 2048});
    CHECK(by_name.at("layers.*.self_attn.o_proj.weight")->local_shape == std::vector<index_t>{2048, 1024});
    CHECK(by_name.at("embed_tokens.weight")->local_shape == std::vector<index_t>{37984, 2048});
    CHECK(by_name.at("layers.*.mlp.gate.weight")->placements ==
          std::vector{mp::PlacementSpec::replicate(), mp::PlacementSpec::replicate()});
    CHECK(by_name.at("layers.*.mlp.experts.gate_up_proj")->entry == "layers.*.mlp.experts");
    // Rank r's experts are the ep-th block of 16; its gate rows and up rows are the tp-th quarter of each half.
    auto ep = mesh.coordinates(rank)[0], tp = mesh.coordinates(rank)[1];
    auto layout = gate_up.layout(mesh);
    CHECK(layout.held_indices(0, rank) == mp::IndexRuns{{ep * 16, 16}});
    CHECK(layout.held_indices(1, rank) == mp::IndexRuns{{tp * 192, 192}, {768 + tp * 192, 192}});
  }
  // Every element of every parameter is held by as many ranks as the axes replicate it.
  auto all = mp::lower(model, mesh, plan.entries, 0);
  for (const auto& p : all) {
    auto layout = p.layout(mesh);
    index_t held = 0;
    for (index_t r = 0; r < mesh.size(); ++r) {
      index_t n = 1;
      for (auto e : layout.local_extents(r)) n *= e;
      held += n;
    }
    index_t replicas = 1;
    for (std::size_t a = 0; a < mesh.ndim(); ++a)
      if (!p.placements[a].is_shard()) replicas *= mesh.axis_size(a);
    CHECK(held == p.info.elements() * replicas);
  }
}

TEST_CASE("lookups by name fail with the names that exist", "[plan]") {
  CHECK_THROWS_WITH(mp::models::preset("Qwen3-31B"), Catch::StartsWith("meshplan [preset_known]: there is no model "
                                                                       "preset named 'Qwen3-31B'; the presets are "
                                                                       "Qwen3-30B-A3B, Qwen3-235B-A22B"));
  CHECK_THROWS_WITH(mp::plans::builtin_plan(mp::Family::mixtral, "fsdp"),
                    "meshplan [plan_known]: there is no built-in plan 'fsdp' for mixtral; the plans are tp, tp_sp, ep, "
                    "ep_tp, ep_sp, etp");
  CHECK(mp::plans::builtin_plans(mp::Family::qwen3).size() == 2);
}

TEST_CASE("patterns match module paths component by component", "[plan]") {
  CHECK(mp::matches_param("layers.*.self_attn.q_proj", "layers.*.self_attn.q_proj.weight"));
  CHECK(mp::matches_param("layers.*.self_attn", "layers.*.self_attn.q_proj.weight"));
  CHECK(mp::matches_param("layers.*.mlp.experts.gate_up_proj", "layers.*.mlp.experts.gate_up_proj"));
  CHECK_FALSE(mp::matches_param("layers.*.mlp.gate", "layers.*.mlp.gate_proj.weight"));
  CHECK(mp::matches_param("layers.*.mlp.gate", "layers.*.mlp.gate.e_score_correction_bias"));
  CHECK_FALSE(mp::matches_param("layers.0.mlp", "layers.*.mlp.gate.weight"));
  CHECK_FALSE(mp::matches_param("layers.*.mlp.experts.gate_up_proj.weight", "layers.*.mlp.experts.gate_up_proj"));
  CHECK(mp::matches_module("layers.*.mlp", "layers.*.mlp"));
  CHECK_FALSE(mp::matches_module("layers.*", "layers.*.mlp"));
  CHECK(mp::plan_rules::pattern_syntax("layers.*.mlp").ok());
  CHECK(mp::plan_rules::pattern_syntax("lm_head").ok());
  for (const char* bad : {"", ".", "layers..mlp", "layers.*.", ".layers", "layers.m-p", "layers.**"})
    CHECK(mp::plan_rules::pattern_syntax(bad).rule_id() == "pattern_syntax");
}
