#pragma once
// A rank's MoE block weights in device memory: the host pieces (moe/detail/rank_weights.hpp)
// copied as they are.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

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

  // What the backward's input-gradient products read, made at the first backward
  // (CudaBackend::prepare_backward): fp32 copies of bf16 weights (empty for fp32 storage,
  // whose weights are read as they are), and the shared experts' gate and up as one
  // [2S, H] fp32 matrix (gate rows first), as the kept pre-activations lay them out.
  DeviceTensor<float> router32, gate_up32, down32, shared_gate_up32, shared_down32;
  bool backward_ready = false;

  bool has_shared() const noexcept { return !shared_down.empty(); }
};

/// Copies the weights to the current device and waits for the copies.
template <StorageType T>
DeviceMoEWeights<T> to_device(const MoEWeights<T>& w) {
  Stream stream;
  DeviceMoEWeights<T> d;
  d.router = to_device(w.router, stream);
  d.correction_bias = to_device(w.correction_bias, stream);
  d.gate_up = to_device(w.gate_up, stream);
  d.down = to_device(w.down, stream);
  d.shared_gate = to_device(w.shared_gate, stream);
  d.shared_up = to_device(w.shared_up, stream);
  d.shared_down = to_device(w.shared_down, stream);
  stream.synchronize();
  return d;
}

}  // namespace meshplan::cuda
