// The MoE block on the GPU (cuda::CudaBackend), ranks on one GPU through CudaLocalComm.
//
// For tiny Qwen3-MoE, Mixtral and DeepSeek-V3 configs, four routings, token counts 0, 1, 7,
// 33 and 300, float and bfloat16:
//   - one rank on the GPU against the CPU reference, within a tolerance: cuBLAS sums each
//     dot product in its own order and the GPU's expf is not glibc's exp. fp32: each output
//     is a few dot products of at most 64 terms, reassociated; a reassociated fp32 sum of
//     n terms is within about n * 6e-8 of the sum of magnitudes, which here stays within a
//     few times the output's largest magnitude: 1e-4 of it. bfloat16: a value stored in
//     bf16 on one side may round the other way on the other (2^-8 relative), and that
//     happens to the activation and to each expert's output row: 2^-6 = 1.6e-2 of the
//     largest magnitude covers four such roundings, as in the CPU split-sum tests.
//   - many ranks against one rank, both on the GPU: bit for bit where the plan only moves
//     data (ep on 2, 4 and 8 ranks and with a data-parallel axis, ep_tp, ep_sp), since a
//     row's result does not depend on where it is computed (bf16: the fused kernels sum
//     each output in one fixed order; fp32: CublasExperts gives every GEMM one shape);
//     within the CPU split-sum tolerance where the plan splits a sum
//     (etp, tp, tp_sp).
// Bad input (a NaN in the hidden states) is refused on every rank with the CPU's rule.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <mutex>
#include <string>
#include <vector>

#include "../support/moe_cases.hpp"
#include "cuda_support.hpp"
#include "meshplan/cuda/comm/cuda_local_comm.cuh"
#include "meshplan/cuda/moe/cuda_backend.cuh"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/model/presets.hpp"
#include "meshplan/moe/reference.hpp"
#include "meshplan/moe/token_layout.hpp"
#include "meshplan/plan/builtin/registry.hpp"

namespace mp = meshplan;
using mp::index_t;
using namespace moe_cases;

