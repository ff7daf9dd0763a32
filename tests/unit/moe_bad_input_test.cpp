// Bad input to the MoE block over simulated ranks: a clear exception on every rank alike
// (the cause on the ranks that found it, peer_input_error on the others), never a hang; and
// the checks that keep a simulated mesh within the machine.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <mutex>
#include <string>
#include <vector>

#include "meshplan/comm/host_capacity.hpp"
#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/model/presets.hpp"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/moe/token_layout.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "../support/moe_cases.hpp"

namespace mp = meshplan;
using mp::index_t;

namespace {

using Model = mp::models::TinyQwen3Moe;
using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep">, mp::Axis<"tp">>;

/// What each rank threw, running `Plan` on `sizes` with inputs from `input(rank, x)`.
template <class Plan, class Input>
std::vector<std::string> rank_errors(moe_cases::Sizes sizes, index_t tokens, Input&& input) {
  auto [w, x] = moe_cases::make_case<float>(Model::spec, moe_cases::RoutingKind::uniform, tokens, 7);
  const Mesh mesh{sizes.dp, sizes.ep, sizes.tp};
  const mp::MeshSpec spec(mesh);
  const mp::LayoutSpec layout = mp::moe_token_layout(Model::spec, spec, Plan::entries, tokens);
  std::vector<std::string> errors(static_cast<std::size_t>(spec.size()));
  mp::ThreadWorld world(spec.size());
  world.run([&](mp::ThreadComm& comm) {
    mp::MoEBlock<Model, Mesh, Plan> block(mesh, comm.rank(), w);
    try {
      (void)block.forward(comm, input(comm.rank(), moe_cases::rows_of(x, layout, comm.rank())));
    } catch (const mp::RuleViolation& e) {
      errors[static_cast<std::size_t>(comm.rank())] = e.what();
    }
  });
  return errors;
}

auto as_is = [](index_t, mp::Tensor<float> x) { return x; };

}  // namespace

TEST_CASE("hidden states of another shape are refused in the user's terms, on every rank", "[moe][bad-input]") {
  const auto errors = rank_errors<mp::plans::qwen3_moe::ep<>>({1, 2, 1}, 6, [](index_t rank, mp::Tensor<float> x) {
    // Rank 1 passes [1, T, H], as a transformers user holds hidden states.
    return rank == 1 ? mp::Tensor<float>({1, x.dim(0), x.dim(1)}, std::move(x.vector())) : x;
  });
  CHECK(errors[1] ==
        "meshplan [shape_matches]: the hidden states have shape [1, 3, 64]; the MoE block takes [tokens, 64] "
        "(hidden_size 64), one row per token");
  CHECK_THAT(errors[0], Catch::StartsWith("meshplan [peer_input_error]"));
}

TEST_CASE("a NaN in the hidden states is refused on every rank before any row moves", "[moe][bad-input]") {
  const auto errors = rank_errors<mp::plans::qwen3_moe::ep<>>({1, 4, 1}, 16, [](index_t rank, mp::Tensor<float> x) {
    if (rank == 2) x[5] = std::numeric_limits<float>::quiet_NaN();
    return x;
  });
  for (std::size_t r = 0; r < errors.size(); ++r) {
    INFO("rank " << r);
    if (r == 2) CHECK_THAT(errors[r], Catch::StartsWith("meshplan [router_logits_finite]"));
    else CHECK_THAT(errors[r], Catch::StartsWith("meshplan [peer_input_error]"));
  }
}

TEST_CASE("uneven sequence shards under tp_sp are refused on every rank, saying how far to pad", "[moe][bad-input]") {
  const auto errors = rank_errors<mp::plans::qwen3_moe::tp_sp<>>({1, 1, 2}, 7, as_is);
  for (const auto& e : errors)
    CHECK(e ==
          "meshplan [sequence_divisible]: sequence-parallel shards on mesh axis 'tp' must be equal, but member 0 "
          "holds 4 tokens and member 1 holds 3; pad the 7 tokens of the group to 8, or use a token count divisible "
          "by 2");
}

TEST_CASE("no tokens on any rank is a defined result: an empty output", "[moe][bad-input]") {
  for (auto sizes : {moe_cases::Sizes{1, 4, 1}, moe_cases::Sizes{2, 2, 2}}) {
    const auto errors = rank_errors<mp::plans::qwen3_moe::ep_sp<>>(sizes, 0, as_is);
    for (const auto& e : errors) CHECK(e.empty());
  }
}

TEST_CASE("simulated ranks must fit the machine: ranks and memory", "[comm][bad-input]") {
  const mp::HostCapacity cap = mp::host_capacity();
  CHECK(cap.threads >= 1);
  CHECK(cap.threads <= mp::max_simulated_ranks);
  const mp::HostCapacity small{8, std::uint64_t{1} << 30};
  CHECK(mp::comm_rules::simulated_ranks_fit("ep=8", 8, 1e8, small).ok());
  CHECK(mp::comm_rules::simulated_ranks_fit("dp=60000", 60000, 0, small).view() ==
        "meshplan [simulated_ranks_fit]: mesh dp=60000 has 60000 ranks, but this machine runs at most 8 simulated "
        "ranks (threads of one process); use a smaller mesh, or real processes under mpirun");
  CHECK(mp::comm_rules::simulated_ranks_fit("ep=8", 8, 3.0 * (1 << 30), small).view() ==
        "meshplan [simulated_ranks_fit]: the 8 simulated ranks of mesh ep=8 need about 3.0 GiB for their weights "
        "and activations, but 1.0 GiB of memory is available; use a smaller mesh or fewer tokens, or real processes "
        "under mpirun");
  // Unknown memory (no /proc/meminfo) does not refuse.
  CHECK(mp::comm_rules::simulated_ranks_fit("ep=8", 8, 1e15, {8, 0}).ok());
}
