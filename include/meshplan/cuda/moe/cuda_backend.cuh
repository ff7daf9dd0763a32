#pragma once
// CudaBackend<T>: the MoE pipeline's primitives on the GPU (moe/moe_backend.hpp says what a
// backend supplies): device tensors, every primitive queued on the rank's stream (the
// communicator's), glue over the kernels of cuda/permute, cuda/router and cuda/experts.
//
//   using Block = mp::MoEBlock<Model, Mesh, Plan, mp::cuda::CudaBackend<mp::bfloat16>>;
//   Block block(mesh, rank, full_weights);                   // uploads the rank's pieces
//   auto y = block.forward(comm, x);                         // x, y.hidden_states in device memory
//
// route() holds the pipeline's one device-to-host copy: the per-expert counts the host
// needs to size the exchange, with the router's report of bad logits and expert ids. A row's
// expert output does not depend on which rank computes it or on its neighbours (the fused
// kernels sum every output in k order, the same way in every tile position; cuBLAS runs
// every GEMM at one shape), so EP, SP and DP give exactly the single-rank GPU result.
// Against the CPU reference, outputs agree within rounding (the GPU sums in another order).

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/row_block.hpp"
#include "meshplan/cuda/core/buffer.cuh"
#include "meshplan/cuda/core/device_tensor.cuh"
#include "meshplan/cuda/core/device_types.cuh"
#include "meshplan/cuda/core/launch.cuh"
#include "meshplan/cuda/experts/expert_mlp.cuh"
#include "meshplan/cuda/moe/device_weights.cuh"
#include "meshplan/cuda/permute/device_permute.cuh"
#include "meshplan/cuda/permute/kernels.cuh"
#include "meshplan/cuda/router/device_router.cuh"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/model/routing.hpp"
#include "meshplan/moe/moe_backend.hpp"
#include "meshplan/moe/moe_weights.hpp"

namespace meshplan::cuda {

template <StorageType T = float>
class CudaBackend {
  using D = device_type_t<T>;

 public:
  using value_type = T;
  template <class U>
  using tensor = DeviceTensor<U>;
  using Weights = DeviceMoEWeights<T>;

  struct Routed {
    index_t tokens = 0, top_k = 0;
    DeviceBuffer<std::int32_t> ids, order, inverse;  // order: sorted position -> pair; inverse: its inverse
    DeviceBuffer<float> weights;
    std::vector<index_t> counts;  // pairs per global expert, on the host
    Message problem;
    cudaStream_t stream = nullptr;  // where the routing was computed (host_routing waits for it)
  };

  struct Context {
    cudaStream_t stream;
  };

  CudaBackend() : experts_(std::is_same_v<T, bfloat16>) {}

  Weights prepare(MoEWeights<T> w) const { return to_device(w); }
  ExpertPath expert_path() const noexcept { return experts_.path(); }

  template <class C>
  static auto& host_comm(C& comm) noexcept {
    return comm.host();
  }
  template <class C>
  Context context(C& comm) const {
    return {comm.stream()};
  }

