// Plans at run time: validation of every built-in plan on every preset, the same text as
// the compile-time path, lowering, and run-time-only rules.
#include <catch2/catch.hpp>

#include <map>
#include <string>
#include <utility>
#include <vector>

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

namespace {
/// A small mesh over exactly the axes a plan uses, with a data-parallel axis.
std::string small_mesh(std::span<const mp::EntrySpec> plan) {
  std::string mesh = "dp=2";
  for (const char* axis : {"ep", "tp"})
    if (mp::plan_rules::plan_uses_axis(plan, axis)) mesh += std::string(",") + axis + "=2";
  return mesh;
}

/// Configs of each family that transformers builds and runs, beyond the presets: the parts
/// some configs lack (shared experts, dense layers, MoE layers, the low-rank query) and
/// the switches (biases, tied embeddings, top-k renormalization, expert groups).
std::vector<std::pair<std::string, mp::ModelSpec>> family_variants() {
  using namespace mp::models;
  std::vector<std::pair<std::string, mp::ModelSpec>> v;
  for (const auto& preset : all_presets) v.emplace_back(std::string(preset.name), preset.spec);
  auto add = [&](std::string name, mp::ModelSpec m, auto change) {
    change(m);
    v.emplace_back(std::move(name), m);
  };
  add("deepseek, no shared experts", TinyDeepSeekV3::spec, [](auto& m) { m.n_shared_experts = 0; });
  add("deepseek, no dense layers", TinyDeepSeekV3::spec, [](auto& m) { m.first_k_dense_replace = 0; });
  add("deepseek, every layer dense", TinyDeepSeekV3::spec, [](auto& m) { m.first_k_dense_replace = 3; });
  add("deepseek, q_lora_rank null", TinyDeepSeekV3::spec, [](auto& m) { m.q_lora_rank = 0; });
  add("deepseek, none of the optional parts", TinyDeepSeekV3::spec, [](auto& m) {
    m.n_shared_experts = 0;
    m.first_k_dense_replace = 0;
    m.q_lora_rank = 0;
    m.attention_bias = true;
  });
  add("deepseek, one expert group", TinyDeepSeekV3::spec, [](auto& m) { m.n_group = m.topk_group = 1; });
  for (const auto& [name, spec] : {std::pair{"qwen3-moe", TinyQwen3Moe::spec}, {"mixtral", TinyMixtral::spec}}) {
    add(std::string(name) + ", biases and tied embeddings", spec, [](auto& m) {
      m.attention_bias = true;
      m.tie_word_embeddings = true;
    });
    add(std::string(name) + ", top-k not renormalized", spec, [](auto& m) { m.norm_topk_prob = false; });
  }
  return v;
}
}  // namespace

TEST_CASE("every built-in plan validates on small meshes of its axes, for every config variant", "[plan]") {
  for (const auto& [name, spec] : family_variants())
    for (const auto& plan : mp::plans::builtin_plans(spec.family)) {
      INFO(name << " " << plan.name << " on " << small_mesh(plan.entries));
      CHECK(outcome(spec, small_mesh(plan.entries), plan.name) == "ok");
      CHECK(outcome(spec, "dp=1,ep=1,tp=1", plan.name) == "ok");  // and on one rank
    }
}

TEST_CASE("a mesh axis no entry uses is refused, except dp and axes of size 1", "[plan]") {
  const auto& model = mp::models::TinyQwen3Moe::spec;
  auto plan = [&](std::string_view name) { return mp::plans::builtin_plan(model.family, name).entries; };
  CHECK_THROWS_WITH(mp::validate(model, mp::MeshSpec::parse("ep=2,tp=2"), plan("tp")),
                    "meshplan [axis_used]: mesh axis 'ep' (size 2) is used by no entry of the plan, whose axes are "
                    "'tp'; only 'dp', the data-parallel axis, may go unused: drop 'ep' or give it size 1, or choose "
                    "a plan that shards over it");
  CHECK_THROWS_WITH(mp::validate(model, mp::MeshSpec::parse("tp=4,ep=2"), plan("ep")),
                    Catch::Contains("mesh axis 'tp' (size 4)") && Catch::Contains("whose axes are 'ep';"));
  CHECK_THROWS_WITH(mp::validate(model, mp::MeshSpec::parse("ep=2,tp=2,cp=2"), plan("etp")),
                    Catch::Contains("[axis_used]: mesh axis 'cp'") && Catch::Contains("whose axes are 'tp', 'ep';"));
  CHECK_NOTHROW(mp::validate(model, mp::MeshSpec::parse("dp=4,ep=1,tp=2"), plan("tp")));
  // Typed meshes: the compile-time path (tests/fail/plan_axis_used.cpp) and, with run-time
  // sizes, the run-time path give the same text.
  using Mesh = mp::DeviceMesh<mp::Axis<"ep">, mp::Axis<"tp">>;
  STATIC_REQUIRE(mp::valid_plan_v<mp::models::TinyQwen3Moe, Mesh, mp::plans::qwen3_moe::tp<>>);
  CHECK_THROWS_WITH((mp::validate<mp::models::TinyQwen3Moe, mp::plans::qwen3_moe::tp<>>(Mesh{2, 2})),
                    Catch::StartsWith("meshplan [axis_used]: mesh axis 'ep' (size 2)"));
  STATIC_REQUIRE(!mp::valid_plan_v<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"ep", 2>, mp::Axis<"tp", 2>>,
                                   mp::plans::qwen3_moe::tp<>>);
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
  CHECK(mp::sequence_parallel_axes(model, mp::MeshSpec::parse("dp=2,ep=1,tp=2"), plan("tp_sp")) ==
        std::vector<std::size_t>{2});
  CHECK(mp::sequence_parallel_axes(model, mesh, plan("ep_tp")).empty());
  CHECK(mp::sequence_parallel_axes(model, mesh, plan("etp")).empty());
  CHECK(mp::sequence_parallel_axes(model, mp::MeshSpec::parse("dp=2,ep=4,tp=1"), plan("ep")).empty());
  CHECK_NOTHROW(mp::validate_tokens(model, mesh, plan("ep_sp"), 4096));
  CHECK_THROWS_WITH(mp::validate_tokens(model, mesh, plan("ep_sp"), 4095),
                    "meshplan [sequence_divisible]: the sequence of 4095 tokens does not divide evenly over mesh axis "
                    "'tp' (2), which the plan shards it on; pad it to 4096 tokens, or use a token count divisible by 2");
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
