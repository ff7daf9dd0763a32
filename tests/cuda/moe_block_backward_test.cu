// The MoE block's backward on the GPU (cuda::CudaBackend), ranks on one GPU through
// CudaLocalComm.
//
// The weight-gradient chain kernel (backward_kernels.cuh's accumulate_outer) against a host
// chain of std::fma over the rows in order, from the value the gradient held: bit for bit
// (float and bfloat16 rows, read in place or through a permutation, sizes off the tile,
// n = 0, and -0 in the initial values).
//
// The block, for tiny Qwen3-MoE, Mixtral and DeepSeek-V3 (shared experts) configs, four
// routings, 0, 1, 7 and 33 tokens, float and bfloat16, activations kept (and recomputed on
// one case per mesh):
//   - one rank on the GPU against the CPU reference backward (moe/reference_backward.hpp),
//     every gradient within a tolerance of its largest magnitude. fp32: 2e-4 (the forward's
//     1e-4, doubled: the gradients are sums over up to 33 tokens of products of values that
//     each carry the forward's reassociation, and the router's scores go through the GPU's
//     expf). bfloat16: 1.6e-2, the forward's: the activation and each expert row are
//     stored in bf16 on both sides and may round the other way (2^-8 relative), which moves
//     <y, dy> and the down projection's gradient by a few such roundings.
//   - many ranks against one rank, both on the GPU: bit for bit where the plan only moves
//     data (ep on 2 and 4 ranks and with a data-parallel axis, ep_tp, ep_sp): a row's
//     input-gradient products run at one shape (fixed-size cuBLAS chunks), the small
//     kernels are per row, and each weight gradient is one chain in token order (ordered
//     sums over ranks); within the CPU split-sum tolerance where the plan splits a sum
//     (etp, tp, tp_sp).
// Bad input: a NaN in the output gradient is refused on every rank.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "../support/moe_backward_run.hpp"
#include "../support/moe_cases.hpp"
#include "cuda_support.hpp"
#include "meshplan/cuda/comm/cuda_local_comm.cuh"
#include "meshplan/cuda/moe/detail/backward_kernels.cuh"
#include "meshplan/cuda/moe/cuda_backend.cuh"
#include "meshplan/model/presets.hpp"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/moe/reference_backward.hpp"
#include "meshplan/moe/token_layout.hpp"
#include "meshplan/plan/builtin/registry.hpp"

namespace mp = meshplan;
using mp::index_t;
using namespace moe_cases;

namespace {

// ---- The weight-gradient chain kernel -------------------------------------------------------

/// c [p, q] += g^T x on the GPU, against the host chain; `permuted`: x's rows read through
/// a permutation of (token, slot) pairs with 2 slots per token.
template <class T>
void check_chain(index_t n, index_t p, index_t q, bool permuted, std::uint32_t seed, bool fresh) {
  INFO("n " << n << ", p " << p << ", q " << q << (permuted ? ", permuted" : "") << (fresh ? ", fresh" : "") << ", "
            << (std::is_same_v<T, float> ? "float" : "bfloat16"));
  using D = mp::cuda::device_type_t<T>;
  constexpr index_t slots = 2;
  const index_t x_rows = permuted ? (n + slots - 1) / slots : n, ldx = q + 3, ldg = p + 1;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> g(static_cast<std::size_t>(std::max<index_t>(n * ldg, 1)));
  for (auto& v : g) v = normal(rng);
  std::vector<T> x(static_cast<std::size_t>(std::max<index_t>(x_rows * ldx, 1)));
  for (auto& v : x) v = mp::from_float<T>(normal(rng));
  std::vector<std::int32_t> order(static_cast<std::size_t>(std::max<index_t>(n, 1)));
  for (index_t i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i);
  std::shuffle(order.begin(), order.begin() + n, rng);
  std::vector<float> c(static_cast<std::size_t>(std::max<index_t>(p * q, 1)));
  for (std::size_t i = 0; i < c.size(); ++i) c[i] = i % 7 == 3 ? -0.0f : normal(rng);

  std::vector<float> want = c;
  for (index_t i = 0; i < p; ++i)
    for (index_t j = 0; j < q; ++j) {
      float acc = fresh ? 0.0f : want[static_cast<std::size_t>(i * q + j)];
      for (index_t r = 0; r < n; ++r) {
        const index_t row = permuted ? order[static_cast<std::size_t>(r)] / slots : r;
        acc = std::fma(g[static_cast<std::size_t>(r * ldg + i)], mp::to_float(x[static_cast<std::size_t>(row * ldx + j)]),
                       acc);
      }
      want[static_cast<std::size_t>(i * q + j)] = acc;
    }

  auto dg = cuda_support::upload(g);
  auto dx = cuda_support::upload(x);
  auto dorder = cuda_support::upload(order);
  auto dc = cuda_support::upload(c);
  mp::cuda::DeviceOuterTerm<D> term{dg.data(), ldg, mp::cuda::device_cast(dx.data()), ldx, nullptr, 1, n, p, q,
                                    dc.data(), fresh};
  if (permuted) term.index = dorder.data(), term.index_div = static_cast<int>(slots);
  mp::cuda::DeviceBackward::accumulate_outer(term, nullptr);
  MESHPLAN_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  const std::vector<float> got = cuda_support::download(dc);
  CHECK(cuda_support::same_bits(got, want));
}

}  // namespace