namespace {

using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep">, mp::Axis<"tp">>;
enum class Expect { exact, close };

template <class T>
constexpr double gpu_vs_cpu_rtol() {
  return std::is_same_v<T, float> ? 1e-4 : 1.6e-2;
}

/// Every rank's output of the block on a mesh, on one GPU.
template <class Model, class Plan, class T>
std::vector<mp::Tensor<T>> run_gpu(Sizes sizes, const mp::MoEWeights<T>& w, const mp::Tensor<T>& x,
                                   const mp::LayoutSpec& tokens, std::vector<index_t>* expert_rows = nullptr) {
  Mesh mesh{sizes.dp, sizes.ep, sizes.tp};
  std::vector<mp::Tensor<T>> outs(static_cast<std::size_t>(sizes.world()));
  if (expert_rows) expert_rows->assign(static_cast<std::size_t>(Model::spec.num_experts), 0);
  mp::cuda::CudaLocalWorld world(sizes.world());
  std::mutex m;
  world.run([&](mp::cuda::CudaLocalComm& comm) {
    using Block = mp::MoEBlock<Model, Mesh, Plan, mp::cuda::CudaBackend<T>>;
    Block block(mesh, comm.rank(), w);
    const auto mine = mp::cuda::to_device(rows_of(x, tokens, comm.rank()), comm.stream());
    const auto y = block.forward(comm, mine);
    outs[static_cast<std::size_t>(comm.rank())] = mp::cuda::to_host(y.hidden_states, comm.stream());
    if (expert_rows) {
      std::lock_guard lock(m);
      for (index_t j = 0; j < block.local_experts(); ++j)
        (*expert_rows)[static_cast<std::size_t>(block.first_local_expert() + j)] =
            y.state.rows_per_local_expert[static_cast<std::size_t>(j)];
    }
  });
  return outs;
}

/// The ranks' outputs put together in token order.
template <class T>
mp::Tensor<T> assemble(const std::vector<mp::Tensor<T>>& outs, const mp::LayoutSpec& tokens, index_t total,
                       index_t hidden) {
  mp::Tensor<T> all({total, hidden});
  for (std::size_t r = 0; r < outs.size(); ++r) {
    index_t row = 0;
    for (const auto& run : tokens.held_indices(0, static_cast<index_t>(r)))
      for (index_t t = run.begin; t < run.begin + run.size; ++t, ++row)
        for (index_t h = 0; h < hidden; ++h) all[t * hidden + h] = outs[r][row * hidden + h];
  }
  return all;
}

template <class Model, class Plan, class T>
void check(Sizes sizes, RoutingKind kind, index_t tokens, Expect expect) {
  INFO("mesh " << sizes.text() << ", " << name(kind) << " routing, " << tokens << " tokens, "
               << (std::is_same_v<T, float> ? "float" : "bfloat16"));
  constexpr mp::ModelSpec model = Model::spec;
  // A batch without DeepSeek-V3 near-ties (cuda_support::near_tie): the GPU then routes
  // every token as the CPU does, and the counts below are exact.
  std::uint64_t seed = 2000 + static_cast<std::uint64_t>(tokens);
  auto batch = make_case<T>(model, kind, tokens, seed);
  while (cuda_support::any_near_tie(model, mp::cpu::router_logits(batch.second, batch.first.router),
                                    batch.first.correction_bias.span()))
    batch = make_case<T>(model, kind, tokens, ++seed);
  const auto& w = batch.first;
  const auto& x = batch.second;
  mp::Routing routing;
  const mp::Tensor<T> ref = mp::reference_moe_forward(model, w, x, &routing);

  // One rank on the GPU against the CPU reference.
  const Sizes one{1, 1, 1};
  const mp::LayoutSpec all_tokens = mp::moe_token_layout(model, mp::MeshSpec(Mesh{1, 1, 1}), Plan::entries, tokens);
  std::vector<index_t> rows_one;
  const auto single = run_gpu<Model, Plan, T>(one, w, x, all_tokens, &rows_one);
  Comparison vs_cpu;
  compare_rows(single[0], ref, all_tokens, 0, vs_cpu);
  REQUIRE(vs_cpu.shape_ok);
  CHECK(vs_cpu.max_diff <= gpu_vs_cpu_rtol<T>() * std::max(vs_cpu.max_ref, 1e-30));
  // The counts the pipeline copied back are the CPU routing's.
  std::vector<index_t> cpu_rows(static_cast<std::size_t>(model.num_experts), 0);
  for (auto e : routing.experts) ++cpu_rows[static_cast<std::size_t>(e)];
  CHECK(rows_one == cpu_rows);
  if (sizes.world() == 1) return;

  // Many ranks against one.
  Mesh mesh{sizes.dp, sizes.ep, sizes.tp};
  const mp::MeshSpec spec(mesh);
  const mp::LayoutSpec layout = mp::moe_token_layout(model, spec, Plan::entries, tokens);
  const auto outs = run_gpu<Model, Plan, T>(sizes, w, x, layout);
  Comparison vs_one;
  for (index_t r = 0; r < spec.size(); ++r)
    compare_rows(outs[static_cast<std::size_t>(r)], single[0], layout, r, vs_one);
  REQUIRE(vs_one.shape_ok);
  if (expect == Expect::exact)
    CHECK(vs_one.mismatches == 0);
  else
    CHECK(vs_one.max_diff <= split_sum_rtol<T>() * std::max(vs_one.max_ref, 1e-30));
}

template <class Model, class Plan, class T>
void sweep(Sizes sizes, Expect expect) {
  for (RoutingKind kind : all_routings)
    for (index_t tokens : {0, 1, 7, 33, 300}) check<Model, Plan, T>(sizes, kind, tokens, expect);
}

template <class Model, class EP, class EPTP, class EPSP, class ETP, class TP, class TPSP, class T>
void family_sweep() {
  SECTION("ep: bit for bit with one rank, on 2, 4 and 8 ranks and with a data-parallel axis") {
    for (index_t ep : {1, 2, 4, 8}) sweep<Model, EP, T>({1, ep, 1}, Expect::exact);
    sweep<Model, EP, T>({2, 2, 1}, Expect::exact);
  }
  SECTION("ep x tp, with tokens split over tp or sequence parallel: bit for bit with one rank") {
    sweep<Model, EPTP, T>({1, 2, 2}, Expect::exact);
    sweep<Model, EPSP, T>({1, 2, 2}, Expect::exact);
  }
  SECTION("expert and plain tensor parallelism: within the split-sum tolerance") {
    sweep<Model, ETP, T>({1, 2, 2}, Expect::close);
    sweep<Model, TP, T>({1, 1, 2}, Expect::close);
    sweep<Model, TPSP, T>({1, 1, 2}, Expect::close);
  }
}

}  // namespace

