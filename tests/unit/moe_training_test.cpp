// Training the MoE block: plain SGD over several steps gives the same loss sequence, bit
// for bit, on one rank and on sharded meshes; a backward into kept gradients gives a fresh
// backward's bits in the same memory; a backward refuses bad input on every rank alike;
// the bytes the backward sends are the cost model's.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/cost_model.hpp"
#include "../support/moe_backward_run.hpp"

namespace mp = meshplan;
using mp::index_t;
using namespace moe_cases;

namespace {

using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep">, mp::Axis<"tp">>;

/// loss = sum over tokens, in token order, of <y[t], target[t]> / tokens (double), after
/// each of `steps` SGD steps (lr 0.5) on every rank's pieces with the gradients its
/// backward returned.
template <class Model, class Plan, class T>
std::vector<double> sgd_losses(Sizes sizes, int steps) {
  constexpr mp::ModelSpec model = Model::spec;
  constexpr index_t tokens = 24;
  const index_t H = model.hidden_size;
  auto [w, x] = make_case<T>(model, RoutingKind::skewed, tokens, 4242);
  mp::Tensor<float> dy = random_grad_output(tokens, H, 99);
  for (float& v : dy.vector()) v /= static_cast<float>(tokens);
  const Mesh mesh{sizes.dp, sizes.ep, sizes.tp};
  const mp::MeshSpec spec(mesh);
  const mp::LayoutSpec layout = mp::moe_token_layout(model, spec, Plan::entries, tokens);
  std::vector<mp::Tensor<T>> outputs(static_cast<std::size_t>(steps), mp::Tensor<T>({tokens, H}));
  mp::ThreadWorld world(spec.size());
  world.run([&](mp::ThreadComm& comm) {
    const index_t r = comm.rank();
    mp::MoEBlock<Model, Mesh, Plan, mp::CpuBackend<T>> block(mesh, r, w);
    block.set_training(mp::Training::keep_activations);
    const mp::Tensor<T> rows = rows_of(x, layout, r);
    const mp::Tensor<float> my_dy = rows_of(dy, layout, r);
    for (int s = 0; s < steps; ++s) {
      auto f = block.forward(comm, rows);
      index_t row = 0;  // replicas write the same bits (moe_block_test checks)
      for (const auto& run : layout.held_indices(0, r))
        for (index_t t = run.begin; t < run.begin + run.size; ++t, ++row)
          std::memcpy(outputs[static_cast<std::size_t>(s)].data() + t * H, f.hidden_states.data() + row * H,
                      static_cast<std::size_t>(H) * sizeof(T));
      block.sgd_step(block.backward(comm, f.state, my_dy), 0.5f);
    }
  });
  std::vector<double> losses;
  for (const auto& y : outputs) {
    double loss = 0;
    for (index_t i = 0; i < y.numel(); ++i) loss += static_cast<double>(mp::to_float(y[i])) * dy[i];
    losses.push_back(loss);
  }
  return losses;
}

template <class Model, class Plan, class T>
void same_losses_on_every_mesh(std::initializer_list<Sizes> meshes) {
  const std::vector<double> one = sgd_losses<Model, Plan, T>({1, 1, 1}, 4);
  // The steps do something: the loss falls.
  CHECK(one.back() < one.front());
  for (Sizes s : meshes) {
    INFO("mesh " << s.text());
    const std::vector<double> got = sgd_losses<Model, Plan, T>(s, 4);
    REQUIRE(got.size() == one.size());
    for (std::size_t i = 0; i < got.size(); ++i) CHECK(std::memcmp(&got[i], &one[i], sizeof(double)) == 0);
  }
}

}  // namespace

TEMPLATE_TEST_CASE("SGD on the block: the same losses, bit for bit, on one rank and on ep=4 and dp=2,ep=2",
                   "[moe][backward][training]", float, mp::bfloat16) {
  SECTION("Qwen3-MoE") {
    same_losses_on_every_mesh<mp::models::TinyQwen3Moe, mp::plans::qwen3_moe::ep<>, TestType>({{1, 4, 1}, {2, 2, 1}});
  }
  SECTION("Mixtral") {
    same_losses_on_every_mesh<mp::models::TinyMixtral, mp::plans::mixtral::ep<>, TestType>({{1, 4, 1}, {2, 2, 1}});
  }
  SECTION("DeepSeek-V3") {
    same_losses_on_every_mesh<mp::models::TinyDeepSeekV3, mp::plans::deepseek_v3::ep<>, TestType>({{1, 4, 1}, {2, 2, 1}});
  }
  SECTION("DeepSeek-V3, sequence parallel with expert parallelism") {
    same_losses_on_every_mesh<mp::models::TinyDeepSeekV3, mp::plans::deepseek_v3::ep_sp<>, TestType>({{2, 2, 2}});
  }
}

