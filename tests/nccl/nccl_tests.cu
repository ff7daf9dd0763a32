// NcclComm under mpirun (ctest: cuda.nccl, one process: NCCL refuses two ranks on one GPU).
// Every collective gives MpiComm's bits for the same input (with NCCL's own reductions:
// the same values where the order of a sum cannot matter, two ranks or fewer); a size
// mismatch is refused with the rule before NCCL moves anything; an NCCL error names the
// rank and the collective; and the MoE block on NcclComm gives the bits it gives on
// CudaLocalComm. No test framework: see tests/mpi/mpi_tests.cpp for why.
//
// With more processes and GPUs (mpirun -np N, one GPU each) the same program runs the same
// checks across them.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../support/moe_cases.hpp"
#include "../support/rank_checks.hpp"
#include "meshplan/comm/mpi_comm.hpp"
#include "meshplan/cuda/comm/cuda_local_comm.cuh"
#include "meshplan/cuda/comm/device_communicator.cuh"
#include "meshplan/cuda/comm/nccl_comm.cuh"
#include "meshplan/cuda/moe/cuda_backend.cuh"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/model/presets.hpp"
#include "meshplan/moe/token_layout.hpp"
#include "meshplan/plan/builtin/registry.hpp"

namespace mp = meshplan;
using mp::index_t;
using namespace rank_checks;

static_assert(mp::cuda::DeviceCommunicator<mp::cuda::NcclComm>);

namespace {

template <class T>
mp::cuda::DeviceBuffer<T> device(const std::vector<T>& v, cudaStream_t s) {
  mp::cuda::DeviceBuffer<T> d;
  d.upload(std::span<const T>(v), s);
  return d;
}

/// Each collective on NcclComm against the same on MpiComm (host memory), bit for bit.
/// `ordered`: NcclComm's reductions run in group order, as MpiComm's do.
void collectives(mp::cuda::NcclComm& nccl, mp::MpiComm& mpi, bool ordered) {
  const cudaStream_t s = nccl.stream();
  const mp::Group g = nccl.world_group();
  const index_t n = g.size(), me = nccl.rank();
  std::vector<float> data(12);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = 0.25f * static_cast<float>(i) + static_cast<float>(me);

  for (mp::ReduceOp op : {mp::ReduceOp::sum, mp::ReduceOp::max, mp::ReduceOp::avg}) {
    std::vector<float> host = data;
    mpi.all_reduce(std::span<float>(host), g, op);
    auto d = device(data, s);
    nccl.all_reduce(d.span(), g, op);
    if (ordered || n <= 2) expect(d.download(s) == host, "all_reduce " + std::to_string(static_cast<int>(op)));
  }
  {
    std::vector<float> host(12 * static_cast<std::size_t>(n));
    mpi.all_gather(std::span<const float>(data), std::span<float>(host), g);
    auto d = device(data, s);
    mp::cuda::DeviceBuffer<float> all(host.size());
    nccl.all_gather(std::span<const float>(d.span()), all.span(), g);
    expect(all.download(s) == host, "all_gather");
  }
  {
    std::vector<float> host(12 / static_cast<std::size_t>(n > 0 && 12 % n == 0 ? n : 1));
    if (12 % n == 0) {
      mpi.reduce_scatter(std::span<const float>(data), std::span<float>(host), g);
      auto d = device(data, s);
      mp::cuda::DeviceBuffer<float> mine(host.size());
      nccl.reduce_scatter(std::span<const float>(d.span()), mine.span(), g);
      if (ordered || n <= 2) expect(mine.download(s) == host, "reduce_scatter");
    }
  }
  {
    // Member s sends (s + d) % 3 + 1 elements to the member at position d.
    std::vector<index_t> send_counts, recv_counts;
    index_t sent = 0, received = 0;
    for (index_t d = 0; d < n; ++d) sent += send_counts.emplace_back((me + d) % 3 + 1);
    for (index_t src : g.members) received += recv_counts.emplace_back((src + g.rank) % 3 + 1);
    std::vector<float> send(data.begin(), data.begin() + sent), host(static_cast<std::size_t>(received));
    mpi.all_to_all_v(std::span<const float>(send), send_counts, std::span<float>(host), recv_counts, g);
    auto d = device(send, s);
    mp::cuda::DeviceBuffer<float> recv(host.size());
    nccl.all_to_all_v(std::span<const float>(d.span()), send_counts, recv.span(), recv_counts, g);
    expect(recv.download(s) == host, "all_to_all_v");
    // A receive buffer of the wrong size: refused with the rule on every rank.
    mp::cuda::DeviceBuffer<float> short_recv(host.size() - 1);
    try {
      nccl.all_to_all_v(std::span<const float>(d.span()), send_counts, short_recv.span(), recv_counts, g);
      expect(false, "all_to_all_v with a short receive buffer: no exception");
    } catch (const mp::RuleViolation& e) {
      expect(e.rule() == "collective_sizes", "all_to_all_v refusal names " + e.rule());
    }
  }
  {
    auto d = device(data, s);
    nccl.broadcast(d.span(), 0, g);
    std::vector<float> host = data;
    mpi.broadcast(std::span<float>(host), 0, g);
    expect(d.download(s) == host, "broadcast");
  }
}

/// The MoE block (EP over every rank) on NcclComm, against the same on CudaLocalComm.
template <class T>
void moe(mp::cuda::NcclComm& nccl) {
  using Model = mp::models::TinyDeepSeekV3;
  using Plan = mp::plans::deepseek_v3::ep<"ep">;
  using Mesh = mp::DeviceMesh<mp::Axis<"ep">>;
  const index_t P = nccl.size();
  const auto batch = moe_cases::make_case<T>(Model::spec, moe_cases::RoutingKind::skewed, 40, 11);
  const auto& w = batch.first;
  const auto& x = batch.second;
  Mesh mesh{P};
  const auto layout = mp::moe_token_layout(Model::spec, mp::MeshSpec(mesh), Plan::entries, 40);
  using Block = mp::MoEBlock<Model, Mesh, Plan, mp::cuda::CudaBackend<T>>;

  Block block(mesh, nccl.rank(), w);
  const auto mine = mp::cuda::to_device(moe_cases::rows_of(x, layout, nccl.rank()), nccl.stream());
  const mp::Tensor<T> got = mp::cuda::to_host(block.forward(nccl, mine).hidden_states, nccl.stream());

  // The same ranks simulated on this process's GPU.
  std::vector<mp::Tensor<T>> local(static_cast<std::size_t>(P));
  mp::cuda::CudaLocalWorld world(P);
  world.run([&](mp::cuda::CudaLocalComm& comm) {
    Block b(mesh, comm.rank(), w);
    const auto rows = mp::cuda::to_device(moe_cases::rows_of(x, layout, comm.rank()), comm.stream());
    local[static_cast<std::size_t>(comm.rank())] = mp::cuda::to_host(b.forward(comm, rows).hidden_states, comm.stream());
  });
  expect(got == local[static_cast<std::size_t>(nccl.rank())], "MoE block on NcclComm equals CudaLocalComm");
}

}  // namespace

