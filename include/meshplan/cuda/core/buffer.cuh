#pragma once
// Device memory and streams, owned.
//
// A DeviceBuffer given an owning stream (DeviceBuffer(count, stream)) is allocated and freed
// in that stream's order (cudaMallocAsync / cudaFreeAsync): a free or a regrowth is queued
// behind the kernels already queued on the stream that read the buffer, and waits for
// nothing else. cudaFree, by contrast, waits for the whole device, which stalls every rank
// of a CudaLocalComm (one GPU, a stream each) whenever any of them regrows a scratch buffer.
// The owning stream must outlive the buffer (declare the stream's owner first), and a
// buffer used on another stream is handed over explicitly (use_on).
//
// Without an owning stream (the default constructor, DeviceBuffer(count), or a null stream:
// the legacy default stream does not order against the library's non-blocking streams)
// a buffer is allocated with cudaMalloc and freed with cudaFree, whose implicit device
// synchronization is then what keeps queued kernels from reading freed memory.
//
// Stream-ordered allocations come from the device's default memory pool with its release
// threshold raised to "keep everything" (stream_ordered_pool): the default threshold of 0
// hands freed memory back to the driver at every synchronization, and the block
// synchronizes once a step, so every step would allocate from the driver again.
// release_pooled_memory() gives the cached memory back when it is no longer wanted.

#include "meshplan/core/detail/public_begin.hpp"

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <span>
#include <utility>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/cuda/core/error.cuh"

