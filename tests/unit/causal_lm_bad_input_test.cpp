// Whole models on bad input: token ids outside the vocabulary, a batch that does not split
// over a sequence-parallel axis, checkpoints with a missing tensor, a wrong shape or dtype,
// a config they do not match, a truncated file. Every rank stops with a clear error naming
// the file and the tensor (or the peer's failure), never a crash or a hang; and the batch
// sizes at the edges (one token, one sequence over many data ranks, no sequence) run.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/io/model_checkpoint.hpp"
#include "meshplan/io/safetensors_file.hpp"
#include "meshplan/io/safetensors_writer.hpp"
#include "meshplan/nn/causal_lm.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "../support/model_files.hpp"

namespace mp = meshplan;
using mp::index_t;
namespace fs = std::filesystem;

namespace {

using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep">, mp::Axis<"tp">>;

using model_files::golden;

/// A scratch copy of a golden checkpoint whose model.safetensors the caller rewrites.
struct ScratchCheckpoint {
  model_files::TempDir scratch;
  fs::path dir;
  ScratchCheckpoint(std::string_view family, std::string_view tag)
      : scratch("bad_" + std::string(family) + "_" + std::string(tag)), dir(scratch.path) {
    fs::create_directories(dir);
    fs::copy_file(golden(family) + "/config.json", dir / "config.json");
  }

  /// model.safetensors with `edit(name, tensor, writer)` deciding what each tensor becomes.
  template <class Edit>
  void write_model(std::string_view family, Edit&& edit) {
    mp::SafetensorsFile in(golden(family) + "/model.safetensors");
    mp::SafetensorsWriter out;
    for (const auto& t : in.tensors()) edit(t.name, in.read<float>(t.name), out);
    out.write((dir / "model.safetensors").string());
  }
};

/// Runs f(comm) on every rank of the mesh; returns each rank's error (rule and text).
struct RankError {
  std::string rule, what;
};
template <class F>
std::vector<RankError> errors_on_ranks(index_t ranks, F&& f) {
  std::vector<RankError> errors(static_cast<std::size_t>(ranks));
  std::mutex m;
  mp::ThreadWorld world(ranks);
  world.run([&](mp::ThreadComm& comm) {
    try {
      f(comm);
    } catch (const mp::RuleViolation& e) {
      std::lock_guard lock(m);
      errors[static_cast<std::size_t>(comm.rank())] = {e.rule(), e.what()};
    }
  });
  return errors;
}

mp::nn::TokenBatch batch_of(index_t sequences, index_t length, index_t vocab) {
  mp::nn::TokenBatch b{sequences, length, {}, {}};
  for (index_t i = 0; i < sequences * length; ++i) {
    b.ids.push_back((i * 37 + 11) % vocab);
    b.labels.push_back((i * 53 + 5) % vocab);
  }
  return b;
}

template <class Plan>
std::vector<RankError> run_on(const std::string& dir, Mesh mesh, const mp::nn::TokenBatch& batch) {
  const mp::MeshSpec spec(mesh);
  return errors_on_ranks(spec.size(), [&](mp::ThreadComm& comm) {
    const mp::ModelCheckpoint ckpt(dir);
    auto model = mp::nn::CausalLM<Mesh, Plan>::load(comm, ckpt.spec(), mesh, ckpt.source(), 1);
    model->forward(comm, batch, mp::nn::Mode::train);
    model->backward(comm);
  });
}

}  // namespace

TEST_CASE("token ids outside the vocabulary stop every rank with the token's place", "[model][bad_input]") {
  mp::nn::TokenBatch b = batch_of(4, 8, 128);
  b.ids[13] = 128;
  for (const auto& e : run_on<mp::plans::qwen3_moe::ep_tp<>>(golden("qwen3_moe"), Mesh{1, 2, 2}, b)) {
    CHECK(e.rule == "token_in_vocab");
    CHECK(e.what.find("token 13 (sequence 1, position 5) has id 128") != std::string::npos);
  }
  b.ids[13] = 3;
  b.labels[2] = -7;
  for (const auto& e : run_on<mp::plans::qwen3::tp<>>(golden("qwen3"), Mesh{2, 1, 2}, b)) {
    CHECK(e.rule == "token_in_vocab");
    CHECK(e.what.find("label 2 is -7") != std::string::npos);
  }
}

TEST_CASE("a batch whose tokens do not split over a sequence-parallel axis is refused on every rank",
          "[model][bad_input]") {
  const auto errors = run_on<mp::plans::qwen3::tp_sp<>>(golden("qwen3"), Mesh{1, 1, 2}, batch_of(1, 7, 128));
  for (const auto& e : errors) {
    CHECK(e.rule == "sequence_divisible");
    CHECK(e.what.find("7 tokens do not split evenly over the 2 ranks") != std::string::npos);
  }
}

