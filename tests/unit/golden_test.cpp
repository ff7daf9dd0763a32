// The reference is the right function: transformers' own MoE blocks (tests/data/golden,
// made by tools/golden/make_fixtures.py with torch 2.15.0 and transformers 5.23.0, fp32)
// against meshplan's single-rank reference and against every built-in plan sharded over
// simulated ranks with shard-on-read weights.
//
// Expert choices must be exactly transformers' (as a set per token: DeepSeek-V3's top-k is
// unsorted in transformers; for Qwen3-MoE and Mixtral also in the same order). Logits,
// routing weights and outputs must agree within 1e-5 relative to the largest magnitude:
// both sides compute in fp32, with sums in different orders.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/io/config_json.hpp"
#include "meshplan/io/moe_checkpoint.hpp"
#include "meshplan/io/safetensors_file.hpp"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/moe/reference.hpp"
#include "meshplan/moe/token_layout.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "../support/moe_cases.hpp"

namespace mp = meshplan;
using mp::index_t;

namespace {

struct Golden {
  mp::ModelSpec model;
  mp::SafetensorsFile block, input, expected;
  explicit Golden(const std::string& family)
      : model(mp::model_from_config_file(dir(family) + "/config.json")),
        block(dir(family) + "/block.safetensors"),
        input(dir(family) + "/input.safetensors"),
        expected(dir(family) + "/expected.safetensors") {}
  static std::string dir(const std::string& family) { return std::string(MESHPLAN_TEST_DATA) + "/golden/" + family; }
};

double relative_difference(std::span<const float> a, std::span<const float> b) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::abs(a[i] - b[i])));
    scale = std::max(scale, static_cast<double>(std::abs(b[i])));
  }
  return diff / std::max(scale, 1e-30);
}

using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep">, mp::Axis<"tp">>;

/// transformers' output, from every built-in plan sharded over `sizes` with each rank reading
/// only its pieces of block.safetensors.
template <class Plan>
double sharded_difference(const Golden& g, moe_cases::Sizes sizes) {
  const auto x = g.input.read<float>("hidden_states");
  const auto want = g.expected.read<float>("output");
  Mesh mesh{sizes.dp, sizes.ep, sizes.tp};
  const mp::MeshSpec spec(mesh);
  const auto tokens = mp::moe_token_layout(g.model, spec, Plan::entries, x.dim(0));
  std::vector<mp::Tensor<float>> outs(static_cast<std::size_t>(spec.size()));
  mp::ThreadWorld world(spec.size());
  world.run([&](mp::ThreadComm& comm) {
    mp::MoEBlock<mp::RuntimeModel, Mesh, Plan> block(g.model, mesh, comm.rank(),
                                                     mp::moe_weights_from<float>(g.block.view()));
    outs[static_cast<std::size_t>(comm.rank())] = block.forward(comm, moe_cases::rows_of(x, tokens, comm.rank())).hidden_states;
  });
  moe_cases::Comparison c;
  for (index_t r = 0; r < spec.size(); ++r) moe_cases::compare_rows(outs[static_cast<std::size_t>(r)], want, tokens, r, c);
  REQUIRE(c.shape_ok);
  return c.max_diff / std::max(c.max_ref, 1e-30);
}

template <template <mp::fixed_string> class EPPlan, template <mp::fixed_string, mp::fixed_string> class EPTP,
          template <mp::fixed_string, mp::fixed_string> class EPSP, template <mp::fixed_string, mp::fixed_string> class ETP,
          template <mp::fixed_string> class TP, template <mp::fixed_string> class TPSP>
