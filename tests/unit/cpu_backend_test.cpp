// The CPU backend's fast kernels give the reference's bits: the MoE block of every family,
// forward and backward, on one rank and on EP ranks, with 1, 2 and 3 threads per rank and
// on every instruction set this machine runs, float and bfloat16, odd sizes included
// (hidden and expert widths that are not multiples of the register tile, one token,
// experts with no tokens).
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/model/presets.hpp"
#include "meshplan/moe/batch.hpp"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/moe/reference.hpp"
#include "meshplan/moe/reference_backward.hpp"
#include "meshplan/moe/token_layout.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "../support/moe_backward_run.hpp"
#include "../support/moe_cases.hpp"

namespace mp = meshplan;
using mp::index_t;

namespace {

using Mesh = mp::DeviceMesh<mp::Axis<"ep">>;

/// A config at odd sizes: hidden 40 (one register tile and a part), expert width 17.
mp::ModelSpec odd(mp::ModelSpec m) {
  m.hidden_size = 40;
  m.moe_intermediate_size = 17;
  if (m.n_shared_experts > 0) m.n_shared_experts = 2;
  return m;
}

template <class Plan, class T>
void check(const mp::ModelSpec& model, index_t ep, index_t tokens, int threads, mp::cpu::Isa isa) {
  INFO(mp::to_string(model.family) << ", hidden " << model.hidden_size << ", ep " << ep << ", " << tokens
                                   << " tokens, " << threads << " threads, " << mp::cpu::to_string(isa) << ", "
                                   << (std::is_same_v<T, float> ? "float" : "bfloat16"));
  auto [w, x] = moe_cases::make_case<T>(model, moe_cases::RoutingKind::idle_experts, tokens, 5);
  const mp::Tensor<T> ref = mp::reference_moe_forward(model, w, x);
  const Mesh mesh{ep};
  const mp::LayoutSpec layout = mp::moe_token_layout(model, mp::MeshSpec(mesh), Plan::entries, tokens);
  mp::ThreadWorld world(ep);
  const auto got = mp::run_moe_batch(world, layout, x, [&](index_t rank) {
    return mp::MoEBlock<mp::RuntimeModel, Mesh, Plan, mp::CpuBackend<T>>(model, mesh, rank, w,
                                                                         mp::CpuBackend<T>(threads, isa));
  });
  REQUIRE(got.disagreements() == 0);
  CHECK(moe_cases::compare_whole(got.hidden_states, ref).mismatches == 0);
}

// The backward (activations kept) on the same cases: every gradient the reference's bits.
template <class Plan, class T>
void check_backward(const mp::ModelSpec& model, index_t ep, index_t tokens, int threads, mp::cpu::Isa isa) {
  INFO("backward: " << mp::to_string(model.family) << ", hidden " << model.hidden_size << ", ep " << ep << ", "
                    << tokens << " tokens, " << threads << " threads, " << mp::cpu::to_string(isa) << ", "
                    << (std::is_same_v<T, float> ? "float" : "bfloat16"));
  auto [w, x] = moe_cases::make_case<T>(model, moe_cases::RoutingKind::idle_experts, tokens, 5);
  const mp::Tensor<float> dy = moe_cases::random_grad_output(tokens, model.hidden_size, 6);
  const mp::MoEGradients ref = mp::reference_moe_backward(model, w, x, dy);
  const Mesh mesh{ep};
  const auto run = moe_cases::run_backward_of(
      [&](index_t rank) {
        return mp::MoEBlock<mp::RuntimeModel, Mesh, Plan, mp::CpuBackend<T>>(model, mesh, rank, w,
                                                                             mp::CpuBackend<T>(threads, isa));
      },
      model, mesh, Plan::entries, w, x, dy, ref, mp::Training::keep_activations);
  REQUIRE(run.input.shapes_ok);
  REQUIRE(run.params.shapes_ok);
  CHECK(run.input.mismatches == 0);
  CHECK(run.params.mismatches == 0);
}

template <class Plan>
void sweep(const mp::ModelSpec& model) {
  for (mp::cpu::Isa isa : mp::cpu::runnable_isas())
    for (int threads : {1, 2, 3})
      for (index_t ep : {1, 2})
        for (index_t tokens : {1, 7, 70}) {
          check<Plan, float>(model, ep, tokens, threads, isa);
          check<Plan, mp::bfloat16>(model, ep, tokens, threads, isa);
          check_backward<Plan, float>(model, ep, tokens, threads, isa);
          check_backward<Plan, mp::bfloat16>(model, ep, tokens, threads, isa);
        }
}

}  // namespace

TEST_CASE("cpu backend: the block's bits on every isa and thread count, Qwen3-MoE", "[cpu][moe]") {
  sweep<mp::plans::qwen3_moe::ep<"ep">>(mp::models::TinyQwen3Moe::spec);
  sweep<mp::plans::qwen3_moe::ep<"ep">>(odd(mp::models::TinyQwen3Moe::spec));
}

TEST_CASE("cpu backend: the block's bits on every isa and thread count, Mixtral", "[cpu][moe]") {
  sweep<mp::plans::mixtral::ep<"ep">>(odd(mp::models::TinyMixtral::spec));
}

TEST_CASE("cpu backend: the block's bits on every isa and thread count, DeepSeek-V3 with shared experts",
          "[cpu][moe]") {
  sweep<mp::plans::deepseek_v3::ep<"ep">>(mp::models::TinyDeepSeekV3::spec);
  sweep<mp::plans::deepseek_v3::ep<"ep">>(odd(mp::models::TinyDeepSeekV3::spec));
}
