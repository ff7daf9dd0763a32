#pragma once
// DeviceMover: how P2PEngine moves data between ranks that share one GPU, for CudaLocalComm
// (and the ordered reductions of NcclComm). Every rank has its own stream; copies are
// device-to-device cudaMemcpyAsync on it, reductions the fixed-order kernel of
// ordered_reduce.cuh, and finish() synchronizes the stream. Nothing else waits: the
// reduction's table of pointers goes up through pinned staging, and the mover's scratch
// buffers are regrown in the stream's order, so one rank's regrowth does not stall the
// device (and every other rank on it) as cudaFree would. NcclComm, which waits for its
// collectives by polling instead (collective_failure.cuh), never calls finish() in a
// collective. P2PEngine finishes before it
// publishes a rank's buffers (they hold their final values when a peer reads them) and
// before the second wait (the copies from the peers' buffers are done before the peers may
// reuse them). The interface is HostMover's (comm/detail/host_mover.hpp).

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cuda_runtime_api.h>

#include <cstddef>
#include <span>
#include <vector>

#include "meshplan/core/size.hpp"
#include "meshplan/cuda/comm/detail/ordered_reduce.cuh"
#include "meshplan/cuda/core/buffer.cuh"
#include "meshplan/cuda/core/error.cuh"
#include "meshplan/placement/placement.hpp"

namespace meshplan::cuda {

class DeviceMover {
 public:
  /// Makes `device` current on the calling thread (the rank's) and creates its stream there.
  explicit DeviceMover(int device) : device_(make_current(device)) {}

  int device() const noexcept { return device_; }
  cudaStream_t stream() const noexcept { return stream_.get(); }

  template <class T>
  const T* stage(std::span<const T> data) {
    staged_.resize(data.size_bytes());
    copy(reinterpret_cast<T*>(staged_.data()), data.data(), data.size());
    return reinterpret_cast<const T*>(staged_.data());
  }

  template <class T>
  void copy(T* to, const T* from, std::size_t elements) {
    if (elements > 0)
      MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(to, from, elements * sizeof(T), cudaMemcpyDeviceToDevice, stream()));
  }

  /// `input(m)`: where member m's out.size() elements start (device memory).
  template <class T, class Input>
  void reduce(std::span<T> out, index_t members, Input&& input, ReduceOp op) {
    if (out.empty()) return;
    std::vector<const T*> pointers;
    for (index_t m = 0; m < members; ++m) pointers.push_back(input(m));
    pointer_table_.resize(pointers.size() * sizeof(const T*));
    pinned_pointers_.copy_to_device(pointer_table_.data(), pointers.data(), pointer_table_.bytes(), stream());
    launch_ordered_reduce(reinterpret_cast<const T* const*>(pointer_table_.data()), members,
                          static_cast<index_t>(out.size()), index_t{0}, op, out.data(), stream());
  }

  void finish() { stream_.synchronize(); }

 private:
  static int make_current(int device) {
    MESHPLAN_CUDA_CHECK(cudaSetDevice(device));
    return device;
  }

  int device_;     // first: the stream is created on it
  Stream stream_;  // before the buffers it owns: they are freed on it
  DeviceBuffer<unsigned char> staged_{0, stream_.get()};
  DeviceBuffer<unsigned char> pointer_table_{0, stream_.get()};
  PinnedStaging pinned_pointers_;
};

}  // namespace meshplan::cuda
