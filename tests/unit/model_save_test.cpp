// Saving whole models that run sharded: the gathered save is a transformers-style
// directory that loads back (on one rank or any mesh) with the same weights, and the
// per-rank save reloads onto another mesh and plan (resharding) with the same weights.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>

#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/io/detail/layout_text.hpp"
#include "meshplan/io/model_checkpoint.hpp"
#include "meshplan/io/model_save.hpp"
#include "meshplan/nn/causal_lm.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "../support/model_files.hpp"

namespace mp = meshplan;
using mp::index_t;
namespace fs = std::filesystem;

namespace {

using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep">, mp::Axis<"tp">>;

using model_files::golden;
using model_files::TempDir;
std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

mp::nn::TokenBatch batch() { return model_files::golden_batch(golden("qwen3_moe")); }

/// Logits [B * S, V] and loss of a forward on `mesh` from `source`, after `steps` SGD steps
/// (lr 0.1); with `save`, every rank calls save(comm, model) at the end.
template <class Plan, class Save = std::nullptr_t>
std::pair<mp::Tensor<float>, double> run(const mp::ModelSpec& spec, const mp::nn::ModelSource& source, Mesh mesh,
                                         int steps, Save save = nullptr) {
  const mp::nn::TokenBatch b = batch();
  mp::Tensor<float> logits({b.sequences * b.length, spec.vocab_size});
  double loss = 0;
  std::mutex m;
  mp::ThreadWorld world(mp::MeshSpec(mesh).size());
  world.run([&](mp::ThreadComm& comm) {
    auto model = mp::nn::CausalLM<Mesh, Plan>::load(comm, spec, mesh, source, 1);
    for (int s = 0; s < steps; ++s) {
      model->forward(comm, b, mp::nn::Mode::train);
      model->backward(comm);
      model->sgd_step(0.1f);
    }
    const auto step = model->forward(comm, b, mp::nn::Mode::infer);
    {
      std::lock_guard lock(m);
      std::copy_n(step.logits.data(), step.logits.numel(),
                  logits.data() + step.first_sequence * b.length * spec.vocab_size);
      if (comm.rank() == 0) loss = step.loss;
    }
    if constexpr (!std::is_same_v<Save, std::nullptr_t>) save(comm, *model);
  });
  return {logits, loss};
}

bool same_bits(const mp::Tensor<float>& a, const mp::Tensor<float>& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), sizeof(float) * a.vector().size()) == 0;
}

}  // namespace

TEST_CASE("layouts round-trip through their text", "[model][checkpoint]") {
  const mp::MeshSpec mesh = mp::MeshSpec::parse("dp=2,ep=2,tp=2");
  const mp::LayoutSpec l(mesh, {8, 64, 64},
                         {mp::PlacementSpec::replicate(), mp::PlacementSpec::shard(0), mp::PlacementSpec::strided_shard(1, 2)});
  CHECK(mp::layout_text(l) == "[8, 64, 64] Replicate() Shard(0) StridedShard(1, sf=2)");
  const mp::LayoutSpec back = mp::parse_layout_text(mp::layout_text(l), mesh);
  CHECK(back.global_extents() == l.global_extents());
  CHECK(back.placements() == l.placements());
  CHECK_THROWS_WITH(mp::parse_layout_text("[8, 64] Shard(0)", mesh), Catch::Contains("layout_text"));
  CHECK_THROWS_WITH(mp::parse_layout_text("8, 64 Shard(0) Shard(1) Shard(0)", mesh), Catch::Contains("is not a layout"));
}

TEST_CASE("a model trained on a mesh, saved gathered, loads back with the same weights", "[model][checkpoint]") {
  for (std::string_view family : {"qwen3_moe", "mixtral", "deepseek_v3"}) {
    INFO(family);
    const mp::ModelCheckpoint ckpt(golden(family));
    TempDir dir("save_" + std::string(family) + "_gathered");
    const std::string config = read_text(golden(family) + "/config.json");
    auto check = [&]<class Plan>(Mesh mesh) {
      // Two steps on the mesh, then its logits; saved; loaded on one rank: the same logits
      // (the saved weights are the mesh's bits) up to the mesh's own sums.
      const auto [trained, loss] = run<Plan>(ckpt.spec(), ckpt.source(), mesh, 2, [&](auto& comm, auto& model) {
        mp::save_model(comm, model, dir.path.string(), config);
      });
      const mp::ModelCheckpoint saved(dir.path.string());
      const auto [reloaded, reloaded_loss] = run<Plan>(saved.spec(), saved.source(), mesh, 0);
      CHECK(same_bits(reloaded, trained));
      CHECK(reloaded_loss == loss);
      // The hub layout: experts one tensor per expert, as transformers writes them.
      CHECK(saved.files().contains(family == "mixtral" ? "model.layers.1.block_sparse_moe.experts.7.w2.weight"
                                                      : "model.layers.1.mlp.experts.7.down_proj.weight"));
    };
    if (family == "deepseek_v3") check.template operator()<mp::plans::deepseek_v3::etp<>>(Mesh{2, 2, 2});
    if (family == "mixtral") check.template operator()<mp::plans::mixtral::ep_sp<>>(Mesh{1, 2, 2});
    if (family == "qwen3_moe") check.template operator()<mp::plans::qwen3_moe::tp_sp<>>(Mesh{1, 1, 4});
  }
}

