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
// The collectives are ThreadComm's, P2PEngine's (comm/detail/p2p_engine.hpp), over device memory
// (device_mover.cuh): a member finishes its stream's work, publishes its buffers, waits for
// the group, enqueues the copies (or the ordered reduction) reading its peers' buffers on
// its own stream, finishes them, and waits for the group again. So it gives ThreadComm's
// bits, checks and CommStats. host() gives the same ranks as a ThreadComm for small
// host-side exchanges (counts, agreement).

#include "meshplan/core/detail/public_begin.hpp"

#include <cuda_runtime_api.h>

#include "meshplan/comm/detail/p2p_engine.hpp"
#include "meshplan/comm/detail/rendezvous.hpp"
#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/cuda/comm/detail/device_mover.cuh"
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

class CudaLocalComm : public P2PEngine<DeviceMover> {
 public:
  CudaLocalComm(CudaLocalWorld& world, index_t rank)
      : P2PEngine<DeviceMover>(world, rank, DeviceMover(world.device())), host_(world, rank) {}

  /// The stream this rank's kernels and collectives run on.
  cudaStream_t stream() const noexcept { return mover().stream(); }
  /// The same ranks, for collectives on host memory.
  ThreadComm& host() noexcept { return host_; }

 private:
  ThreadComm host_;
};

template <class F>
void CudaLocalWorld::run(F&& fn) {
  Rendezvous::run([this](index_t r) { return CudaLocalComm(*this, r); }, [&](CudaLocalComm& comm) { fn(comm); });
}

}  // namespace meshplan::cuda

#include "meshplan/core/detail/public_end.hpp"
