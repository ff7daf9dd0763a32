// CudaLocalComm against ThreadComm: both are P2PEngine, over device copies and over memcpy.
// Every collective, on groups of every shape (one member, one axis, two axes either way
// round, the world), gives the same bits for the same inputs (the reductions run in group
// order in fp32 on both) and the same CommStats. Mismatched sizes are refused instead of
// hanging, and the world runs again. Stream-owned buffers neither wait for other streams'
// work nor lose the order of a hand-over.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "cuda_support.hpp"
#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/cuda/comm/cuda_local_comm.cuh"
#include "meshplan/cuda/comm/device_communicator.cuh"
#include "meshplan/mesh/mesh_spec.hpp"

namespace mp = meshplan;
using mp::index_t;

namespace {

static_assert(mp::cuda::DeviceCommunicator<mp::cuda::CudaLocalComm>);
static_assert(!mp::cuda::DeviceCommunicator<mp::ThreadComm>);

/// Buffers in host memory, for ThreadComm.
struct HostMemory {
  std::deque<std::vector<unsigned char>> store;
  template <class T>
  std::span<T> make(const std::vector<T>& init) {
    auto& b = store.emplace_back(init.size() * sizeof(T));
    if (!init.empty()) std::memcpy(b.data(), init.data(), b.size());
    return {reinterpret_cast<T*>(b.data()), init.size()};
  }
  template <class T>
  std::vector<T> read(std::span<T> s) {
    return {s.begin(), s.end()};
  }
};

/// Buffers in device memory, for CudaLocalComm (copies on the rank's stream).
struct DeviceMemory {
  cudaStream_t stream;
  std::deque<mp::cuda::DeviceBuffer<unsigned char>> store;
  template <class T>
  std::span<T> make(const std::vector<T>& init) {
    auto& b = store.emplace_back(init.size() * sizeof(T) + 1);
    if (!init.empty())
      MESHPLAN_CUDA_CHECK(
          cudaMemcpyAsync(b.data(), init.data(), init.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
    MESHPLAN_CUDA_CHECK(cudaStreamSynchronize(stream));
    return {reinterpret_cast<T*>(b.data()), init.size()};
  }
  template <class T>
  std::vector<T> read(std::span<T> s) {
    std::vector<T> h(s.size());
    if (!s.empty())
      MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(h.data(), s.data(), s.size_bytes(), cudaMemcpyDeviceToHost, stream));
    MESHPLAN_CUDA_CHECK(cudaStreamSynchronize(stream));
    return h;
  }
};

template <class T>
std::vector<T> values(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<T> v(n);
  for (auto& x : v) {
    if constexpr (std::is_same_v<T, std::int32_t>)
      x = static_cast<std::int32_t>(rng() % 1000) - 500;
    else
      x = mp::from_float<T>(normal(rng));
  }
  return v;
}

/// Runs every collective on `comm` and records each result by name.
template <class T, class Comm, class Memory>
std::map<std::string, std::vector<T>> exercise(Comm& comm, Memory& mem, const mp::MeshSpec& mesh) {
  std::map<std::string, std::vector<T>> out;
  const index_t me = comm.rank();
  std::vector<std::pair<std::string, mp::Group>> groups = {{"c", mesh.group(me, {"c"})},
                                                           {"a", mesh.group(me, {"a"})},
                                                           {"b", mesh.group(me, {"b"})},
                                                           {"b,a", mesh.group(me, {"b", "a"})},
                                                           {"world", comm.world_group()}};
  for (const auto& [name, g] : groups) {
    const index_t n = g.size();
    const auto data = values<T>(12, static_cast<std::uint32_t>(me + 1));
    for (mp::ReduceOp op : {mp::ReduceOp::sum, mp::ReduceOp::max, mp::ReduceOp::min, mp::ReduceOp::avg}) {
      auto d = mem.make(data);
      comm.all_reduce(d, g, op, "all_reduce");
      out[name + " all_reduce " + std::to_string(static_cast<int>(op))] = mem.read(d);
    }
    {
      auto send = mem.make(std::vector<T>(data.begin(), data.begin() + 3));
      auto recv = mem.make(std::vector<T>(static_cast<std::size_t>(3 * n)));
      comm.all_gather(std::span<const T>(send), recv, g, "all_gather");
      out[name + " all_gather"] = mem.read(recv);
    }
    {
      std::vector<index_t> counts;
      index_t total = 0;
      for (index_t m : g.members) total += (counts.emplace_back(m + 1), m + 1);
      auto send = mem.make(std::vector<T>(data.begin(), data.begin() + me + 1));
      auto recv = mem.make(std::vector<T>(static_cast<std::size_t>(total)));
      comm.all_gather_v(std::span<const T>(send), recv, counts, g, "all_gather_v");
      out[name + " all_gather_v"] = mem.read(recv);
    }
    {
      auto send = mem.make(data);
      auto recv = mem.make(std::vector<T>(12 / static_cast<std::size_t>(n)));
      comm.reduce_scatter(std::span<const T>(send), recv, g, mp::ReduceOp::sum, "reduce_scatter");
      out[name + " reduce_scatter"] = mem.read(recv);
    }
    {
      auto send = mem.make(data);
      auto recv = mem.make(std::vector<T>(12));
      comm.all_to_all(std::span<const T>(send), recv, g, "all_to_all");
      out[name + " all_to_all"] = mem.read(recv);
    }
    {
      // Member s sends (s + d) % 3 elements to the member at position d: some blocks empty.
      std::vector<index_t> send_counts, recv_counts;
      index_t sent = 0, received = 0;
      for (index_t d = 0; d < n; ++d) sent += send_counts.emplace_back((me + d) % 3);
      for (index_t s : g.members) received += recv_counts.emplace_back((s + g.rank) % 3);
      auto send = mem.make(std::vector<T>(data.begin(), data.begin() + sent));
      auto recv = mem.make(std::vector<T>(static_cast<std::size_t>(received)));
      comm.all_to_all_v(std::span<const T>(send), send_counts, recv, recv_counts, g, "all_to_all_v");
      out[name + " all_to_all_v"] = mem.read(recv);
    }
    {
      auto d = mem.make(data);
      comm.broadcast(d, n - 1, g, "broadcast");
      out[name + " broadcast"] = mem.read(d);
    }
  }
  return out;
}

template <class T>
void compare_with_thread_comm() {
  const auto mesh = mp::MeshSpec::parse("a=2,b=2,c=1");
  std::vector<std::map<std::string, std::vector<T>>> host(4), device(4);
  std::vector<mp::CommStats> host_stats(4), device_stats(4);
  mp::ThreadWorld threads(4);
  threads.run([&](mp::ThreadComm& comm) {
    HostMemory mem;
    host[static_cast<std::size_t>(comm.rank())] = exercise<T>(comm, mem, mesh);
    host_stats[static_cast<std::size_t>(comm.rank())] = comm.stats();
  });
  mp::cuda::CudaLocalWorld gpu(4);
  gpu.run([&](mp::cuda::CudaLocalComm& comm) {
    DeviceMemory mem{comm.stream(), {}};
    device[static_cast<std::size_t>(comm.rank())] = exercise<T>(comm, mem, mesh);
    device_stats[static_cast<std::size_t>(comm.rank())] = comm.stats();
  });
  for (std::size_t r = 0; r < 4; ++r) {
    REQUIRE(host[r].size() == device[r].size());
    for (const auto& [name, expected] : host[r]) {
      INFO("rank " << r << ": " << name);
      CHECK(cuda_support::same_bits(device[r].at(name), expected));
    }
    REQUIRE(device_stats[r].by_label.size() == host_stats[r].by_label.size());
    for (const auto& [label, entry] : host_stats[r].by_label) {
      INFO("rank " << r << ": " << label);
      CHECK(device_stats[r].by_label.at(label).calls == entry.calls);
      CHECK(device_stats[r].by_label.at(label).bytes == entry.bytes);
    }
  }
}

}  // namespace

TEMPLATE_TEST_CASE("CudaLocalComm's collectives give ThreadComm's bits", "[comm]", float, mp::bfloat16, std::int32_t) {
  compare_with_thread_comm<TestType>();
}

TEST_CASE("CudaLocalComm refuses mismatched sizes instead of hanging, and runs again", "[comm]") {
  mp::cuda::CudaLocalWorld world(3);
  auto mismatched = [&] {
    world.run([&](mp::cuda::CudaLocalComm& comm) {
      mp::cuda::DeviceBuffer<float> d(comm.rank() == 1 ? 5 : 4);
      comm.all_reduce(d.span(), comm.world_group());
    });
  };
  CHECK_THROWS_WITH(mismatched(), Catch::Contains("[collective_sizes]"));
  // A count only its receiver sees: rank 0 sends 2 to rank 1, which expects 1. The receiver
  // refuses after the others have read its buffers, never while they still may.
  auto miscounted = [&] {
    world.run([&](mp::cuda::CudaLocalComm& comm) {
      const std::vector<index_t> sc = {1, comm.rank() == 0 ? 2 : 1, 1}, rc = {1, 1, 1};
      mp::cuda::DeviceBuffer<float> send(static_cast<std::size_t>(sc[0] + sc[1] + sc[2])), recv(3);
      comm.all_to_all_v(std::span<const float>(send.span()), sc, recv.span(), rc, comm.world_group(), "x");
    });
  };
  CHECK_THROWS_WITH(miscounted(),
                    "meshplan [collective_sizes]: all_to_all_v 'x': group member 0 brings 2 elements "
                    "where 1 are expected");
  std::vector<float> sums(3);
  world.run([&](mp::cuda::CudaLocalComm& comm) {
    mp::cuda::DeviceBuffer<float> d(1);
    const float one = static_cast<float>(comm.rank() + 1);
    MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(d.data(), &one, sizeof one, cudaMemcpyHostToDevice, comm.stream()));
    comm.all_reduce(d.span(), comm.world_group());
    sums[static_cast<std::size_t>(comm.rank())] = d.download(comm.stream())[0];
  });
  CHECK(sums == std::vector<float>{6.0f, 6.0f, 6.0f});
}