TEST_CASE("a per-rank save reloads onto another mesh and plan", "[model][checkpoint]") {
  const mp::ModelCheckpoint ckpt(golden("qwen3_moe"));
  const std::string config = read_text(golden("qwen3_moe") + "/config.json");
  TempDir dir("save_sharded");
  const auto [trained, loss] =
      run<mp::plans::qwen3_moe::ep_sp<>>(ckpt.spec(), ckpt.source(), Mesh{2, 2, 2}, 1, [&](auto& comm, auto& model) {
        mp::save_sharded(comm, model, dir.path.string(), config);
      });
  CHECK(fs::exists(dir.path / "rank-7-of-8.safetensors"));
  const mp::ShardedCheckpoint saved(dir.path.string());
  // The same weights on one rank: the ep_sp mesh only moves data in the MoE block but splits
  // attention over tp, so its logits agree to fp32 sums; on one rank both are the same bits.
  const auto [one, one_loss] = run<mp::plans::qwen3_moe::ep_sp<>>(saved.spec(), saved.source(), Mesh{1, 1, 1}, 0);
  const auto [tp4, tp4_loss] = run<mp::plans::qwen3_moe::tp<>>(saved.spec(), saved.source(), Mesh{1, 1, 4}, 0);
  double worst = 0, ref = 0;
  for (index_t i = 0; i < one.numel(); ++i) {
    worst = std::max({worst, std::abs(double(one[i]) - trained[i]), std::abs(double(tp4[i]) - trained[i])});
    ref = std::max(ref, std::abs(double(trained[i])));
  }
  CHECK(worst <= 1e-5 * ref);
  CHECK(std::abs(one_loss - loss) <= 1e-5 * std::abs(loss));
  CHECK(std::abs(tp4_loss - loss) <= 1e-5 * std::abs(loss));
  CHECK_THROWS_WITH(mp::ShardedCheckpoint(golden("qwen3_moe")), Catch::Contains("rank-0-of-N.safetensors"));
}

TEST_CASE("a checkpoint split over several files by model.safetensors.index.json", "[model][checkpoint]") {
  // The golden Mixtral checkpoint cut into three files (experts of one layer spread over two
  // of them), as transformers saves large models.
  TempDir dir("save_index");
  fs::create_directories(dir.path);
  fs::copy_file(golden("mixtral") + "/config.json", dir.path / "config.json");
  mp::SafetensorsFile whole(golden("mixtral") + "/model.safetensors");
  mp::SafetensorsWriter parts[3];
  std::string index = "{\"metadata\": {}, \"weight_map\": {";
  std::size_t i = 0;
  for (const auto& t : whole.tensors()) {
    const std::size_t part = i++ % 3;
    parts[part].add(t.name, whole.read<float>(t.name));
    index += (i > 1 ? ", \"" : "\"") + t.name + "\": \"model-0000" + std::to_string(part + 1) + "-of-00003.safetensors\"";
  }
  index += "}}";
  for (std::size_t p = 0; p < 3; ++p)
    parts[p].write((dir.path / ("model-0000" + std::to_string(p + 1) + "-of-00003.safetensors")).string());
  std::ofstream(dir.path / "model.safetensors.index.json") << index;

  const mp::ModelCheckpoint one_file(golden("mixtral")), split(dir.path.string());
  const Mesh mesh{1, 2, 2};
  const auto [a, loss_a] = run<mp::plans::mixtral::etp<>>(one_file.spec(), one_file.source(), mesh, 0);
  const auto [b, loss_b] = run<mp::plans::mixtral::etp<>>(split.spec(), split.source(), mesh, 0);
  CHECK(same_bits(a, b));
  CHECK(loss_a == loss_b);

  // A tensor the index does not list is named with the index; a file it names that is
  // missing, with that file.
  std::ofstream(dir.path / "model.safetensors.index.json")
      << "{\"weight_map\": {\"lm_head.weight\": \"model-00001-of-00003.safetensors\"}}";
  const mp::ModelCheckpoint partial(dir.path.string());
  CHECK_THROWS_WITH(run<mp::plans::mixtral::etp<>>(partial.spec(), partial.source(), mesh, 0),
                    Catch::Contains("model.safetensors.index.json' has no tensor"));
  std::ofstream(dir.path / "model.safetensors.index.json")
      << "{\"weight_map\": {\"lm_head.weight\": \"model-00009-of-00009.safetensors\"}}";
  CHECK_THROWS_WITH(mp::ModelCheckpoint(dir.path.string()), Catch::Contains("model-00009-of-00009.safetensors"));
  std::ofstream(dir.path / "model.safetensors.index.json") << "{\"weights\": 1}";
  CHECK_THROWS_WITH(mp::ModelCheckpoint(dir.path.string()), Catch::Contains("checkpoint_index"));
}