void check_family(const std::string& family) {
  const Golden g(family);
  INFO(family << " (made with torch " << g.expected.metadata().at("torch") << ", transformers "
              << g.expected.metadata().at("transformers") << ")");
  const mp::ModelSpec& m = g.model;
  const auto x = g.input.read<float>("hidden_states");
  const auto w = mp::read_moe_weights<float>(g.block.view(), m);

  SECTION("the reference routes as transformers does") {
    const auto logits = mp::cpu::router_logits(x, w.router);
    CHECK(relative_difference(logits.span(), g.expected.read<float>("router_logits").span()) <= 1e-5);
    const auto routing = mp::cpu::route(m, logits, w.correction_bias.span());
    const auto ids = g.expected.read<index_t>("topk_ids");
    const auto weights = g.expected.read<float>("topk_weights");
    const index_t k = m.num_experts_per_tok;
    REQUIRE(ids.shape() == std::vector<index_t>{x.dim(0), k});
    double weight_scale = 0, weight_diff = 0;
    for (index_t t = 0; t < x.dim(0); ++t) {
      std::vector<index_t> mine, theirs;
      for (index_t s = 0; s < k; ++s) {
        mine.push_back(routing.expert(t, s));
        theirs.push_back(ids[t * k + s]);
      }
      if (m.router() != mp::RouterKind::sigmoid_group_topk) CHECK(mine == theirs);  // both sorted by score
      std::vector<index_t> mine_sorted = mine, theirs_sorted = theirs;
      std::sort(mine_sorted.begin(), mine_sorted.end());
      std::sort(theirs_sorted.begin(), theirs_sorted.end());
      CHECK(mine_sorted == theirs_sorted);
      // Each expert's weight, wherever each side lists it.
      for (index_t s = 0; s < k; ++s)
        for (index_t q = 0; q < k; ++q)
          if (mine[s] == theirs[q]) {
            weight_diff = std::max(weight_diff, static_cast<double>(std::abs(routing.weight(t, s) - weights[t * k + q])));
            weight_scale = std::max(weight_scale, static_cast<double>(std::abs(weights[t * k + q])));
          }
    }
    CHECK(weight_diff <= 1e-5 * weight_scale);
  }

  SECTION("the reference's output is transformers' output") {
    const auto out = mp::reference_moe_forward(m, w, x);
    CHECK(relative_difference(out.span(), g.expected.read<float>("output").span()) <= 1e-5);
  }

  SECTION("every built-in plan, sharded, reading only its pieces, gives transformers' output") {
    CHECK(sharded_difference<EPPlan<"ep">>(g, {1, 2, 1}) <= 1e-5);
    CHECK(sharded_difference<EPPlan<"ep">>(g, {1, 8, 1}) <= 1e-5);
    CHECK(sharded_difference<EPPlan<"ep">>(g, {2, 4, 1}) <= 1e-5);
    CHECK(sharded_difference<EPTP<"ep", "tp">>(g, {1, 4, 2}) <= 1e-5);
    CHECK(sharded_difference<EPSP<"ep", "tp">>(g, {1, 2, 2}) <= 1e-5);
    CHECK(sharded_difference<ETP<"ep", "tp">>(g, {1, 4, 2}) <= 1e-5);  // tp <= 2: 2 kv heads
    CHECK(sharded_difference<TP<"tp">>(g, {2, 1, 2}) <= 1e-5);
    CHECK(sharded_difference<TPSP<"tp">>(g, {1, 1, 2}) <= 1e-5);
  }
}

}  // namespace

TEST_CASE("golden: Qwen3-MoE against transformers' Qwen3MoeSparseMoeBlock", "[golden]") {
  namespace p = mp::plans::qwen3_moe;
  check_family<p::ep, p::ep_tp, p::ep_sp, p::etp, p::tp, p::tp_sp>("qwen3_moe");
}

TEST_CASE("golden: Mixtral against transformers' MixtralSparseMoeBlock", "[golden]") {
  namespace p = mp::plans::mixtral;
  check_family<p::ep, p::ep_tp, p::ep_sp, p::etp, p::tp, p::tp_sp>("mixtral");
}

TEST_CASE("golden: DeepSeek-V3 against transformers' DeepseekV3MoE", "[golden]") {
  namespace p = mp::plans::deepseek_v3;
  check_family<p::ep, p::ep_tp, p::ep_sp, p::etp, p::tp, p::tp_sp>("deepseek_v3");
}