namespace meshplan::cuda {

/// A stream created on the current device, destroyed with the object.
class Stream {
 public:
  Stream() { MESHPLAN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  ~Stream() {
    if (stream_) cudaStreamDestroy(stream_);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  Stream(Stream&& o) noexcept : stream_(std::exchange(o.stream_, nullptr)) {}

  cudaStream_t get() const noexcept { return stream_; }
  operator cudaStream_t() const noexcept { return stream_; }
  void synchronize() const { MESHPLAN_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

 private:
  cudaStream_t stream_ = nullptr;
};

/// The bytes of `count` elements of `element_bytes` each, or a refusal when that does not
/// fit in size_t (a count computed from bad sizes must not wrap into a small allocation).
inline Message buffer_bytes_fit(std::size_t count, std::size_t element_bytes) noexcept {
  if (element_bytes != 0 && count > std::numeric_limits<std::size_t>::max() / element_bytes)
    return Message::rule("device_size_range") << "a device buffer of " << count << " elements of " << element_bytes
                                         << " bytes overflows the byte count";
  return {};
}

/// A buffer handed to a stream other than its owner's, by a call that cannot hand it over
/// itself.
inline Message buffer_stream_matches(const void* owner, const void* used, const char* what) noexcept {
  if (owner == nullptr || owner == used) return {};
  return Message::rule("buffer_stream") << what << " on a stream other than the device buffer's own: hand it over "
                                        << "with use_on(stream) first, which orders the new stream after the old";
}

/// The device's default memory pool, set once to keep freed memory for reuse.
inline cudaMemPool_t stream_ordered_pool(int device) {
  static std::mutex mutex;
  static std::vector<bool> prepared;
  std::lock_guard lock(mutex);
  cudaMemPool_t pool;
  MESHPLAN_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  if (prepared.size() <= static_cast<std::size_t>(device)) prepared.resize(static_cast<std::size_t>(device) + 1);
  if (!prepared[static_cast<std::size_t>(device)]) {
    std::uint64_t keep = std::numeric_limits<std::uint64_t>::max();
    MESHPLAN_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    prepared[static_cast<std::size_t>(device)] = true;
  }
  return pool;
}

/// Gives the memory the current device's pool keeps cached (freed, unused) back to the
/// driver.
inline void release_pooled_memory() {
  int device = 0;
  MESHPLAN_CUDA_CHECK(cudaGetDevice(&device));
  MESHPLAN_CUDA_CHECK(cudaMemPoolTrimTo(stream_ordered_pool(device), 0));
}

/// The CUDA calls behind a DeviceBuffer (a test substitutes its own to check, without a
/// GPU, which calls a buffer makes and on which stream).
struct CudaMemory {
  /// Stream-ordered on `stream`, or cudaMalloc when it is null.
  static void* allocate(std::size_t bytes, cudaStream_t stream) {
    void* p = nullptr;
    if (stream) {
      int device = 0;
      MESHPLAN_CUDA_CHECK(cudaStreamGetDevice(stream, &device));
      MESHPLAN_CUDA_CHECK(cudaMallocFromPoolAsync(&p, bytes, stream_ordered_pool(device), stream));
    } else {
      MESHPLAN_CUDA_CHECK(cudaMalloc(&p, bytes));
    }
    return p;
  }
  /// `stream`: the one `p` was allocated on (null: cudaMalloc's).
  static void release(void* p, cudaStream_t stream) noexcept {
    if (stream)
      (void)cudaFreeAsync(p, stream);
    else
      (void)cudaFree(p);
  }
  /// Orders what `to` does from now on after what `from` has queued so far.
  static void hand_over(cudaStream_t from, cudaStream_t to) {
    cudaEvent_t done;
    MESHPLAN_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    const cudaError_t recorded = cudaEventRecord(done, from);
    const cudaError_t waited = recorded == cudaSuccess ? cudaStreamWaitEvent(to, done, 0) : recorded;
    (void)cudaEventDestroy(done);  // released once the wait has happened
    MESHPLAN_CUDA_CHECK(waited);
  }
};

/// `count` elements of T in device memory (uninitialized); see the top of the file for
/// when it is stream-ordered.
template <class T, class Memory = CudaMemory>
class BasicDeviceBuffer {
 public:
  BasicDeviceBuffer() = default;
  /// Not stream-ordered (cudaMalloc / cudaFree).
  explicit BasicDeviceBuffer(std::size_t count) { resize(count); }
  /// Allocated, regrown and freed in `stream`'s order; `stream` must outlive the buffer.
  BasicDeviceBuffer(std::size_t count, cudaStream_t stream) : stream_(stream) { resize(count); }
  ~BasicDeviceBuffer() { release(); }
  BasicDeviceBuffer(const BasicDeviceBuffer&) = delete;
  BasicDeviceBuffer& operator=(const BasicDeviceBuffer&) = delete;
  BasicDeviceBuffer(BasicDeviceBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)),
        capacity_(std::exchange(o.capacity_, 0)),
        stream_(o.stream_),
        allocated_on_(std::exchange(o.allocated_on_, nullptr)) {}
  /// Frees what this buffer held (in its allocation's stream order) and takes the other's
  /// memory and stream.
  BasicDeviceBuffer& operator=(BasicDeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      capacity_ = std::exchange(o.capacity_, 0);
      stream_ = o.stream_;
      allocated_on_ = std::exchange(o.allocated_on_, nullptr);
    }
    return *this;
  }

  /// Reallocates when the count grows (contents are not kept), on the owning stream.
  void resize(std::size_t count) {
    if (count <= capacity_) {
      size_ = count;
      return;
    }
    enforce(buffer_bytes_fit(count, sizeof(T)));
    release();
    data_ = static_cast<T*>(Memory::allocate(count * sizeof(T), stream_));
    allocated_on_ = stream_;
    size_ = capacity_ = count;
  }

  /// Makes `stream` the owner: its work from now on (and the buffer's free) is ordered after
  /// what the old owner has queued. For a buffer without an owner it only sets one (its
  /// current memory keeps its synchronous free); a null stream is refused.
  void use_on(cudaStream_t stream) {
    if (stream == nullptr)
      enforce(Message::rule("buffer_stream") << "a device buffer's owning stream cannot be the legacy default stream");
    if (stream == stream_) return;
    if (stream_ && data_) Memory::hand_over(stream_, stream);
    stream_ = stream;
    // The allocation is freed on the new owner: its order now covers the old one's work.
    if (allocated_on_) allocated_on_ = stream;
  }

  /// The owning stream (null: none).
  cudaStream_t stream() const noexcept { return stream_; }
  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t bytes() const noexcept { return size_ * sizeof(T); }
  std::span<T> span() noexcept { return {data_, size_}; }
  std::span<const T> span() const noexcept { return {data_, size_}; }

  /// Copies `host` in on `stream` (which must be the owner, when there is one). From
  /// pageable memory the copy is staged by the driver before the call returns, so `host`
  /// may go at once; from pinned memory it must live until the stream has run the copy.
  void upload(std::span<const T> host, cudaStream_t stream) {
    enforce(buffer_stream_matches(stream_, stream, "upload"));
    resize(host.size());
    if (!host.empty())
      MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(data_, host.data(), host.size_bytes(), cudaMemcpyHostToDevice, stream));
  }
  /// The contents, copied out on `stream` (which must be the owner, when there is one),
  /// waiting for it.
  std::vector<T> download(cudaStream_t stream) const {
    enforce(buffer_stream_matches(stream_, stream, "download"));
    std::vector<T> host(size_);
    if (size_ > 0) MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(host.data(), data_, bytes(), cudaMemcpyDeviceToHost, stream));
    MESHPLAN_CUDA_CHECK(cudaStreamSynchronize(stream));
    return host;
  }