// ---- Gradients kept across steps -----------------------------------------------------------

namespace {

/// Every tensor of `g`, in named() order, then the input gradient.
std::vector<const mp::Tensor<float>*> tensors_of(const mp::MoEGradients& g) {
  std::vector<const mp::Tensor<float>*> out;
  for (const auto& [name, t] : g.named()) out.push_back(t);
  out.push_back(&g.hidden_states);
  return out;
}

bool same_bits(const mp::Tensor<float>& a, const mp::Tensor<float>& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.span().size_bytes()) == 0;
}

/// backward(comm, state, dy, g) into gradients that hold NaN (the right shapes: their
/// memory is kept) or the wrong shapes (replaced) gives the bits of a backward into fresh
/// gradients, on every rank.
template <class Model, class Plan>
void reused_gradients_are_fresh_ones(Sizes sizes) {
  INFO(mp::to_string(Model::spec.family) << ", mesh " << sizes.text());
  constexpr mp::ModelSpec model = Model::spec;
  constexpr index_t tokens = 21;
  auto [w, x] = make_case<float>(model, RoutingKind::idle_experts, tokens, 77);
  const mp::Tensor<float> dy = random_grad_output(tokens, model.hidden_size, 78);
  const Mesh mesh{sizes.dp, sizes.ep, sizes.tp};
  const mp::LayoutSpec layout = mp::moe_token_layout(model, mp::MeshSpec(mesh), Plan::entries, tokens);
  std::vector<int> failures(static_cast<std::size_t>(sizes.world()), 0);
  mp::ThreadWorld(sizes.world()).run([&](mp::ThreadComm& comm) {
    const index_t r = comm.rank();
    int& failed = failures[static_cast<std::size_t>(r)];
    mp::MoEBlock<Model, Mesh, Plan, mp::CpuBackend<float>> block(mesh, r, w);
    block.set_training(mp::Training::keep_activations);
    const mp::Tensor<float> rows = rows_of(x, layout, r), my_dy = rows_of(dy, layout, r);
    auto f = block.forward(comm, rows);
    const mp::MoEGradients fresh = block.backward(comm, f.state, my_dy);

    mp::MoEGradients held = fresh;
    for (mp::Tensor<float>* t : {&held.hidden_states, &held.router, &held.gate_up, &held.down, &held.shared_gate,
                                 &held.shared_up, &held.shared_down})
      std::fill(t->vector().begin(), t->vector().end(), std::numeric_limits<float>::quiet_NaN());
    const float* kept[] = {held.router.data(), held.gate_up.data(), held.down.data()};
    auto f2 = block.forward(comm, rows);
    block.backward(comm, f2.state, my_dy, held);
    const auto want = tensors_of(fresh), got = tensors_of(held);
    for (std::size_t i = 0; i < want.size(); ++i) failed += !same_bits(*got[i], *want[i]);
    failed += held.router.data() != kept[0] || held.gate_up.data() != kept[1] || held.down.data() != kept[2];

    mp::MoEGradients odd;  // wrong shapes: replaced
    odd.router = mp::Tensor<float>({1, 3});
    odd.gate_up = mp::Tensor<float>({2, 2});
    auto f3 = block.forward(comm, rows);
    block.backward(comm, f3.state, my_dy, odd);
    const auto replaced = tensors_of(odd);
    for (std::size_t i = 0; i < want.size(); ++i) failed += !same_bits(*replaced[i], *want[i]);
  });
  for (int f : failures) CHECK(f == 0);
}

}  // namespace

