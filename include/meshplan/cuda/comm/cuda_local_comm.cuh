#pragma once
// CudaLocalComm: N ranks on one GPU, each a thread with its own stream, so the whole
// multi-rank pipeline runs (and is tested) on a single GPU. NCCL refuses two ranks on one
// device; this communicator moves data with device-to-device copies instead.
//
//   mp::cuda::CudaLocalWorld world(4);            // on the current device
//   world.run([&](mp::cuda::CudaLocalComm& comm) {
//     comm.all_to_all_v(send, send_counts, recv, recv_counts, ep, "dispatch");   // device spans
//   });
//
// Collectives take spans of device memory and follow the Communicator semantics of
// ThreadComm: a member finishes its stream's work, publishes its buffers, waits for the
// group, enqueues the copies (or the ordered reduction) reading its peers' buffers on its
// own stream, waits for them, and waits for the group again. Reductions run in group order
// in fp32 (cuda/comm/ordered_reduce.cuh). host() gives the same ranks as a ThreadComm for
// small host-side exchanges (counts, agreement).

#include <cuda_runtime_api.h>

#include <cstring>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "meshplan/comm/collective_rules.hpp"
#include "meshplan/comm/communicator.hpp"
#include "meshplan/comm/rendezvous.hpp"
#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/cuda/comm/ordered_reduce.cuh"
#include "meshplan/cuda/core/buffer.cuh"
#include "meshplan/cuda/core/error.cuh"

namespace meshplan::cuda {

class CudaLocalComm;

class CudaLocalWorld : public Rendezvous {
 public:
  explicit CudaLocalWorld(index_t ranks, int device = -1) : Rendezvous(ranks), device_(device) {
    if (device_ < 0) MESHPLAN_CUDA_CHECK(cudaGetDevice(&device_));
  }
  int device() const noexcept { return device_; }

  /// Runs fn(CudaLocalComm&) once per rank, each on its own thread (see Rendezvous::run).
  template <class F>
  void run(F&& fn);

 private:
  int device_;
};

class CudaLocalComm {
 public:
  CudaLocalComm(CudaLocalWorld& world, index_t rank) : world_(&world), rank_(rank), host_(world, rank) {
    MESHPLAN_CUDA_CHECK(cudaSetDevice(world.device()));
    stream_ = std::make_unique<Stream>();
  }

  index_t rank() const noexcept { return rank_; }
  index_t size() const noexcept { return world_->size(); }
  const CommStats& stats() const noexcept { return stats_; }
  CommStats& stats() noexcept { return stats_; }
  Group world_group() const { return host_.world_group(); }
  /// The stream this rank's kernels and collectives run on.
  cudaStream_t stream() const noexcept { return stream_->get(); }
  /// The same ranks, for collectives on host memory.
  ThreadComm& host() noexcept { return host_; }

  template <CommElement T>
  void all_reduce(std::span<T> data, const Group& g, ReduceOp op = ReduceOp::sum, std::string_view label = {}) {
    scratch_.resize(data.size_bytes());
    copy(scratch_.data(), data.data(), data.size_bytes());
    collective<T>(g, reinterpret_cast<const T*>(scratch_.data()), data.size(), nullptr, [&](auto peer, auto) {
      for (index_t m = 0; m < g.size(); ++m) check("all_reduce", label, m, peer(m).size(), data.size());
      reduce(g, peer, static_cast<index_t>(data.size()), 0, op, data.data());
    });
    stats_.record(label, traffic::all_reduce(g, data.size_bytes()));
  }

  template <CommElement T>
  void all_gather(std::span<const T> send, std::span<T> recv, const Group& g, std::string_view label = {}) {
    collective<T>(g, send.data(), send.size(), nullptr, [&](auto peer, auto) {
      for (index_t m = 0; m < g.size(); ++m) check("all_gather", label, m, peer(m).size(), send.size());
      check("all_gather", label, g.rank, recv.size(), send.size() * static_cast<std::size_t>(g.size()));
      for (index_t m = 0; m < g.size(); ++m)
        copy(recv.data() + m * static_cast<index_t>(send.size()), peer(m).data(), send.size_bytes());
    });
    stats_.record(label, traffic::all_gather(g, send.size_bytes()));
  }