TEMPLATE_TEST_CASE("The weight-gradient chain kernel continues each output's fmaf chain (or starts it), bit for bit",
                   "[backward][chain]", float, mp::bfloat16) {
  const std::vector<std::pair<index_t, index_t>> shapes{{1, 1}, {32, 32}, {33, 31}, {64, 70}, {5, 129}};
  std::uint32_t seed = 1;
  // fresh: what c held is not read, every chain starts from +0 (zeros for n = 0).
  for (bool fresh : {false, true})
    for (bool permuted : {false, true})
      for (index_t n : {0, 1, 31, 32, 33, 100})
        for (const auto& [p, q] : shapes) check_chain<TestType>(n, p, q, permuted, seed++, fresh);
}

namespace {

// ---- The block ------------------------------------------------------------------------------

using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep">, mp::Axis<"tp">>;
enum class Expect { exact, close };

template <class T>
constexpr double gpu_vs_cpu_grad_rtol() {
  return std::is_same_v<T, float> ? 2e-4 : 1.6e-2;
}

/// Every rank's gradients (on the host) after a forward with training on and a backward
/// with its rows of dy, every rank on one GPU.
template <class Model, class Plan, class T>
std::vector<mp::MoEGradients> run_gpu_backward(Sizes sizes, const mp::MoEWeights<T>& w, const mp::Tensor<T>& x,
                                               const mp::Tensor<float>& dy, mp::Training training) {
  const Mesh mesh{sizes.dp, sizes.ep, sizes.tp};
  const mp::LayoutSpec layout = mp::moe_token_layout(Model::spec, mp::MeshSpec(mesh), Plan::entries, x.dim(0));
  std::vector<mp::MoEGradients> got(static_cast<std::size_t>(sizes.world()));
  mp::cuda::CudaLocalWorld world(sizes.world());
  world.run([&](mp::cuda::CudaLocalComm& comm) {
    using Block = mp::MoEBlock<Model, Mesh, Plan, mp::cuda::CudaBackend<T>>;
    Block block(mesh, comm.rank(), w);
    block.set_training(training);
    const mp::Tensor<T> x_mine = rows_of(x, layout, comm.rank());
    const mp::Tensor<float> dy_mine = rows_of(dy, layout, comm.rank());
    const auto x_dev = mp::cuda::to_device(x_mine, comm.stream());
    const auto dy_dev = mp::cuda::to_device(dy_mine, comm.stream());
    auto f = block.forward(comm, x_dev);
    (void)f.state.bytes_kept();
    const typename Block::Gradients g = block.backward(comm, f.state, dy_dev);
    got[static_cast<std::size_t>(comm.rank())] = mp::cuda::to_host(g, comm.stream());
  });
  return got;
}

/// How the ranks' gradients compare with `whole` (one rank's gradients for the whole
/// batch), sliced as the plan slices the weights and the tokens.
template <class T>
BackwardRun compare_pieces(const mp::ModelSpec& model, Sizes sizes, std::span<const mp::EntrySpec> plan,
                           const mp::MoEWeights<T>& w, const std::vector<mp::MoEGradients>& got,
                           const mp::MoEGradients& whole, index_t tokens) {
  const mp::MeshSpec spec(Mesh{sizes.dp, sizes.ep, sizes.tp});
  BackwardRun out;
  moe_cases::compare_pieces(out, model, spec, plan, w, got, whole, mp::moe_token_layout(model, spec, plan, tokens));
  return out;
}

template <class Model, class Plan, class T>
void check(Sizes sizes, RoutingKind kind, index_t tokens, Expect expect, mp::Training training) {
  INFO("mesh " << sizes.text() << ", " << name(kind) << " routing, " << tokens << " tokens, "
               << (std::is_same_v<T, float> ? "float" : "bfloat16")
               << (training == mp::Training::recompute ? ", recomputed" : ""));
  constexpr mp::ModelSpec model = Model::spec;
  const Mesh mesh{sizes.dp, sizes.ep, sizes.tp};
  // A sequence-parallel entry with unequal shards is refused by the forward.
  constexpr mp::MoEBlockPlan bp = mp::moe_block_plan(Plan::entries);
  if (bp.reduce_scatters()) {
    const mp::LayoutSpec layout = mp::moe_token_layout(model, mp::MeshSpec(mesh), Plan::entries, tokens);
    for (index_t r = 1; r < layout.mesh().size(); ++r)
      if (layout.local_extent(0, r) != layout.local_extent(0, 0)) return;
  }
  // A batch without DeepSeek-V3 near-ties (cuda_support::near_tie): the GPU then routes
  // every token as the CPU does.
  std::uint64_t seed = 2000 + static_cast<std::uint64_t>(tokens);
  auto batch = make_case<T>(model, kind, tokens, seed);
  while (cuda_support::any_near_tie(model, mp::cpu::router_logits(batch.second, batch.first.router),
                                    batch.first.correction_bias.span()))
    batch = make_case<T>(model, kind, tokens, ++seed);
  const auto& w = batch.first;
  const auto& x = batch.second;
  const mp::Tensor<float> dy = random_grad_output(tokens, model.hidden_size, 77 + static_cast<std::uint64_t>(tokens));
  const mp::MoEGradients ref = mp::reference_moe_backward(model, w, x, dy);

  // One rank on the GPU against the CPU reference.
  const Sizes one{1, 1, 1};
  const std::vector<mp::MoEGradients> single = run_gpu_backward<Model, Plan, T>(one, w, x, dy, training);
  const BackwardRun vs_cpu = compare_pieces(model, one, Plan::entries, w, single, ref, tokens);
  REQUIRE(vs_cpu.input.shapes_ok);
  REQUIRE(vs_cpu.params.shapes_ok);
  CHECK(vs_cpu.input.worst_relative <= gpu_vs_cpu_grad_rtol<T>());
  CHECK(vs_cpu.params.worst_relative <= gpu_vs_cpu_grad_rtol<T>());
  if (sizes.world() == 1) return;

  // Many ranks against one, both on the GPU.
  const std::vector<mp::MoEGradients> many = run_gpu_backward<Model, Plan, T>(sizes, w, x, dy, training);
  const BackwardRun vs_one = compare_pieces(model, sizes, Plan::entries, w, many, single[0], tokens);
  REQUIRE(vs_one.input.shapes_ok);
  REQUIRE(vs_one.params.shapes_ok);
  if (expect == Expect::exact) {
    CHECK(vs_one.input.mismatches == 0);
    CHECK(vs_one.params.mismatches == 0);
  } else {
    CHECK(vs_one.input.worst_relative <= split_sum_rtol<T>());
    CHECK(vs_one.params.worst_relative <= split_sum_rtol<T>());
  }
}

template <class Model, class Plan, class T>
void sweep(Sizes sizes, Expect expect) {
  for (RoutingKind kind : all_routings)
    for (index_t tokens : {0, 1, 7, 33}) check<Model, Plan, T>(sizes, kind, tokens, expect, mp::Training::keep_activations);
  check<Model, Plan, T>(sizes, RoutingKind::uniform, 7, expect, mp::Training::recompute);
}

template <class Model, class EP, class EPTP, class EPSP, class ETP, class TP, class TPSP, class T>
void family_sweep() {
  SECTION("ep: bit for bit with one rank, on 2 and 4 ranks and with a data-parallel axis") {
    for (index_t ep : {1, 2, 4}) sweep<Model, EP, T>({1, ep, 1}, Expect::exact);
    sweep<Model, EP, T>({2, 2, 1}, Expect::exact);
  }
  SECTION("ep x tp, with tokens split over tp or sequence parallel: bit for bit with one rank") {
    sweep<Model, EPTP, T>({1, 2, 2}, Expect::exact);
    sweep<Model, EPSP, T>({1, 2, 2}, Expect::exact);
    sweep<Model, EPSP, T>({2, 2, 2}, Expect::exact);
  }
  SECTION("expert and plain tensor parallelism: within the split-sum tolerance") {
    sweep<Model, ETP, T>({1, 2, 2}, Expect::close);
    sweep<Model, TP, T>({1, 1, 2}, Expect::close);
    sweep<Model, TPSP, T>({1, 1, 2}, Expect::close);
  }
}

}  // namespace