TEST_CASE("backward into kept gradients: their memory is kept, what they held is never read", "[moe][backward]") {
  for (Sizes s : {Sizes{1, 1, 1}, Sizes{2, 2, 1}}) {
    reused_gradients_are_fresh_ones<mp::models::TinyQwen3Moe, mp::plans::qwen3_moe::ep<>>(s);
    reused_gradients_are_fresh_ones<mp::models::TinyMixtral, mp::plans::mixtral::ep<>>(s);
    reused_gradients_are_fresh_ones<mp::models::TinyDeepSeekV3, mp::plans::deepseek_v3::ep<>>(s);
  }
  reused_gradients_are_fresh_ones<mp::models::TinyDeepSeekV3, mp::plans::deepseek_v3::ep_sp<>>({2, 2, 2});
  reused_gradients_are_fresh_ones<mp::models::TinyQwen3Moe, mp::plans::qwen3_moe::etp<>>({1, 2, 2});
}

// ---- Bad input ------------------------------------------------------------------------------

namespace {
using Model = mp::models::TinyQwen3Moe;
using Plan = mp::plans::qwen3_moe::ep<>;
using Block = mp::MoEBlock<Model, Mesh, Plan>;

/// Runs body(comm, block, state) on every rank of ep=2 after a forward of 6 tokens per
/// rank; every rank must throw the same rule.
template <class Body>
void every_rank_refuses(const char* rule, Body&& body, mp::Training training = mp::Training::keep_activations) {
  auto [w, x] = make_case<float>(Model::spec, RoutingKind::uniform, 6, 5);
  const Mesh mesh{1, 2, 1};
  mp::ThreadWorld world(2);
  std::vector<std::string> errors(2);
  world.run([&](mp::ThreadComm& comm) {
    Block block(mesh, comm.rank(), w);
    block.set_training(training);
    auto f = block.forward(comm, x);
    try {
      body(comm, block, f.state);
    } catch (const mp::RuleViolation& e) {
      errors[static_cast<std::size_t>(comm.rank())] = e.what();
    }
  });
  // The rank with the bad input names the rule; the others stop too, saying a peer did.
  int named = 0;
  for (const std::string& e : errors) {
    CHECK_THAT(e, Catch::Contains(std::string("[") + rule + "]") || Catch::Contains("[peer_input_error]"));
    named += e.find(std::string("[") + rule + "]") != std::string::npos;
  }
  CHECK(named >= 1);
}
}  // namespace

TEST_CASE("backward: an output gradient of the wrong shape is refused on every rank", "[moe][backward][bad-input]") {
  every_rank_refuses("shape_matches", [](mp::ThreadComm& comm, Block& block, Block::State& state) {
    // Only rank 1 is wrong: rank 0 must refuse too, not wait for it.
    const index_t rows = comm.rank() == 1 ? 5 : 6;
    block.backward(comm, state, mp::Tensor<float>({rows, Model::spec.hidden_size}));
  });
}

TEST_CASE("backward: a NaN in the output gradient is refused on every rank", "[moe][backward][bad-input]") {
  every_rank_refuses("finite_values", [](mp::ThreadComm& comm, Block& block, Block::State& state) {
    mp::Tensor<float> dy({6, Model::spec.hidden_size});
    if (comm.rank() == 0) dy[7] = std::nanf("");
    block.backward(comm, state, dy);
  });
}

TEST_CASE("backward: a state used twice, from another block, or from an inference forward is refused",
          "[moe][backward][bad-input]") {
  const mp::Tensor<float> dy({6, Model::spec.hidden_size});
  every_rank_refuses("backward_state", [&](mp::ThreadComm& comm, Block& block, Block::State& state) {
    block.backward(comm, state, dy);
    block.backward(comm, state, dy);
  });
  every_rank_refuses(
      "backward_state",
      [&](mp::ThreadComm& comm, Block& block, Block::State& state) { block.backward(comm, state, dy); },
      mp::Training::off);
  every_rank_refuses("backward_state", [&](mp::ThreadComm& comm, Block&, Block::State& state) {
    auto [w, x] = make_case<float>(Model::spec, RoutingKind::uniform, 6, 5);
    Block other(Mesh{1, 2, 1}, comm.rank(), w);
    other.backward(comm, state, dy);
  });
  every_rank_refuses("backward_state", [&](mp::ThreadComm& comm, Block& block, Block::State& state) {
    block.sgd_step(block.backward(comm, state, dy), 0.1f);
    auto again = block.forward(comm, mp::Tensor<float>({6, Model::spec.hidden_size}));
    block.backward(comm, state, dy);  // the old state, after the weights changed
  });
}