  template <CommElement T>
  void all_gather_v(std::span<const T> send, std::span<T> recv, std::span<const index_t> recv_counts, const Group& g,
                    std::string_view label = {}) {
    check("all_gather_v counts", label, g.rank, recv_counts.size(), static_cast<std::size_t>(g.size()));
    collective<T>(g, send.data(), send.size(), nullptr, [&](auto peer, auto) {
      index_t total = 0;
      for (index_t m = 0; m < g.size(); ++m) {
        check("all_gather_v", label, m, peer(m).size(), recv_counts[static_cast<std::size_t>(m)]);
        total += recv_counts[static_cast<std::size_t>(m)];
      }
      check("all_gather_v", label, g.rank, recv.size(), total);
      index_t at = 0;
      for (index_t m = 0; m < g.size(); ++m) {
        copy(recv.data() + at, peer(m).data(), peer(m).size_bytes());
        at += recv_counts[static_cast<std::size_t>(m)];
      }
    });
    stats_.record(label, traffic::all_gather(g, send.size_bytes()));
  }

  template <CommElement T>
  void reduce_scatter(std::span<const T> send, std::span<T> recv, const Group& g, ReduceOp op = ReduceOp::sum,
                      std::string_view label = {}) {
    enforce(comm_rules::divisible("reduce_scatter", static_cast<index_t>(send.size()), g.size()));
    const index_t chunk = static_cast<index_t>(send.size()) / g.size();
    collective<T>(g, send.data(), send.size(), nullptr, [&](auto peer, auto) {
      for (index_t m = 0; m < g.size(); ++m) check("reduce_scatter", label, m, peer(m).size(), send.size());
      check("reduce_scatter", label, g.rank, recv.size(), chunk);
      reduce(g, peer, chunk, g.rank * chunk, op, recv.data());
    });
    stats_.record(label, traffic::reduce_scatter(g, send.size_bytes()));
  }

  template <CommElement T>
  void all_to_all(std::span<const T> send, std::span<T> recv, const Group& g, std::string_view label = {}) {
    enforce(comm_rules::divisible("all_to_all", static_cast<index_t>(send.size()), g.size()));
    const index_t chunk = static_cast<index_t>(send.size()) / g.size();
    collective<T>(g, send.data(), send.size(), nullptr, [&](auto peer, auto) {
      for (index_t m = 0; m < g.size(); ++m) check("all_to_all", label, m, peer(m).size(), send.size());
      check("all_to_all", label, g.rank, recv.size(), send.size());
      for (index_t m = 0; m < g.size(); ++m)
        copy(recv.data() + m * chunk, peer(m).data() + g.rank * chunk, static_cast<std::size_t>(chunk) * sizeof(T));
    });
    stats_.record(label, traffic::all_to_all(g, send.size_bytes()));
  }

  /// send_counts and recv_counts are host memory; the data is device memory.
  template <CommElement T>
  void all_to_all_v(std::span<const T> send, std::span<const index_t> send_counts, std::span<T> recv,
                    std::span<const index_t> recv_counts, const Group& g, std::string_view label = {}) {
    check("all_to_all_v send counts", label, g.rank, send_counts.size(), static_cast<std::size_t>(g.size()));
    check("all_to_all_v recv counts", label, g.rank, recv_counts.size(), static_cast<std::size_t>(g.size()));
    index_t total_send = 0, total_recv = 0;
    for (index_t c : send_counts) total_send += c;
    for (index_t c : recv_counts) total_recv += c;
    check("all_to_all_v send", label, g.rank, send.size(), total_send);
    check("all_to_all_v recv", label, g.rank, recv.size(), total_recv);
    collective<T>(g, send.data(), send.size(), send_counts.data(), [&](auto peer, auto counts_of) {
      index_t out = 0;
      for (index_t m = 0; m < g.size(); ++m) {
        const index_t* counts = counts_of(m);
        index_t offset = 0;
        for (index_t q = 0; q < g.rank; ++q) offset += counts[q];
        const index_t count = counts[g.rank];
        check("all_to_all_v", label, m, count, recv_counts[static_cast<std::size_t>(m)]);
        copy(recv.data() + out, peer(m).data() + offset, static_cast<std::size_t>(count) * sizeof(T));
        out += count;
      }
    });
    stats_.record(label, traffic::all_to_all_v(g, send_counts, sizeof(T)));
  }

