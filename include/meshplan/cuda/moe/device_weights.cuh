#pragma once
// A rank's MoE block weights in device memory: the host pieces (moe/rank_weights.hpp)
// copied as they are.

#include <cuda_runtime_api.h>

#include "meshplan/cuda/core/buffer.cuh"
#include "meshplan/cuda/core/device_tensor.cuh"
#include "meshplan/moe/moe_weights.hpp"

namespace meshplan::cuda {

template <StorageType T>
struct DeviceMoEWeights {
  DeviceTensor<T> router;
  DeviceTensor<float> correction_bias;
  DeviceTensor<T> gate_up;
  DeviceTensor<T> down;
  DeviceTensor<T> shared_gate;
  DeviceTensor<T> shared_up;
  DeviceTensor<T> shared_down;

  bool has_shared() const noexcept { return !shared_down.empty(); }
};

/// Copies the weights to the current device and waits for the copies.
template <StorageType T>
DeviceMoEWeights<T> to_device(const MoEWeights<T>& w) {
  Stream stream;
  DeviceMoEWeights<T> d{to_device(w.router, stream),      to_device(w.correction_bias, stream),
                        to_device(w.gate_up, stream),     to_device(w.down, stream),
                        to_device(w.shared_gate, stream), to_device(w.shared_up, stream),
                        to_device(w.shared_down, stream)};
  stream.synchronize();
  return d;
}

}  // namespace meshplan::cuda