TEMPLATE_TEST_CASE("Qwen3-MoE block on the GPU: the CPU reference, and the same bits on many ranks", "[moe]", float,
                   mp::bfloat16) {
  namespace p = mp::plans::qwen3_moe;
  family_sweep<mp::models::TinyQwen3Moe, p::ep<"ep">, p::ep_tp<"ep", "tp">, p::ep_sp<"ep", "tp">, p::etp<"ep", "tp">,
               p::tp<"tp">, p::tp_sp<"tp">, TestType>();
}

TEMPLATE_TEST_CASE("Mixtral block on the GPU: the CPU reference, and the same bits on many ranks", "[moe]", float,
                   mp::bfloat16) {
  namespace p = mp::plans::mixtral;
  family_sweep<mp::models::TinyMixtral, p::ep<"ep">, p::ep_tp<"ep", "tp">, p::ep_sp<"ep", "tp">, p::etp<"ep", "tp">,
               p::tp<"tp">, p::tp_sp<"tp">, TestType>();
}

TEMPLATE_TEST_CASE("DeepSeek-V3 block on the GPU: the CPU reference, and the same bits on many ranks", "[moe]", float,
                   mp::bfloat16) {
  namespace p = mp::plans::deepseek_v3;
  family_sweep<mp::models::TinyDeepSeekV3, p::ep<"ep">, p::ep_tp<"ep", "tp">, p::ep_sp<"ep", "tp">, p::etp<"ep", "tp">,
               p::tp<"tp">, p::tp_sp<"tp">, TestType>();
}

TEST_CASE("The GPU block refuses a NaN in the hidden states on every rank", "[moe]") {
  using Model = mp::models::TinyQwen3Moe;
  using Plan = mp::plans::qwen3_moe::ep<"ep">;
  auto batch = make_case<float>(Model::spec, RoutingKind::uniform, 8, 5);
  const auto& w = batch.first;
  auto& x = batch.second;
  x[5 * Model::spec.hidden_size + 3] = std::numeric_limits<float>::quiet_NaN();  // token 5: on rank 1 of 2
  Mesh mesh{1, 2, 1};
  const auto layout = mp::moe_token_layout(Model::spec, mp::MeshSpec(mesh), Plan::entries, 8);
  mp::cuda::CudaLocalWorld world(2);
  std::vector<std::string> errors(2);
  CHECK_THROWS_WITH(world.run([&](mp::cuda::CudaLocalComm& comm) {
    mp::MoEBlock<Model, Mesh, Plan, mp::cuda::CudaBackend<float>> block(mesh, comm.rank(), w);
    const auto mine = mp::cuda::to_device(rows_of(x, layout, comm.rank()), comm.stream());
    try {
      (void)block.forward(comm, mine);
    } catch (const mp::RuleViolation& e) {
      errors[static_cast<std::size_t>(comm.rank())] = std::string(e.rule());
      throw;
    }
  }),
                    Catch::Contains("[router_logits_finite]") && Catch::Contains("token 1 for expert 0"));
  CHECK(errors == std::vector<std::string>{"peer_input_error", "router_logits_finite"});
}