TEST_CASE("CudaLocalComm's host() exchanges host memory among the same ranks", "[comm]") {
  mp::cuda::CudaLocalWorld world(2);
  std::vector<index_t> seen(4);
  world.run([&](mp::cuda::CudaLocalComm& comm) {
    const index_t mine = 10 + comm.rank();
    std::vector<index_t> all(2);
    comm.host().all_gather(std::span<const index_t>(&mine, 1), std::span<index_t>(all), comm.world_group());
    seen[static_cast<std::size_t>(2 * comm.rank())] = all[0];
    seen[static_cast<std::size_t>(2 * comm.rank() + 1)] = all[1];
  });
  CHECK(seen == std::vector<index_t>{10, 11, 10, 11});
}

namespace {
__global__ void spin_for(unsigned long long ns) {
  unsigned long long start = 0, now = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do {
    __nanosleep(1000);
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < ns);
}
}  // namespace

TEST_CASE("A stream-owned buffer grows and goes without waiting for another stream's work", "[comm]") {
  // What CudaLocalComm's ranks do: one rank's kernel runs long on its stream while another
  // regrows and frees its scratch. With cudaFree the second rank waited for the first's
  // kernel; stream-ordered, it waits for nothing.
  mp::cuda::Stream busy, other;
  { mp::cuda::DeviceBuffer<float> warm(1, other); }  // the pool's first use, outside the timing
  other.synchronize();
  spin_for<<<1, 1, 0, busy>>>(800'000'000ull);
  MESHPLAN_CUDA_CHECK(cudaGetLastError());
  const auto start = std::chrono::steady_clock::now();
  {
    mp::cuda::DeviceBuffer<float> scratch(1 << 20, other);
    scratch.resize(1 << 22);
    MESHPLAN_CUDA_CHECK(cudaMemsetAsync(scratch.data(), 0, scratch.bytes(), other));
  }
  other.synchronize();
  const auto took = std::chrono::steady_clock::now() - start;
  const bool busy_still_running = cudaStreamQuery(busy) == cudaErrorNotReady;
  busy.synchronize();
  CHECK(busy_still_running);
  CHECK(took < std::chrono::milliseconds(400));
}

TEST_CASE("A stream-owned buffer handed to another stream is ordered after the first", "[comm]") {
  // Written on `first` behind a long kernel, handed over, read on `second`: the read sees
  // the write only if use_on ordered `second` after `first`.
  mp::cuda::Stream first, second;
  mp::cuda::DeviceBuffer<float> b(1 << 16, first);
  spin_for<<<1, 1, 0, first>>>(200'000'000ull);
  MESHPLAN_CUDA_CHECK(cudaMemsetAsync(b.data(), 0x3f, b.bytes(), first));
  b.use_on(second);
  const std::vector<float> seen = b.download(second);
  CHECK(b.stream() == second.get());
  CHECK(std::all_of(seen.begin(), seen.end(), [](float v) {
    std::uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    return bits == 0x3f3f3f3fu;
  }));
}
