// Run under mpirun with 4 processes (ctest: mpi.4_ranks). MpiComm's collectives on the
// groups of a mesh, its refusals on every rank, and the MoE block over real processes
// against the single-rank reference, as the ThreadComm tests do. Every process checks its
// own part; the failures are summed over all ranks and the exit status says whether any
// failed. (No test framework: a framework aborting a test on one rank would leave the others
// waiting in a collective.)
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "meshplan/comm/agree.hpp"
#include "meshplan/comm/mpi_comm.hpp"
#include "meshplan/model/presets.hpp"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/moe/reference.hpp"
#include "meshplan/moe/token_layout.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "../support/moe_cases.hpp"
#include "../support/rank_checks.hpp"

namespace mp = meshplan;
using mp::index_t;
using namespace moe_cases;
using namespace rank_checks;

namespace {

void collectives(mp::MpiComm& comm) {
  const auto mesh = mp::MeshSpec::parse("ep=2,tp=2");
  for (std::string_view axis : {"ep", "tp"}) {
    const mp::Group g = mesh.group(comm.rank(), {axis});
    const index_t n = g.size();
    std::vector<float> mine = {static_cast<float>(comm.rank()), 0.5f}, all(4);
    comm.all_gather(std::span<const float>(mine), std::span<float>(all), g);
    for (index_t m = 0; m < n; ++m) expect(all[2 * m] == static_cast<float>(g.members[m]), "all_gather");
    std::vector<float> sum = mine;
    comm.all_reduce(std::span<float>(sum), g);
    expect(sum[0] == static_cast<float>(g.members[0] + g.members[1]) && sum[1] == 1.0f, "all_reduce");
    std::vector<index_t> sc = {g.rank + 1, g.rank + 2}, rc = {1 + g.rank, 2 + g.rank};
    std::vector<index_t> send, recv(static_cast<std::size_t>(rc[0] + rc[1]));
    for (index_t q = 0; q < 2; ++q)
      for (index_t i = 0; i < sc[q]; ++i) send.push_back(comm.rank() * 100 + q * 10 + i);
    comm.all_to_all_v(std::span<const index_t>(send), sc, std::span<index_t>(recv), rc, g);
    std::size_t at = 0;
    for (index_t s = 0; s < 2; ++s)
      for (index_t i = 0; i < rc[s]; ++i) expect(recv[at++] == g.members[s] * 100 + g.rank * 10 + i, "all_to_all_v");
    std::vector<float> scatter = {1, 2, 3, 4}, part(2);
    comm.reduce_scatter(std::span<const float>(scatter), std::span<float>(part), g);
    expect(part[0] == 2 * scatter[2 * g.rank] && part[1] == 2 * scatter[2 * g.rank + 1], "reduce_scatter");
  }
  // The same order-dependent float sum as ThreadComm gives.
  const float v[] = {1e8f, 1.0f, -1e8f, 1.0f};
  std::vector<float> x = {v[comm.rank()]};
  comm.all_reduce(std::span<float>(x), comm.world_group());
  expect(x[0] == ((v[0] + v[1]) + v[2]) + v[3], "all_reduce in group order");
  // Refusals reach every rank: no rank is left waiting.
  std::vector<float> odd(comm.rank() == 1 ? 3 : 2);
  expect_throws([&] { comm.all_reduce(std::span<float>(odd), comm.world_group()); }, "collective_sizes",
                "size mismatch");
  // The checks the other communicators make, with the same rules (collective_checks.hpp).
  expect_throws(
      [&] {
        if (comm.rank() == 1) {
          std::vector<index_t> wide(2);
          comm.all_reduce(std::span<index_t>(wide), comm.world_group());
        } else {
          std::vector<float> narrow(2);
          comm.all_reduce(std::span<float>(narrow), comm.world_group());
        }
      },
      "collective_types", "element type mismatch");
  expect_throws(
      [&] {
        std::vector<float> send(comm.rank() == 2 ? 3 : 2), recv(8);
        const std::vector<index_t> counts(4, 2);
        comm.all_gather_v(std::span<const float>(send), std::span<float>(recv), counts, comm.world_group());
      },
      "collective_sizes", "all_gather_v send against its count");
  expect_throws(
      [&] {
        // Rank 0 sends 2 to rank 1, which expects 1: only rank 1 sees it; all refuse.
        const std::vector<index_t> sc = {1, comm.rank() == 0 ? 2 : 1, 1, 1}, rc(4, 1);
        std::vector<float> send(static_cast<std::size_t>(sc[0] + sc[1] + sc[2] + sc[3])), recv(4);
        comm.all_to_all_v(std::span<const float>(send), sc, std::span<float>(recv), rc, comm.world_group());
      },
      "collective_sizes", "all_to_all_v count against the receiver's");
  expect_throws(
      [&] {
        std::vector<float> data(2);
        comm.broadcast(std::span<float>(data), comm.rank() == 3 ? 4 : 0, comm.world_group());
      },
      "collective_root", "broadcast root outside the group");
  expect_throws(
      [&] {
        mp::Message problem;
        if (comm.rank() == 3) problem = mp::Message::rule("batch_shape") << "rank 3's input is bad";
        mp::agree(comm, problem, comm.world_group());
      },
      "batch_shape", "agreement");
}

using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep">, mp::Axis<"tp">>;

template <class Model, class Plan, class T>
void moe(mp::MpiComm& comm, Sizes sizes, bool exact, const char* what) {
  constexpr mp::ModelSpec model = Model::spec;
  for (RoutingKind kind : all_routings)
    for (index_t tokens : {0, 1, 8, 33}) {
      auto [w, x] = make_case<T>(model, kind, tokens, 77 + static_cast<std::uint64_t>(tokens));
      const mp::Tensor<T> ref = mp::reference_moe_forward(model, w, x);
      Mesh mesh{sizes.dp, sizes.ep, sizes.tp};
      const mp::MeshSpec spec(mesh);
      const mp::LayoutSpec token_layout = mp::moe_token_layout(model, spec, Plan::entries, tokens);
      mp::MoEBlock<Model, Mesh, Plan, mp::CpuBackend<T>> block(mesh, comm.rank(), w);
      const std::string label = std::string(what) + " on " + sizes.text() + ", " + name(kind) + ", " +
                                std::to_string(tokens) + " tokens";
      try {
        const mp::Tensor<T> out = block.forward(comm, rows_of(x, token_layout, comm.rank())).hidden_states;
        Comparison c;
        compare_rows(out, ref, token_layout, comm.rank(), c);
        expect(c.shape_ok, label + ": shape");
        if (exact) expect(c.mismatches == 0, label + ": " + std::to_string(c.mismatches) + " elements differ");
        else expect(c.max_diff <= split_sum_rtol<T>() * std::max(c.max_ref, 1e-30), label + ": beyond tolerance");
      } catch (const mp::RuleViolation& e) {
        // Only uneven sequence-parallel shards may be refused.
        expect(e.rule() == "sequence_divisible" || e.rule() == "peer_input_error",
               label + ": " + e.what());
      }
    }
}

template <class T>
void moe_all(mp::MpiComm& comm) {
  namespace q = mp::plans::qwen3_moe;
  namespace d = mp::plans::deepseek_v3;
  namespace x = mp::plans::mixtral;
  moe<mp::models::TinyQwen3Moe, q::ep<>, T>(comm, {1, 4, 1}, true, "qwen3-moe ep");
  moe<mp::models::TinyQwen3Moe, q::ep<>, T>(comm, {2, 2, 1}, true, "qwen3-moe ep with dp");
  moe<mp::models::TinyQwen3Moe, q::ep_sp<>, T>(comm, {1, 2, 2}, true, "qwen3-moe ep_sp");
  moe<mp::models::TinyQwen3Moe, q::etp<>, T>(comm, {1, 2, 2}, false, "qwen3-moe etp");
  moe<mp::models::TinyMixtral, x::ep_tp<>, T>(comm, {1, 2, 2}, true, "mixtral ep_tp");
  moe<mp::models::TinyMixtral, x::tp_sp<>, T>(comm, {1, 1, 4}, false, "mixtral tp_sp");
  moe<mp::models::TinyDeepSeekV3, d::ep<>, T>(comm, {1, 4, 1}, true, "deepseek-v3 ep");
  moe<mp::models::TinyDeepSeekV3, d::tp<>, T>(comm, {1, 1, 4}, false, "deepseek-v3 tp");
}

}  // namespace

int main(int argc, char** argv) {
  mp::MpiSession session(argc, argv);
  mp::MpiComm comm;
  rank = static_cast<int>(comm.rank());
  if (comm.size() != 4) {
    if (rank == 0) std::fprintf(stderr, "run with 4 processes (mpirun -np 4)\n");
    return 2;
  }
  collectives(comm);
  moe_all<float>(comm);
  moe_all<mp::bfloat16>(comm);

  std::vector<index_t> total = {failures};
  comm.all_reduce(std::span<index_t>(total), comm.world_group());
  if (rank == 0) std::printf("MPI tests on 4 ranks: %lld failure(s)\n", static_cast<long long>(total[0]));
  return total[0] == 0 ? 0 : 1;
}
