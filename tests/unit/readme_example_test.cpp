// The example of README.md, kept compiling and true.
#include <catch2/catch.hpp>

#include <meshplan/meshplan.hpp>

namespace mp = meshplan;

TEST_CASE("README example", "[readme]") {
  using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep", 4>, mp::Axis<"tp", 2>>;
  using GateUp = mp::Layout<Mesh, mp::Extents<128, 1536, 2048>, mp::Replicate, mp::Shard<0>, mp::StridedShard<1, 2>>;

  Mesh mesh{2};
  GateUp w{mesh, {}};
  CHECK(w.local_extents(5) == std::array<mp::index_t, 3>{32, 768, 2048});
  STATIC_REQUIRE(std::is_same_v<decltype(w.local_extent<1>(5)), mp::C<768>>);
  CHECK(mesh.group<"dp", "ep">(5).members == std::vector<mp::index_t>{1, 3, 5, 7, 9, 11, 13, 15});

  using Full = mp::Layout<Mesh, mp::Extents<128, 1536, 2048>, mp::Replicate, mp::Replicate, mp::Replicate>;
  STATIC_REQUIRE(mp::redistribution<GateUp, Full>::uses(mp::Collective::all_gather));

  CHECK_THROWS_WITH(mp::MeshSpec::parse("ep=4,ep=2"),
                    "meshplan [axis_names_unique]: mesh axis name 'ep' is used twice (axes 0 and 1); every axis "
                    "needs its own name");
}

TEST_CASE("README plan example", "[readme]") {
  using Model = mp::models::Qwen3_30B_A3B;
  using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep", 8>, mp::Axis<"tp", 4>>;
  using Plan = mp::plans::qwen3_moe::ep_sp<"ep", "tp">;
  STATIC_REQUIRE(mp::validate<Model, Mesh, Plan>());
  STATIC_REQUIRE_FALSE(mp::valid_plan_v<Model, mp::DeviceMesh<mp::Axis<"tp", 8>>, mp::plans::qwen3_moe::tp<>>);
  CHECK(mp::detail::check_static<Model, mp::DeviceMesh<mp::Axis<"tp", 8>>, mp::plans::qwen3_moe::tp<>>().view() ==
        "meshplan [kv_heads_divisible]: num_key_value_heads (4) is not divisible by 8 (mesh axis 'tp'), which shards "
        "dim 0 of 'layers.*.self_attn.k_proj.weight'");
}

// The whole-model example, with the golden Qwen3-MoE checkpoint as the directory.
#include <meshplan/comm/thread_comm.hpp>
#include <meshplan/io/model_checkpoint.hpp>
#include <meshplan/io/model_save.hpp>
#include <meshplan/nn/causal_lm.hpp>
#include <meshplan/plan/builtin/registry.hpp>

#include "../support/model_files.hpp"

TEST_CASE("README whole-model example", "[readme][model]") {
  const std::string dir = model_files::golden("qwen3_moe");
  const auto [sequences, length, ids, labels] = model_files::golden_batch(dir);
  model_files::TempDir out_dir("readme_out");
  const std::string config_json_text = "{}";  // what save_model writes as config.json

  using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep">, mp::Axis<"tp">>;
  mp::nn::TokenBatch batch{sequences, length, ids, labels};
  const mp::ModelCheckpoint ckpt(dir);
  double loss = 0;
  mp::ThreadWorld(8).run([&](mp::ThreadComm& comm) {
    auto model = mp::nn::CausalLM<Mesh, mp::plans::qwen3_moe::ep_sp<>>::load(comm, ckpt.spec(), Mesh{2, 2, 2},
                                                                             ckpt.source());
    auto step = model->forward(comm, batch, mp::nn::Mode::train);
    model->backward(comm);
    model->sgd_step(0.1f);
    mp::save_model(comm, *model, out_dir.path.string(), config_json_text);
    if (comm.rank() == 0) loss = step.loss;
  });
  CHECK(std::abs(loss - 5.17988) < 1e-4);  // transformers' loss on this batch
  CHECK(std::filesystem::exists(out_dir.path / "model.safetensors"));
}
