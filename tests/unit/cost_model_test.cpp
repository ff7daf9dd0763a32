// The cost model against figures worked out by hand from the formulas in cost_model.hpp.
#include <catch2/catch.hpp>

#include <string>

#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/cost_model.hpp"

namespace mp = meshplan;
using mp::Collective;

namespace {
constexpr double MiB = 1024.0 * 1024.0;

mp::CostReport cost(const mp::ModelSpec& model, const char* mesh, std::string_view plan, mp::index_t tokens) {
  return mp::cost_model(model, mp::MeshSpec::parse(mesh), mp::plans::builtin_plan(model.family, plan).entries,
                        {mp::DType::bf16, tokens, 0});
}

const mp::CollectiveCost& find(const std::vector<mp::CollectiveCost>& cs, std::string_view where, Collective c) {
  for (const auto& x : cs)
    if (x.where == where && x.collective == c) return x;
  FAIL("no " << mp::to_string(c) << " at " << where);
  return cs.front();
}
const mp::CostSection& moe_layer(const mp::CostReport& r) { return r.sections[2]; }
}  // namespace

TEST_CASE("tensor parallelism: one all-reduce of [T, H] per block forward and per block backward", "[cost]") {
  const auto& m = mp::models::Qwen3_30B_A3B::spec;
  auto r = cost(m, "tp=2", "tp", 1024);
  const auto& layer = moe_layer(r);
  CHECK(layer.count == 48);
  // 1024 tokens x 2048 hidden x 2 bytes = 4 MiB; a ring all-reduce over 2 ranks sends 2 * 1/2 of it.
  for (const char* where : {"layers.*.self_attn.o_proj.weight", "layers.*.mlp.experts.down_proj"}) {
    const auto& c = find(layer.forward, where, Collective::all_reduce);
    CHECK(c.payload_bytes == 4 * MiB);
    CHECK(c.sent_bytes == 4 * MiB);
    CHECK(c.group == 2);
  }
  CHECK(layer.forward.size() == 2);
  // Backward: the replicated inputs of q/k/v and of the experts carry partial gradients.
  CHECK(find(layer.backward, "layers.*.self_attn.q_proj.weight", Collective::all_reduce).payload_bytes == 4 * MiB);
  CHECK(find(layer.backward, "layers.*.mlp.experts.gate_up_proj", Collective::all_reduce).payload_bytes == 4 * MiB);
  // The experts' outputs are partial sums, so the gradients of the routing weights (<y, dy>,
  // fp32) are too: 1024 tokens x top-8 x 4 bytes.
  CHECK(find(layer.backward, "layers.*.mlp.experts.down_proj (routing weights)", Collective::all_reduce).payload_bytes ==
        1024 * 8 * 4);
  CHECK(layer.backward.size() == 3);
  // The output embedding gathers the full logits: 1024 x 151936 x 2 bytes.
  const auto& ends = r.sections[0];
  CHECK(find(ends.forward, "lm_head.weight", Collective::all_gather).payload_bytes == 1024.0 * 151936 * 2);
  CHECK(find(ends.forward, "embed_tokens.weight", Collective::all_reduce).payload_bytes == 4 * MiB);
  // Only q_norm and k_norm see a part of the heads (48 layers x 2 x [128] x 2 bytes), so only
  // their gradients are all-reduced; everything else sees the same tokens on both ranks.
  CHECK(r.grad_sync_bytes == 48 * 2 * 128 * 2);
}