  template <CommElement T>
  void broadcast(std::span<T> data, index_t root, const Group& g, std::string_view label = {}) {
    enforce(comm_rules::root_in_group(root, g.size()));
    scratch_.resize(data.size_bytes());
    copy(scratch_.data(), data.data(), data.size_bytes());
    collective<T>(g, reinterpret_cast<const T*>(scratch_.data()), data.size(), nullptr, [&](auto peer, auto) {
      check("broadcast", label, root, peer(root).size(), data.size());
      if (g.rank != root) copy(data.data(), peer(root).data(), data.size_bytes());
    });
    stats_.record(label, traffic::broadcast(g, root, data.size_bytes()));
  }

  void barrier(const Group& g) {
    enforce(comm_rules::member_of_group(rank_, g));
    stream_->synchronize();
    world_->wait(g);
  }

 private:

  template <std::integral A, std::integral B>
  static void check(std::string_view what, std::string_view label, index_t member, A got, B expected) {
    enforce(comm_rules::sizes_match(what, label, member, static_cast<index_t>(got), static_cast<index_t>(expected)));
  }

  void copy(void* to, const void* from, std::size_t bytes) {
    if (bytes > 0) MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(to, from, bytes, cudaMemcpyDeviceToDevice, stream()));
  }

  /// The ordered reduction of the members' buffers into `out` (device memory).
  template <class Peer, class T>
  void reduce(const Group& g, Peer&& peer, index_t n, index_t offset, ReduceOp op, T* out) {
    std::vector<const T*> pointers;
    for (index_t m = 0; m < g.size(); ++m) pointers.push_back(peer(m).data());
    pointer_table_.resize(pointers.size() * sizeof(const T*));
    MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(pointer_table_.data(), pointers.data(), pointer_table_.bytes(),
                                        cudaMemcpyHostToDevice, stream()));
    launch_ordered_reduce(reinterpret_cast<const T* const*>(pointer_table_.data()), g.size(), n, offset, op, out,
                          stream());
    stream_->synchronize();  // `pointers` is pageable host memory read by the copy
  }

  /// Finish my work, publish, wait, run `body(peer, counts_of)`, finish its copies, wait.
  template <class T, class Body>
  void collective(const Group& g, const T* send, std::size_t elements, const index_t* counts, Body&& body) {
    enforce(comm_rules::member_of_group(rank_, g));
    stream_->synchronize();
    world_->slot(rank_) = {send, elements, sizeof(T), counts};
    world_->wait(g);
    auto slot = [&](index_t m) -> const Rendezvous::Slot& {
      return world_->slot(g.members[static_cast<std::size_t>(m)]);
    };
    for (index_t m = 0; m < g.size(); ++m)
      enforce(comm_rules::element_types_match("collective", m, slot(m).element_bytes, sizeof(T)));
    auto peer = [&](index_t m) {
      return std::span<const T>(static_cast<const T*>(slot(m).send), slot(m).send_elements);
    };
    auto counts_of = [&](index_t m) { return slot(m).counts; };
    body(peer, counts_of);
    stream_->synchronize();
    world_->wait(g);
  }

  CudaLocalWorld* world_;
  index_t rank_;
  ThreadComm host_;
  std::unique_ptr<Stream> stream_;
  DeviceBuffer<unsigned char> scratch_;
  DeviceBuffer<unsigned char> pointer_table_;
  CommStats stats_;
};

template <class F>
void CudaLocalWorld::run(F&& fn) {
  Rendezvous::run([this](index_t r) { return CudaLocalComm(*this, r); }, [&](CudaLocalComm& comm) { fn(comm); });
}

}  // namespace meshplan::cuda