TEMPLATE_TEST_CASE("Qwen3-MoE backward on the GPU: the CPU reference, and the same bits on many ranks",
                   "[moe][backward]", float, mp::bfloat16) {
  namespace p = mp::plans::qwen3_moe;
  family_sweep<mp::models::TinyQwen3Moe, p::ep<"ep">, p::ep_tp<"ep", "tp">, p::ep_sp<"ep", "tp">, p::etp<"ep", "tp">,
               p::tp<"tp">, p::tp_sp<"tp">, TestType>();
}

TEMPLATE_TEST_CASE("Mixtral backward on the GPU: the CPU reference, and the same bits on many ranks",
                   "[moe][backward]", float, mp::bfloat16) {
  namespace p = mp::plans::mixtral;
  family_sweep<mp::models::TinyMixtral, p::ep<"ep">, p::ep_tp<"ep", "tp">, p::ep_sp<"ep", "tp">, p::etp<"ep", "tp">,
               p::tp<"tp">, p::tp_sp<"tp">, TestType>();
}

TEMPLATE_TEST_CASE("DeepSeek-V3 backward on the GPU (shared experts): the CPU reference, and the same bits on many ranks",
                   "[moe][backward]", float, mp::bfloat16) {
  namespace p = mp::plans::deepseek_v3;
  family_sweep<mp::models::TinyDeepSeekV3, p::ep<"ep">, p::ep_tp<"ep", "tp">, p::ep_sp<"ep", "tp">,
               p::etp<"ep", "tp">, p::tp<"tp">, p::tp_sp<"tp">, TestType>();
}