  Routed route(Context& c, const DeviceTensor<T>& x, const Weights& w, const ModelSpec& model) {
    const index_t tokens = x.dim(0), k = model.num_experts_per_tok, E = model.num_experts, pairs = tokens * k;
    Routed r;
    r.tokens = tokens;
    r.top_k = k;
    r.stream = c.stream;
    for (auto* b : {&r.ids, &r.order, &r.inverse}) b->resize(static_cast<std::size_t>(pairs));
    r.weights.resize(static_cast<std::size_t>(pairs));
    sorted_ids_.resize(static_cast<std::size_t>(pairs));
    counts_.resize(static_cast<std::size_t>(E));
    offsets_.resize(static_cast<std::size_t>(E + 1));
    status_.resize(1);
    bad_id_.resize(1);
    MESHPLAN_CUDA_CHECK(cudaMemsetAsync(status_.data(), 0xff, sizeof(unsigned long long), c.stream));
    MESHPLAN_CUDA_CHECK(cudaMemsetAsync(bad_id_.data(), 0, sizeof(int), c.stream));

    DeviceRouter::route(device_cast(x.data()), device_cast(w.router.data()),
                        w.correction_bias.empty() ? nullptr : w.correction_bias.data(), RouterParams::of(model), tokens,
                        r.ids.data(), r.weights.data(), nullptr, status_.data(), c.stream);
    std::size_t sort_bytes = 0, count_bytes = 0;
    DevicePermute::sort_by_expert(nullptr, sort_bytes, r.ids.data(), sorted_ids_.data(), r.order.data(), pairs, E,
                                  c.stream);
    DevicePermute::expert_offsets(nullptr, count_bytes, sorted_ids_.data(), pairs, E, counts_.data(), offsets_.data(),
                                  bad_id_.data(), c.stream);
    // Never empty: a null temporary is CUB's request for sizes, not a run.
    temp_.resize(std::max<std::size_t>({sort_bytes, count_bytes, 256}));
    DevicePermute::sort_by_expert(temp_.data(), sort_bytes, r.ids.data(), sorted_ids_.data(), r.order.data(), pairs,
                                  E, c.stream);
    DevicePermute::expert_offsets(temp_.data(), count_bytes, sorted_ids_.data(), pairs, E, counts_.data(),
                                  offsets_.data(), bad_id_.data(), c.stream);
    DevicePermute::inverse(r.order.data(), pairs, r.inverse.data(), c.stream);

    // The one synchronization: what the host needs to size the exchange.
    std::vector<std::int32_t> counts(static_cast<std::size_t>(E));
    unsigned long long first_bad = no_bad_logit;
    int bad_id = 0;
    MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(counts.data(), counts_.data(), counts_.bytes(), cudaMemcpyDeviceToHost, c.stream));
    MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(&first_bad, status_.data(), sizeof first_bad, cudaMemcpyDeviceToHost, c.stream));
    MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(&bad_id, bad_id_.data(), sizeof bad_id, cudaMemcpyDeviceToHost, c.stream));
    MESHPLAN_CUDA_CHECK(cudaStreamSynchronize(c.stream));
    r.problem = bad_logit(first_bad, static_cast<int>(E));
    if (r.problem.ok() && bad_id)
      r.problem = Message::rule("expert_id_valid") << "the router chose an expert outside 0.." << E - 1;
    r.counts.assign(counts.begin(), counts.end());
    return r;
  }

  static Routing host_routing(const Routed& r) {
    return {r.tokens, r.top_k, r.ids.download(r.stream), r.weights.download(r.stream)};
  }

  DeviceTensor<T> rows_by_expert(Context& c, const DeviceTensor<T>& x, const Routed& r) const {
    const index_t H = x.dim(1), pairs = r.tokens * r.top_k;
    DeviceTensor<T> out({pairs, H});
    DevicePermute::gather_rows(device_cast(x.data()), r.order.data(), r.top_k, pairs, H, device_cast(out.data()),
                               c.stream);
    return out;
  }

  template <class U>
  DeviceTensor<U> slice_rows(Context& c, const DeviceTensor<U>& t, index_t offset, index_t count) const {
    const index_t width = t.dim(1);
    DeviceTensor<U> out({count, width});
    if (count > 0)
      MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(out.data(), t.data() + offset * width, out.span().size_bytes(),
                                          cudaMemcpyDeviceToDevice, c.stream));
    return out;
  }

  template <class U>
  DeviceTensor<U> regroup(Context& c, const DeviceTensor<U>& rows, std::span<const RowBlock> blocks, bool inverse) {
    DeviceTensor<U> out(rows.shape());
    DevicePermute::regroup(device_cast(rows.data()), device_cast(out.data()), blocks, rows.dim(1), inverse, table_,
                           c.stream);
    return out;
  }

  template <class Row>
  DeviceTensor<Row> expert_mlp(Context& c, const DeviceTensor<T>& rows, const Routed* through,
                               std::span<const index_t> offsets, const Weights& w) {
    const index_t H = w.gate_up.dim(2), I = w.down.dim(2), n = offsets.empty() ? 0 : offsets.back();
    DeviceTensor<Row> out({n, H});
    experts_.grouped(device_cast(rows.data()), through ? through->order.data() : nullptr, through ? through->top_k : 1,
                     offsets, device_cast(w.gate_up.data()), device_cast(w.down.data()), H, I, device_cast(out.data()),
                     c.stream);
    return out;
  }

  template <class Row>
  DeviceTensor<float> combine(Context& c, const DeviceTensor<Row>& y, const Routed& r, index_t hidden) const {
    DeviceTensor<float> out({r.tokens, hidden});
    DevicePermute::combine(device_cast(y.data()), r.inverse.data(), r.weights.data(), r.tokens, r.top_k, hidden,
                           out.data(), c.stream);
    return out;
  }

  DeviceTensor<float> shared_mlp(Context& c, const DeviceTensor<T>& x, const Weights& w) {
    DeviceTensor<float> out({x.dim(0), x.dim(1)});
    experts_.dense(device_cast(x.data()), x.dim(0), device_cast(w.shared_gate.data()), device_cast(w.shared_up.data()),
                   device_cast(w.shared_down.data()), x.dim(1), w.shared_gate.dim(0), out.data(), c.stream);
    return out;
  }

  void add(Context& c, DeviceTensor<float>& a, const DeviceTensor<float>& b) const {
    launch_elementwise(a.numel(), [&](unsigned blocks) {
      kernels::add_into<<<blocks, elementwise_threads, 0, c.stream>>>(a.data(), b.data(), a.numel());
    });
  }

  /// round(r), or round(round(r) + round(s)), as the reference rounds.
  DeviceTensor<T> round_sum(Context& c, const DeviceTensor<float>& r, const DeviceTensor<float>* s) const {
    DeviceTensor<T> out(r.shape());
    const long long n = r.numel();
    if (s)
      launch_elementwise(n, [&](unsigned blocks) {
        kernels::add_rounded<D><<<blocks, elementwise_threads, 0, c.stream>>>(r.data(), s->data(), n,
                                                                              device_cast(out.data()));
      });
    else
      launch_elementwise(n, [&](unsigned blocks) {
        kernels::round_to<D><<<blocks, elementwise_threads, 0, c.stream>>>(r.data(), n, device_cast(out.data()));
      });
    return out;
  }

 private:
  ExpertMLP experts_;
  DeviceBuffer<std::int32_t> sorted_ids_, counts_, offsets_;
  DeviceBuffer<unsigned long long> status_;
  DeviceBuffer<int> bad_id_;
  DeviceBuffer<unsigned char> temp_;
  DeviceBuffer<kernels::RowBlock> table_;
};

}  // namespace meshplan::cuda