int main(int argc, char** argv) {
  mp::MpiSession session(argc, argv);
  mp::MpiComm mpi;
  rank = static_cast<int>(mpi.rank());
  const std::string error = mp::cuda::NcclError(3, "all_to_all_v", ncclInvalidArgument).what();
  expect(error.find("rank 3") != std::string::npos && error.find("all_to_all_v") != std::string::npos &&
             error.find(ncclGetErrorString(ncclInvalidArgument)) != std::string::npos,
         "NcclError names the rank, the collective and NCCL's error: " + error);
  const int devices = mp::cuda::device_count();
  std::vector<std::int32_t> have = {devices > 0 ? 1 : 0};
  mpi.all_reduce(std::span<std::int32_t>(have), mpi.world_group(), mp::ReduceOp::min);
  if (!have[0]) {
    if (rank == 0 && failures == 0) std::puts("no CUDA device: NcclComm tests skipped");
    return failures == 0 ? 0 : 1;
  }
  try {
    mp::cuda::NcclComm nccl(mpi, rank % devices);
    collectives(nccl, mpi, true);
    moe<float>(nccl);
    moe<mp::bfloat16>(nccl);
    mp::cuda::NcclComm nccl_native(mpi, rank % devices, {.ordered_reductions = false});
    collectives(nccl_native, mpi, false);
  } catch (const std::exception& e) {
    expect(false, std::string("exception: ") + e.what());
  }
  std::vector<index_t> total = {failures};
  mpi.all_reduce(std::span<index_t>(total), mpi.world_group());
  if (rank == 0)
    std::printf("NcclComm tests on %d rank(s): %lld failure(s)\n", static_cast<int>(mpi.size()),
                static_cast<long long>(total[0]));
  return total[0] == 0 ? 0 : 1;
}
