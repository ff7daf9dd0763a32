// Checkpoints: shard-on-read gives each rank exactly its piece (fused, or merged from one
// tensor per expert), and gathering the pieces gives back the full tensors, for every
// parameter of every built-in plan.
#include <catch2/catch.hpp>

#include <random>
#include <string>
#include <vector>

#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/placement/detail/slice.hpp"
#include "meshplan/io/detail/gather.hpp"
#include "meshplan/io/safetensors_view.hpp"
#include "meshplan/io/safetensors_writer.hpp"
#include "meshplan/io/shard_read.hpp"
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/lower.hpp"

namespace mp = meshplan;
using mp::index_t;
using mp::PlacementSpec;

namespace {
template <class T>
mp::Tensor<T> numbered(std::vector<index_t> shape) {
  mp::Tensor<T> t(std::move(shape));
  for (index_t i = 0; i < t.numel(); ++i) t[i] = mp::from_float<T>(static_cast<float>(i % 251) - 125.0f);
  return t;
}
}  // namespace

TEMPLATE_TEST_CASE("read_piece reads exactly the piece the layout gives", "[checkpoint]", float, mp::bfloat16) {
  std::mt19937 rng(5);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int trial = 0; trial < 300; ++trial) {
    const auto mesh = mp::MeshSpec::parse("a=" + std::to_string(pick(1, 3)) + ",b=" + std::to_string(pick(1, 4)));
    std::vector<index_t> shape;
    for (int d = pick(1, 3); d > 0; --d) shape.push_back(pick(0, 9));
    std::vector<PlacementSpec> placements;
    for (int a = 0; a < 2; ++a) {
      const int dim = pick(0, static_cast<int>(shape.size()) - 1);
      const int kind = pick(0, 2);
      placements.push_back(kind == 0   ? PlacementSpec::replicate()
                           : kind == 1 ? PlacementSpec::shard(dim)
                                       : PlacementSpec::strided_shard(dim, pick(1, 3)));
    }
    const mp::LayoutSpec layout(mesh, shape, placements);
    const auto full = numbered<float>(shape);
    mp::SafetensorsWriter w;
    w.add("t", full);
    const auto bytes = w.bytes();
    const mp::SafetensorsView file(bytes);
    for (index_t r = 0; r < mesh.size(); ++r)
      REQUIRE(mp::read_piece<TestType>(file, "t", layout, r) ==
              mp::convert<TestType>(mp::local_piece(full, layout, r)));
  }
}

TEST_CASE("fused experts are read from one tensor per expert, in either naming", "[checkpoint]") {
  const index_t E = 4, I = 6, H = 5;
  const auto gate_up = numbered<float>({E, 2 * I, H});
  const auto down = numbered<float>({E, H, I});
  for (const mp::ExpertNaming* naming : {&mp::hub_expert_naming, &mp::mixtral_expert_naming}) {
    mp::SafetensorsWriter w;
    const std::string prefix = "model.layers.7.mlp.";
    for (index_t e = 0; e < E; ++e) {
      mp::Tensor<float> g({I, H}), u({I, H}), d({H, I});
      for (index_t i = 0; i < I * H; ++i) {
        g[i] = gate_up[e * 2 * I * H + i];
        u[i] = gate_up[e * 2 * I * H + I * H + i];
      }
      for (index_t i = 0; i < H * I; ++i) d[i] = down[e * H * I + i];
      w.add(prefix + mp::detail::expert_name(naming->gate, e), g);
      w.add(prefix + mp::detail::expert_name(naming->up, e), u);
      w.add(prefix + mp::detail::expert_name(naming->down, e), d);
    }
    const auto bytes = w.bytes();
    const mp::SafetensorsView file(bytes);
    for (const char* mesh_text : {"ep=2,tp=1", "ep=1,tp=2", "ep=2,tp=3", "ep=4,tp=2"}) {
      const auto mesh = mp::MeshSpec::parse(mesh_text);
      // Experts over ep; gate_up's packed dim and down's intermediate dim over tp.
      const mp::LayoutSpec gu(mesh, {E, 2 * I, H}, {PlacementSpec::shard(0), PlacementSpec::strided_shard(1, 2)});
      const mp::LayoutSpec dn(mesh, {E, H, I}, {PlacementSpec::shard(0), PlacementSpec::shard(2)});
      for (index_t r = 0; r < mesh.size(); ++r) {
        INFO(mesh_text << " rank " << r);
        CHECK(mp::read_block_piece<float>(file, prefix, "experts.gate_up_proj", gu, r) ==
              mp::local_piece(gate_up, gu, r));
        CHECK(mp::read_block_piece<float>(file, prefix, "experts.down_proj", dn, r) ==
              mp::local_piece(down, dn, r));
      }
    }
    CHECK_THROWS_WITH(mp::read_block_piece<float>(file, "model.layers.8.mlp.", "experts.down_proj",
                                                  mp::LayoutSpec(mp::MeshSpec::parse("ep=1"), {E, H, I},
                                                                 {PlacementSpec::replicate()}),
                                                  0),
                      Catch::StartsWith("meshplan [safetensors_tensor_missing]: '<memory>' has no tensor "
                                        "'model.layers.8.mlp.experts.down_proj', fused or as one tensor per expert"));
  }
}