 private:
  void release() noexcept {
    if (data_) Memory::release(data_, allocated_on_);
    data_ = nullptr;
    allocated_on_ = nullptr;
    size_ = capacity_ = 0;
  }

  T* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
  cudaStream_t stream_ = nullptr;        // the owner: where new allocations are made
  cudaStream_t allocated_on_ = nullptr;  // where data_ is freed (null: cudaFree)
};

template <class T>
using DeviceBuffer = BasicDeviceBuffer<T, CudaMemory>;

/// Page-locked host memory for staging host-to-device copies that must stay asynchronous
/// (a copy from pageable memory is staged by the driver, which may wait), reused only after
/// the copy that last read it has run.
class PinnedStaging {
 public:
  PinnedStaging() = default;
  ~PinnedStaging() {
    if (ready_) cudaEventDestroy(ready_);
    if (data_) cudaFreeHost(data_);
  }
  PinnedStaging(const PinnedStaging&) = delete;
  PinnedStaging& operator=(const PinnedStaging&) = delete;
  PinnedStaging(PinnedStaging&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)),
        capacity_(std::exchange(o.capacity_, 0)),
        ready_(std::exchange(o.ready_, nullptr)) {}

  /// Copies `bytes` from `host` into pinned memory and enqueues their copy to `device` on
  /// `stream`; `host` may go when this returns.
  void copy_to_device(void* device, const void* host, std::size_t bytes, cudaStream_t stream) {
    if (bytes == 0) return;
    if (ready_)
      MESHPLAN_CUDA_CHECK(cudaEventSynchronize(ready_));  // the last copy has read it
    else
      MESHPLAN_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    if (bytes > capacity_) {
      if (data_) MESHPLAN_CUDA_CHECK(cudaFreeHost(data_));
      data_ = nullptr;
      capacity_ = 0;
      MESHPLAN_CUDA_CHECK(cudaMallocHost(&data_, bytes));
      capacity_ = bytes;
    }
    std::memcpy(data_, host, bytes);
    MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(device, data_, bytes, cudaMemcpyHostToDevice, stream));
    MESHPLAN_CUDA_CHECK(cudaEventRecord(ready_, stream));
  }

 private:
  void* data_ = nullptr;
  std::size_t capacity_ = 0;
  cudaEvent_t ready_ = nullptr;
};

}  // namespace meshplan::cuda

#include "meshplan/core/detail/public_end.hpp"
