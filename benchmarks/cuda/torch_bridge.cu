// A C interface to meshplan's CUDA experts and MoE block, for benchmarks/cuda/torch_bench.py
// (loaded with ctypes): the fused experts and the whole block run on the tensors PyTorch
// allocated, on PyTorch's stream, in the process that also times torch._grouped_mm and
// transformers' own block on the same data. Every function returns 0, or 1 with the
// message in meshplan_last_error().
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "meshplan/cuda/comm/cuda_local_comm.cuh"
#include "meshplan/cuda/experts/fused_experts.cuh"
#include "meshplan/cuda/moe/cuda_backend.cuh"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/io/config_json.hpp"
#include "meshplan/plan/builtin/registry.hpp"

namespace mp = meshplan;
using mp::index_t;

namespace {

thread_local std::string last_error;

template <class F>
int guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
    return 1;
  }
}

mp::Tensor<mp::bfloat16> host_tensor(const std::uint16_t* bits, std::vector<index_t> shape) {
  mp::Tensor<mp::bfloat16> t(std::move(shape));
  if (t.numel() > 0)
    std::memcpy(static_cast<void*>(t.data()), bits, static_cast<std::size_t>(t.numel()) * sizeof(std::uint16_t));
  return t;
}

/// A Qwen3-MoE or Mixtral block on one rank of a one-axis EP mesh of size 1.
using Mesh = mp::DeviceMesh<mp::Axis<"ep">>;
using Block = mp::MoEBlock<mp::RuntimeModel, Mesh, mp::plans::qwen3_moe::ep<"ep">, mp::cuda::CudaBackend<mp::bfloat16>>;

struct BlockHandle {
  BlockHandle(const mp::ModelSpec& model, const mp::MoEWeights<mp::bfloat16>& w)
      : world(1), comm(world, 0), block(model, Mesh{1}, 0, w) {}
  mp::cuda::CudaLocalWorld world;
  mp::cuda::CudaLocalComm comm;  // a world of one: its collectives never wait for anyone
  Block block;
  mp::cuda::DeviceTensor<mp::bfloat16> x;
};

}  // namespace

extern "C" {

const char* meshplan_last_error() { return last_error.c_str(); }

/// rows bf16 [N, H] (or tokens, with gather = the sorted pair order and top_k); offsets:
/// host int64 [experts + 1]; gate_up bf16 [E, 2I, H]; down bf16 [E, H, I]; out bf16 [N, H].
int meshplan_fused_experts(const void* rows, const std::int32_t* gather, std::int64_t top_k,
                           const std::int64_t* offsets, std::int64_t experts, const void* gate_up, const void* down,
                           std::int64_t hidden, std::int64_t inter, void* out, void* stream) {
  return guarded([&] {
    static thread_local mp::cuda::FusedExperts fused;
    using bf16 = __nv_bfloat16;
    std::vector<index_t> o(offsets, offsets + experts + 1);
    fused.grouped(static_cast<const bf16*>(rows), gather, top_k, o, static_cast<const bf16*>(gate_up),
                  static_cast<const bf16*>(down), hidden, inter, static_cast<bf16*>(out),
                  static_cast<cudaStream_t>(stream));
  });
}

/// A block from a transformers config.json text and host bf16 weights (as uint16 bits):
/// router [E, H], gate_up [E, 2I, H], down [E, H, I]. The weights are copied to the device.
void* meshplan_block_create(const char* config_json, const std::uint16_t* router, const std::uint16_t* gate_up,
                            const std::uint16_t* down) {
  std::unique_ptr<BlockHandle> handle;
  const int rc = guarded([&] {
    const mp::ModelSpec model = mp::model_from_config_json(config_json);
    const index_t E = model.num_experts, H = model.hidden_size, I = model.moe_intermediate_size;
    mp::MoEWeights<mp::bfloat16> w;
    w.router = host_tensor(router, {E, H});
    w.gate_up = host_tensor(gate_up, {E, 2 * I, H});
    w.down = host_tensor(down, {E, H, I});
    handle = std::make_unique<BlockHandle>(model, w);
  });
  return rc == 0 ? handle.release() : nullptr;
}

/// out[tokens, H] = the block on x[tokens, H] (both bf16 device memory), on the block's
/// stream after `stream`'s work; `stream` then waits for the block. Includes the copy of x
/// into the block's input tensor and of the result into out.
int meshplan_block_forward(void* block, const void* x, std::int64_t tokens, void* out, void* stream) {
  return guarded([&] {
    auto& b = *static_cast<BlockHandle*>(block);
    const cudaStream_t caller = static_cast<cudaStream_t>(stream), s = b.comm.stream();
    const index_t H = b.block.model().hidden_size;
    cudaEvent_t ready;
    MESHPLAN_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    MESHPLAN_CUDA_CHECK(cudaEventRecord(ready, caller));
    MESHPLAN_CUDA_CHECK(cudaStreamWaitEvent(s, ready));
    b.x.reshape({tokens, H});
    const std::size_t bytes = static_cast<std::size_t>(tokens * H) * sizeof(std::uint16_t);
    if (bytes) MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(b.x.data(), x, bytes, cudaMemcpyDeviceToDevice, s));
    const auto y = b.block.forward(b.comm, b.x);
    if (bytes) MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(out, y.hidden_states.data(), bytes, cudaMemcpyDeviceToDevice, s));
    MESHPLAN_CUDA_CHECK(cudaEventRecord(ready, s));
    MESHPLAN_CUDA_CHECK(cudaStreamWaitEvent(caller, ready));
    MESHPLAN_CUDA_CHECK(cudaEventDestroy(ready));
  });
}

void meshplan_block_destroy(void* block) { delete static_cast<BlockHandle*>(block); }

}  // extern "C"