TEST_CASE("full -> shards -> full is identical for every parameter of every built-in plan", "[checkpoint]") {
  for (const auto& preset : mp::models::all_presets) {
    if (preset.name.rfind("tiny", 0) != 0) continue;
    // A checkpoint holding every parameter of the model.
    const auto params = mp::inventory(preset.spec);
    mp::SafetensorsWriter w;
    std::vector<mp::Tensor<float>> full;
    for (const auto& p : params) {
      std::vector<index_t> shape;
      for (std::size_t d = 0; d < p.rank; ++d) shape.push_back(p.dims[d].extent);
      full.push_back(numbered<float>(shape));
      w.add(std::string(p.name), full.back());
    }
    const auto bytes = w.bytes();
    const mp::SafetensorsView file(bytes);
    for (const auto& plan : mp::plans::builtin_plans(preset.spec.family))
      for (auto [dp, model_size] : {std::pair{1, 2}, {2, 2}, {1, 4}}) {
        // The axes the plan shards over, and a data-parallel one.
        auto size = [&](const char* axis) { return mp::plan_rules::plan_uses_axis(plan.entries, axis) ? model_size : 1; };
        const std::string mesh_text = "dp=" + std::to_string(dp) + ",ep=" + std::to_string(size("ep")) +
                                      ",tp=" + std::to_string(size("tp") == 4 ? 2 : size("tp"));
        INFO(preset.name << " " << plan.name << " on " << mesh_text);
        const auto mesh = mp::MeshSpec::parse(mesh_text);
        REQUIRE_NOTHROW(mp::validate(preset.spec, mesh, plan.entries));
        mp::ThreadWorld world(mesh.size());
        world.run([&](mp::ThreadComm& comm) {
          const auto lowered = mp::lower(preset.spec, mesh, plan.entries, comm.rank());
          mp::SafetensorsWriter out;
          for (std::size_t i = 0; i < lowered.size(); ++i) {
            const auto layout = lowered[i].layout(mesh);
            const auto piece = mp::read_piece<float>(file, std::string(lowered[i].info.name), layout, comm.rank());
            const auto gathered = mp::gather_full(comm, piece, layout);
            CHECK(gathered == full[i]);
            out.add(std::string(lowered[i].info.name), gathered);
          }
          if (comm.rank() == 0) {
            // Written back out, the file holds the same tensors.
            const auto written = out.bytes();
            const mp::SafetensorsView again(written);
            for (std::size_t i = 0; i < lowered.size(); ++i)
              CHECK(again.read<float>(std::string(lowered[i].info.name)) == full[i]);
          }
        });
      }
  }
}
