#pragma once
// DeviceTensor<T>: a row-major tensor in device memory, the CUDA twin of Tensor<T>. T is the
// host storage type (float or meshplan::bfloat16); kernels see it as its device type
// (device_cast), whose bits are the same, so tensors move between host and device as
// they are.
//
//   mp::cuda::DeviceTensor<mp::bfloat16> x = mp::cuda::to_device(host_x, stream);
//   mp::Tensor<mp::bfloat16> y = mp::cuda::to_host(block.forward(comm, x), stream);

#include "meshplan/core/detail/public_begin.hpp"

#include <cuda_runtime_api.h>

#include <span>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/cuda/core/buffer.cuh"
#include "meshplan/cuda/core/detail/device_types.cuh"

namespace meshplan::cuda {

/// The device view of host-typed device memory: bfloat16* as __nv_bfloat16*.
template <class T>
auto* device_cast(T* p) noexcept {
  if constexpr (std::is_const_v<T>)
    return reinterpret_cast<const device_type_t<std::remove_const_t<T>>*>(p);
  else
    return reinterpret_cast<device_type_t<T>*>(p);
}

template <class T>
class DeviceTensor {
 public:
  DeviceTensor() = default;
  explicit DeviceTensor(std::vector<index_t> shape) : shape_(std::move(shape)) {
    enforce(tensor_rules::extents_valid(shape_));
    buffer_.resize(static_cast<std::size_t>(element_count(shape_)));
  }
  /// In memory allocated, regrown and freed in `stream`'s order (buffer.cuh); `stream` must
  /// outlive the tensor.
  DeviceTensor(std::vector<index_t> shape, cudaStream_t stream) : shape_(std::move(shape)), buffer_(0, stream) {
    enforce(tensor_rules::extents_valid(shape_));
    buffer_.resize(static_cast<std::size_t>(element_count(shape_)));
  }

  /// The owning stream (null: none, cudaMalloc's memory).
  cudaStream_t stream() const noexcept { return buffer_.stream(); }
  /// Hands the tensor's memory to `stream` (DeviceBuffer::use_on).
  void use_on(cudaStream_t stream) { buffer_.use_on(stream); }

  const std::vector<index_t>& shape() const noexcept { return shape_; }
  index_t rank() const noexcept { return static_cast<index_t>(shape_.size()); }
  index_t dim(std::size_t d) const noexcept { return shape_[d]; }
  index_t numel() const noexcept { return static_cast<index_t>(buffer_.size()); }
  bool empty() const noexcept { return buffer_.size() == 0; }

  T* data() noexcept { return buffer_.data(); }
  const T* data() const noexcept { return buffer_.data(); }
  std::span<T> span() noexcept { return buffer_.span(); }
  std::span<const T> span() const noexcept { return buffer_.span(); }

  /// Changes the shape; reallocates (without keeping the contents) when it grows.
  void reshape(std::vector<index_t> shape) {
    enforce(tensor_rules::extents_valid(shape));
    shape_ = std::move(shape);
    buffer_.resize(static_cast<std::size_t>(element_count(shape_)));
  }

  void require_shape(std::string_view what, const std::vector<index_t>& expected) const {
    enforce(tensor_rules::shape_matches(what, shape_, expected));
  }

 private:
  std::vector<index_t> shape_;
  DeviceBuffer<T> buffer_;
};

/// A host tensor copied to the device on `stream` (from pageable memory the driver stages
/// the copy before returning; from pinned memory `host` must stay alive until the stream
/// has run it). The tensor does not take `stream` as its owner: callers pass streams that
/// end before the tensor does (device_weights.cuh); use_on makes one the owner.
template <class T>
DeviceTensor<T> to_device(const Tensor<T>& host, cudaStream_t stream) {
  if (host.shape().empty() && host.empty()) return {};  // no tensor (not a scalar)
  DeviceTensor<T> d(host.shape());
  if (host.numel() > 0)
    MESHPLAN_CUDA_CHECK(
        cudaMemcpyAsync(d.data(), host.data(), host.span().size_bytes(), cudaMemcpyHostToDevice, stream));
  return d;
}

/// A device tensor copied to the host (waits for `stream`).
template <class T>
Tensor<T> to_host(const DeviceTensor<T>& device, cudaStream_t stream) {
  if (device.shape().empty() && device.empty()) return {};
  Tensor<T> h(device.shape());
  if (device.numel() > 0)
    MESHPLAN_CUDA_CHECK(
        cudaMemcpyAsync(h.data(), device.data(), h.span().size_bytes(), cudaMemcpyDeviceToHost, stream));
  MESHPLAN_CUDA_CHECK(cudaStreamSynchronize(stream));
  return h;
}

}  // namespace meshplan::cuda

#include "meshplan/core/detail/public_end.hpp"
