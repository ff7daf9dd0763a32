// NcclComm under mpirun (ctest: cuda.nccl, one process: NCCL refuses two ranks on one GPU).
// Every collective gives MpiComm's bits for the same input (with NCCL's own reductions:
// the same values where the order of a sum cannot matter, two ranks or fewer); a size
// mismatch is refused with the rule before NCCL moves anything; an NCCL error names the
// rank and the collective; and the MoE block on NcclComm gives the bits it gives on
// CudaLocalComm. No test framework: see tests/mpi/mpi_tests.cpp for why.
//
// With more processes and GPUs (mpirun -np N, one GPU each) the same program runs the same
// checks across them.
#include <algorithm>
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
#include "meshplan/model/presets.hpp"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/moe/token_layout.hpp"
#include "meshplan/plan/builtin/registry.hpp"

namespace mp = meshplan;
using mp::index_t;
using namespace rank_checks;

static_assert(mp::cuda::DeviceCommunicator<mp::cuda::NcclComm>);

namespace {

/// The elements rank `me` of `n` sends to position `d` in all_to_all_v: 1 to 3, uneven.
index_t sent_to(index_t me, index_t d) { return (me + d) % 3 + 1; }

/// The length of each rank's test data for `n` ranks: enough for what any rank sends in
/// all_to_all_v (at most 3 to each of n), at least 12, and a multiple of n so that
/// reduce_scatter splits it evenly.
std::size_t data_elements(index_t n) {
  const index_t per_member = std::max<index_t>(3, (12 + n - 1) / n);
  return static_cast<std::size_t>(n * per_member);
}

/// data_elements against the sends it must hold, for every rank count mpirun could give
/// here (one to many processes).
void data_sizing() {
  for (index_t n = 1; n <= 512; ++n) {
    const std::size_t size = data_elements(n);
    bool fits = size >= 12 && size % static_cast<std::size_t>(n) == 0;
    for (index_t me = 0; me < n && fits; ++me) {
      index_t sent = 0;
      for (index_t d = 0; d < n; ++d) sent += sent_to(me, d);
      fits = static_cast<std::size_t>(sent) <= size;
    }
    if (!fits) {
      expect(false, "data_elements(" + std::to_string(n) + ") = " + std::to_string(size) +
                        " does not hold every rank's all_to_all_v send, or is not a multiple of the rank count");
      return;
    }
  }
}

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
  std::vector<float> data(data_elements(n));
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = 0.25f * static_cast<float>(i) + static_cast<float>(me);

  for (mp::ReduceOp op : {mp::ReduceOp::sum, mp::ReduceOp::max, mp::ReduceOp::avg}) {
    std::vector<float> host = data;
    mpi.all_reduce(std::span<float>(host), g, op);
    auto d = device(data, s);
    nccl.all_reduce(d.span(), g, op);
    if (ordered || n <= 2) expect(d.download(s) == host, "all_reduce " + std::to_string(static_cast<int>(op)));
  }
  {
    std::vector<float> host(data.size() * static_cast<std::size_t>(n));
    mpi.all_gather(std::span<const float>(data), std::span<float>(host), g);
    auto d = device(data, s);
    mp::cuda::DeviceBuffer<float> all(host.size());
    nccl.all_gather(std::span<const float>(d.span()), all.span(), g);
    expect(all.download(s) == host, "all_gather");
  }
  {
    std::vector<float> host(data.size() / static_cast<std::size_t>(n));
    mpi.reduce_scatter(std::span<const float>(data), std::span<float>(host), g);
    auto d = device(data, s);
    mp::cuda::DeviceBuffer<float> mine(host.size());
    nccl.reduce_scatter(std::span<const float>(d.span()), mine.span(), g);
    if (ordered || n <= 2) expect(mine.download(s) == host, "reduce_scatter");
  }
  {
    // Member s sends sent_to(s, d) elements to the member at position d.
    std::vector<index_t> send_counts, recv_counts;
    index_t sent = 0, received = 0;
    for (index_t d = 0; d < n; ++d) sent += send_counts.emplace_back(sent_to(me, d));
    for (index_t src : g.members) received += recv_counts.emplace_back(sent_to(src, g.rank));
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
    local[static_cast<std::size_t>(comm.rank())] =
        mp::cuda::to_host(b.forward(comm, rows).hidden_states, comm.stream());
  });
  expect(got == local[static_cast<std::size_t>(nccl.rank())], "MoE block on NcclComm equals CudaLocalComm");
}

/// A collective NCCL refuses (a null receive buffer): NcclError naming the rank and the
/// collective, the communicators aborted, and the next collective refused with the cause.
/// Last: the communicator is unusable afterwards.
void failure(mp::cuda::NcclComm& nccl) {
  const mp::Group g = nccl.world_group();
  auto d = device(std::vector<float>(4, 1.0f), nccl.stream());
  const std::span<float> nowhere(static_cast<float*>(nullptr), 4 * static_cast<std::size_t>(g.size()));
  try {
    nccl.all_gather(std::span<const float>(d.span()), nowhere, g, "bad");
    expect(false, "all_gather into a null buffer: no exception");
  } catch (const mp::cuda::NcclError& e) {
    const std::string what = e.what();
    expect(what.find("rank " + std::to_string(nccl.rank())) != std::string::npos &&
               what.find("all_gather") != std::string::npos,
           "NcclError names the rank and the collective: " + what);
  }
  expect(nccl.aborted(), "an NCCL error aborts the communicators");
  try {
    nccl.broadcast(d.span(), 0, g, "after");
    expect(false, "a collective after the abort: no exception");
  } catch (const mp::cuda::CommFailure& e) {
    expect(std::string(e.what()).find("were aborted after meshplan: NCCL error") != std::string::npos,
           std::string("the refusal after an abort names the cause: ") + e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  mp::MpiSession session(argc, argv);
  mp::MpiComm mpi;
  rank = static_cast<int>(mpi.rank());
  data_sizing();
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
    failure(nccl_native);
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