// A small case of each path (local and exchanged experts, shared experts, kept and
// recomputed activations, bf16 and fp32), quick enough for compute-sanitizer's memcheck
// (scripts/gpu-check.sh runs every GPU test outside [moe] under it).
TEST_CASE("The GPU backward on a few small cases (the sanitizer's)", "[backward]") {
  namespace q = mp::plans::qwen3_moe;
  namespace d = mp::plans::deepseek_v3;
  check<mp::models::TinyQwen3Moe, q::ep<"ep">, float>({1, 2, 1}, RoutingKind::skewed, 7, Expect::exact,
                                                     mp::Training::keep_activations);
  check<mp::models::TinyQwen3Moe, q::ep<"ep">, float>({1, 1, 1}, RoutingKind::uniform, 0, Expect::exact,
                                                     mp::Training::keep_activations);
  check<mp::models::TinyDeepSeekV3, d::ep_sp<"ep", "tp">, mp::bfloat16>({1, 2, 2}, RoutingKind::uniform, 8,
                                                                        Expect::exact, mp::Training::recompute);
  check<mp::models::TinyDeepSeekV3, d::etp<"ep", "tp">, float>({1, 2, 2}, RoutingKind::idle_experts, 5, Expect::close,
                                                               mp::Training::keep_activations);
}

TEST_CASE("The GPU backward refuses a NaN in the output gradient on every rank", "[moe][backward]") {
  using Model = mp::models::TinyQwen3Moe;
  using Plan = mp::plans::qwen3_moe::ep<"ep">;
  auto batch = make_case<float>(Model::spec, RoutingKind::uniform, 8, 5);
  const auto& w = batch.first;
  const auto& x = batch.second;
  mp::Tensor<float> dy = random_grad_output(8, Model::spec.hidden_size, 9);
  dy[5 * Model::spec.hidden_size + 3] = std::numeric_limits<float>::quiet_NaN();  // token 5: on rank 1 of 2
  const Mesh mesh{1, 2, 1};
  const auto layout = mp::moe_token_layout(Model::spec, mp::MeshSpec(mesh), Plan::entries, 8);
  mp::cuda::CudaLocalWorld world(2);
  std::vector<std::string> errors(2);
  CHECK_THROWS_WITH(world.run([&](mp::cuda::CudaLocalComm& comm) {
    mp::MoEBlock<Model, Mesh, Plan, mp::cuda::CudaBackend<float>> block(mesh, comm.rank(), w);
    block.set_training(mp::Training::keep_activations);
    const mp::Tensor<float> x_mine = rows_of(x, layout, comm.rank());
    const mp::Tensor<float> dy_mine = rows_of(dy, layout, comm.rank());
    const auto x_dev = mp::cuda::to_device(x_mine, comm.stream());
    const auto dy_dev = mp::cuda::to_device(dy_mine, comm.stream());
    auto f = block.forward(comm, x_dev);
    try {
      (void)block.backward(comm, f.state, dy_dev);
    } catch (const mp::RuleViolation& e) {
      errors[static_cast<std::size_t>(comm.rank())] = std::string(e.rule());
      throw;
    }
  }),
                    Catch::Contains("[finite_values]"));
  CHECK(errors == std::vector<std::string>{"peer_input_error", "finite_values"});
}