TEST_CASE("checkpoint errors name the file and the tensor, and stop every rank", "[model][bad_input]") {
  const mp::nn::TokenBatch b = batch_of(2, 4, 128);
  SECTION("a missing expert tensor only one EP rank reads") {
    ScratchCheckpoint c("qwen3_moe", "missing");
    const std::string gone = "model.layers.1.mlp.experts.6.up_proj.weight";
    c.write_model("qwen3_moe", [&](const std::string& name, const mp::Tensor<float>& t, mp::SafetensorsWriter& w) {
      if (name != gone) w.add(name, t);
    });
    const auto errors = run_on<mp::plans::qwen3_moe::ep<>>(c.dir.string(), Mesh{1, 2, 1}, b);
    // Experts 4..7 live on rank 1: it names the tensor; rank 0 learns that a peer failed.
    CHECK(errors[1].what.find(gone) != std::string::npos);
    CHECK(errors[1].what.find("model.safetensors") != std::string::npos);
    CHECK(errors[0].rule == "peer_input_error");
  }
  SECTION("a wrong shape") {
    ScratchCheckpoint c("qwen3", "shape");
    c.write_model("qwen3", [&](const std::string& name, const mp::Tensor<float>& t, mp::SafetensorsWriter& w) {
      if (name == "model.layers.1.self_attn.k_proj.weight")
        w.add(name, mp::Tensor<float>({t.dim(0), t.dim(1) - 1}));
      else
        w.add(name, t);
    });
    for (const auto& e : run_on<mp::plans::qwen3::tp<>>(c.dir.string(), Mesh{1, 1, 2}, b)) {
      CHECK(e.rule == "shape_matches");
      CHECK(e.what.find("model.layers.1.self_attn.k_proj.weight") != std::string::npos);
      CHECK(e.what.find("[32, 63]") != std::string::npos);
    }
  }
  SECTION("a parameter stored as integers") {
    ScratchCheckpoint c("qwen3", "dtype");
    c.write_model("qwen3", [&](const std::string& name, const mp::Tensor<float>& t, mp::SafetensorsWriter& w) {
      if (name == "model.norm.weight")
        w.add(name, mp::Tensor<std::int64_t>(t.shape()));
      else
        w.add(name, t);
    });
    for (const auto& e : run_on<mp::plans::qwen3::tp<>>(c.dir.string(), Mesh{1, 1, 2}, b)) {
      CHECK(e.rule == "tensor_dtype");
      CHECK(e.what.find("'model.norm.weight'") != std::string::npos);
      CHECK(e.what.find("I64") != std::string::npos);
    }
  }
  SECTION("a config the checkpoint does not match") {
    ScratchCheckpoint c("qwen3", "config");
    fs::copy_file(golden("qwen3") + "/model.safetensors", c.dir / "model.safetensors");
    std::ifstream in(golden("qwen3") + "/config.json");
    std::string text((std::istreambuf_iterator<char>(in)), {});
    const auto at = text.find("\"vocab_size\": 128");
    REQUIRE(at != std::string::npos);
    text.replace(at, 17, "\"vocab_size\": 256");
    std::ofstream(c.dir / "config.json") << text;
    for (const auto& e : run_on<mp::plans::qwen3::tp<>>(c.dir.string(), Mesh{1, 1, 2}, b)) {
      CHECK(e.rule == "shape_matches");
      CHECK(e.what.find("model.embed_tokens.weight") != std::string::npos);
    }
  }
  SECTION("a truncated file") {
    ScratchCheckpoint c("qwen3", "truncated");
    fs::copy_file(golden("qwen3") + "/model.safetensors", c.dir / "model.safetensors");
    fs::resize_file(c.dir / "model.safetensors", fs::file_size(c.dir / "model.safetensors") / 2);
    for (const auto& e : run_on<mp::plans::qwen3::tp<>>(c.dir.string(), Mesh{1, 1, 2}, b)) {
      CHECK(!e.rule.empty());
      CHECK(e.what.find("model.safetensors") != std::string::npos);
    }
  }
}

TEST_CASE("batches at the edges: one token, fewer sequences than data ranks, no sequence", "[model]") {
  // Each runs on one rank and on a mesh with four data members; the losses agree bit for
  // bit (the data axes only move data), and no sequence gives no loss.
  auto loss_on = [](Mesh mesh, const mp::nn::TokenBatch& b) {
    const mp::MeshSpec spec(mesh);
    double loss = 0;
    mp::ThreadWorld world(spec.size());
    const mp::ModelCheckpoint ckpt(golden("deepseek_v3"));
    world.run([&](mp::ThreadComm& comm) {
      auto model = mp::nn::CausalLM<Mesh, mp::plans::deepseek_v3::ep<>>::load(comm, ckpt.spec(), mesh, ckpt.source(), 1);
      const auto step = model->forward(comm, b, mp::nn::Mode::train);
      model->backward(comm);
      if (comm.rank() == 0) loss = step.loss;
    });
    return loss;
  };
  for (auto [sequences, length] : {std::pair<index_t, index_t>{1, 1}, {1, 2}, {3, 5}, {0, 8}}) {
    INFO(sequences << " x " << length);
    const mp::nn::TokenBatch b = batch_of(sequences, length, 128);
    const double one = loss_on(Mesh{1, 1, 1}, b), four = loss_on(Mesh{2, 2, 1}, b);
    if (sequences * (length - 1) == 0) {
      CHECK(std::isnan(one));
      CHECK(std::isnan(four));
    } else {
      CHECK(std::isfinite(one));
      CHECK(std::memcmp(&one, &four, sizeof one) == 0);
    }
  }
}