TEST_CASE("expert parallelism: all-to-all-v of routed rows, next to transformers' all-reduce EP", "[cost]") {
  const auto& m = mp::models::Qwen3_30B_A3B::spec;
  auto r = cost(m, "ep=8", "ep", 1024);
  const auto& layer = moe_layer(r);
  // 1024 tokens x top-8 x 2048 x 2 bytes = 32 MiB out and 32 MiB back; 7/8 of it leaves the rank.
  for (const char* where : {"layers.*.mlp.experts (dispatch)", "layers.*.mlp.experts (combine)"}) {
    CHECK(find(layer.forward, where, Collective::all_to_all).payload_bytes == 32 * MiB);
    CHECK(find(layer.forward, where, Collective::all_to_all).sent_bytes == 28 * MiB);
    CHECK(find(layer.backward, where, Collective::all_to_all).sent_bytes == 28 * MiB);
  }
  REQUIRE(r.ep.size() == 1);
  CHECK(r.ep[0].all_to_all_sent == 56 * MiB);
  // transformers: the 8 ranks' 8192 tokens on every rank, [8192, 2048] all-reduced: 2 * 7/8 * 32 MiB.
  CHECK(r.ep[0].all_reduce_sent == 56 * MiB);
  // With top-8 the two are equal at ep=8; the all-to-all wins by ep/k beyond.
  auto r64 = cost(m, "ep=64", "ep", 1024);
  CHECK(r64.ep[0].all_reduce_sent / r64.ep[0].all_to_all_sent == Approx(8.0));
  // Data parallel over ep for everything but the experts: their gradients are all-reduced.
  double replicated = 0;
  for (const auto& p : mp::inventory(m))
    if (p.kind != mp::ParamKind::experts_gate_up && p.kind != mp::ParamKind::experts_down)
      replicated += static_cast<double>(p.elements() * p.count) * 2;
  CHECK(r.grad_sync_bytes == Approx(replicated * 2 * 7 / 8));
}

TEST_CASE("sequence parallelism: gather on entry, reduce-scatter on exit, and their adjoints", "[cost]") {
  const auto& m = mp::models::Qwen3_30B_A3B::spec;
  auto r = cost(m, "ep=8,tp=4", "ep_sp", 4096);
  const auto& layer = moe_layer(r);
  // [4096, 2048] bf16 = 16 MiB; gathering or scattering over 4 ranks sends 3/4 of it.
  const auto& gather = find(layer.forward, "layers.*.self_attn (entry)", Collective::all_gather);
  CHECK(gather.payload_bytes == 16 * MiB);
  CHECK(gather.sent_bytes == 12 * MiB);
  CHECK(find(layer.forward, "layers.*.self_attn.o_proj.weight", Collective::reduce_scatter).sent_bytes == 12 * MiB);
  CHECK(find(layer.backward, "layers.*.self_attn.o_proj.weight", Collective::all_gather).sent_bytes == 12 * MiB);
  CHECK(find(layer.backward, "layers.*.self_attn.q_proj.weight", Collective::reduce_scatter).sent_bytes == 12 * MiB);
  // The MoE block sees 4096 / 4 tokens per rank: dispatch 1024 x 8 x 2048 x 2 = 32 MiB; no tp traffic there.
  CHECK(find(layer.forward, "layers.*.mlp.experts (dispatch)", Collective::all_to_all).payload_bytes == 32 * MiB);
  for (const auto& c : layer.forward)
    if (c.where.rfind("layers.*.mlp", 0) == 0) CHECK(c.axis == "ep");
  CHECK(r.ep[0].tokens == 1024);
}

TEST_CASE("parameter bytes per rank", "[cost]") {
  const auto& m = mp::models::Mixtral_8x7B::spec;
  // etp on ep=8, tp=8: each rank holds one expert, an eighth of its intermediate dim.
  auto r = cost(m, "ep=8,tp=8", "etp", 16);
  double expected = 0;
  for (const auto& p : mp::inventory(m)) {
    double e = static_cast<double>(p.elements() * p.count);
    switch (p.kind) {
      case mp::ParamKind::experts_gate_up:
      case mp::ParamKind::experts_down: e /= 64; break;
      case mp::ParamKind::linear:
      case mp::ParamKind::embedding:
      case mp::ParamKind::lm_head: e /= 8; break;
      default: break;
    }
    expected += e * 2;
  }
  CHECK(r.param_bytes == Approx(expected));
}