// ---- Bytes ----------------------------------------------------------------------------------

namespace {
/// The backward's measured bytes against the cost model, per rank, for one MoE layer.
template <class Model, class Plan>
void bytes_match(Sizes sizes, index_t tokens) {
  INFO("mesh " << sizes.text());
  constexpr mp::ModelSpec model = Model::spec;
  const Mesh mesh{sizes.dp, sizes.ep, sizes.tp};
  const mp::MeshSpec spec(mesh);
  auto [w, x] = make_case<float>(model, RoutingKind::uniform, tokens, 11);
  const mp::Tensor<float> dy = random_grad_output(tokens, model.hidden_size, 12);
  const mp::MoEGradients ref = mp::reference_moe_backward(model, w, x, dy);
  const BackwardRun run =
      run_backward<mp::MoEBlock<Model, Mesh, Plan>>(model, mesh, Plan::entries, w, x, dy, ref, mp::Training::keep_activations);
  // The cost model's tokens: those of one tensor-parallel group (dp and ep split the batch).
  const mp::CostReport cost =
      mp::cost_model(model, spec, Plan::entries, {mp::DType::f32, tokens / (sizes.dp * sizes.ep), 0});
  double activations = 0, all_to_all = 0, gradients = 0;
  for (const auto& c : cost.sections[2].backward)
    if (c.where.starts_with("layers.*.mlp")) (c.collective == mp::Collective::all_to_all ? all_to_all : activations) += c.sent_bytes;
  for (const auto& g : cost.grad_sync)
    if (g.param.starts_with("layers.*.mlp.gate.") || g.param.starts_with("layers.*.mlp.experts.") ||
        g.param.starts_with("layers.*.mlp.shared_experts."))
      gradients += g.sent_bytes / static_cast<double>(g.layers);
  double measured_gradients = 0;
  for (const mp::CommStats& s : run.stats) {
    double act = 0, a2a = 0;
    for (const auto& [label, e] : s.by_label) {
      if (label == "agreement") continue;  // the bad-input check's few bytes: not the cost model's
      if (label.ends_with("gradient") || label.ends_with("gradients")) measured_gradients += e.bytes;
      else if (label.starts_with("combine") || label.starts_with("dispatch")) a2a += e.bytes;
      else act += e.bytes;
    }
    CHECK(act == Approx(activations));
    // The all-to-alls move the forward's rows back (routing-dependent; the cost model
    // assumes uniform routing): checked against the forward in moe_block_test's terms, here
    // only that they are there when the plan has EP over more than one rank.
    CHECK((a2a > 0) == (all_to_all > 0));
  }
  CHECK(measured_gradients / static_cast<double>(spec.size()) == Approx(gradients));
}

template <class Model>
void family_bytes() {
  mp::plans::family_plans_t<Model::spec.family>::for_each([&]<class Plan>(std::string_view plan_name) {
    INFO("plan " << plan_name);
    for (Sizes s : {Sizes{2, 1, 2}, Sizes{1, 2, 2}, Sizes{2, 2, 2}, Sizes{2, 4, 1}, Sizes{1, 1, 4}}) {
      const bool uses_ep = mp::plan_rules::plan_uses_axis(Plan::entries, "ep");
      const bool uses_tp = mp::plan_rules::plan_uses_axis(Plan::entries, "tp");
      if ((s.ep > 1 && !uses_ep) || (s.tp > 1 && !uses_tp)) continue;
      if (!mp::check_plan(Model::spec, mp::MeshSpecView(mp::MeshSpec(Mesh{s.dp, s.ep, s.tp})).view(), Plan::entries).ok())
        continue;
      bytes_match<Model, Plan>(s, 64);
    }
  });
}
}  // namespace

TEST_CASE("backward bytes: every plan's collectives send what the cost model says", "[moe][backward][cost]") {
  SECTION("Qwen3-MoE") { family_bytes<mp::models::TinyQwen3Moe>(); }
  SECTION("Mixtral") { family_bytes<mp::models::TinyMixtral>(); }
  SECTION("DeepSeek-V3") { family_bytes<mp::models::TinyDeepSeekV3>(); }
}
