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
//
// Training (moe/moe_block.hpp's backward): the same primitives as CpuBackend's. A forward
// that keeps its activations runs the experts on cuBLAS (the fused kernels never write the
// pre-activations out) and keeps the fp32 gate/up pre-activations and the stored activation
// it computed its output from; the router always keeps its logits. The input gradients'
// products (da = dout down, dx = dgate_up gate_up, the router's dx = dlogits router) are
// cuBLAS GEMMs on the weights as stored, through OP_N (fp32; bf16 weights widened once, at
// the first backward), in fixed-shape chunks like the forward's; the weight gradients are
// backward_kernels.cuh's chain kernel, one fmaf chain per output over the rows in order,
// continued from what the gradient holds, so the ordered sums over ranks give one rank's
// bits; the rest are small kernels there (combine, router and SwiGLU backward,
// unpermute-add, the finiteness check: one device-to-host copy).

#include "meshplan/core/detail/public_begin.hpp"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/detail/row_block.hpp"
#include "meshplan/cuda/core/buffer.cuh"
#include "meshplan/cuda/core/device_tensor.cuh"
#include "meshplan/cuda/core/detail/device_types.cuh"
#include "meshplan/cuda/core/detail/launch.cuh"
#include "meshplan/cuda/experts/detail/cublas_dgrad.cuh"
#include "meshplan/cuda/experts/cublas_experts.cuh"
#include "meshplan/cuda/experts/detail/expert_mlp.cuh"
#include "meshplan/cuda/moe/detail/backward_kernels.cuh"
#include "meshplan/cuda/moe/detail/device_weights.cuh"
#include "meshplan/cuda/permute/device_permute.cuh"
#include "meshplan/cuda/permute/detail/kernels.cuh"
#include "meshplan/cuda/router/device_router.cuh"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/model/routing.hpp"
#include "meshplan/moe/moe_backend.hpp"
#include "meshplan/moe/moe_gradients.hpp"
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
    DeviceBuffer<float> logits;   // [tokens, E]: the router backward's scores come from these
    std::vector<index_t> counts;  // pairs per global expert, on the host
    Message problem;
    cudaStream_t stream = nullptr;  // where the routing was computed (host_routing waits for it)
  };

  struct Context {
    cudaStream_t stream;
  };

  /// What a grouped or dense SwiGLU MLP's forward keeps for its backward: its fp32
  /// pre-activations and its stored activation, and the rows it read where they are not the
  /// block's input (expert parallelism's received rows).
  struct Activations {
    DeviceTensor<T> rows;          // [N, H], grouped; empty: read through the routing from x
    DeviceBuffer<float> gate_up;   // [N, 2I]
    DeviceBuffer<T> act;           // [N, I]
    index_t inter = 0;             // I (known with no rows too: the weight gradients are [.., 2I, H])
  };

  /// A grouped MLP's backward, before its weight gradients: the input gradient of each row
  /// and the gradient at the gate/up outputs, which the weight gradients read.
  struct MlpBackward {
    DeviceTensor<float> dx;          // [N, H]
    DeviceBuffer<float> dgate_up;    // [N, 2I]
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
    r.logits.resize(static_cast<std::size_t>(tokens * E));
    sorted_ids_.resize(static_cast<std::size_t>(pairs));
    counts_.resize(static_cast<std::size_t>(E));
    offsets_.resize(static_cast<std::size_t>(E + 1));
    status_.resize(1);
    bad_id_.resize(1);
    MESHPLAN_CUDA_CHECK(cudaMemsetAsync(status_.data(), 0xff, sizeof(unsigned long long), c.stream));
    MESHPLAN_CUDA_CHECK(cudaMemsetAsync(bad_id_.data(), 0, sizeof(int), c.stream));

    DeviceRouter::route(device_cast(x.data()), device_cast(w.router.data()),
                        w.correction_bias.empty() ? nullptr : w.correction_bias.data(), RouterParams::of(model), tokens,
                        r.ids.data(), r.weights.data(), r.logits.data(), status_.data(), c.stream);
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

  /// The grouped expert MLP; with `keep`, on cuBLAS, keeping the pre-activations and the
  /// activation there for the backward.
  template <class Row>
  DeviceTensor<Row> expert_mlp(Context& c, const DeviceTensor<T>& rows, const Routed* through,
                               std::span<const index_t> offsets, const Weights& w, Activations* keep = nullptr) {
    const index_t H = w.gate_up.dim(2), I = w.down.dim(2), n = offsets.empty() ? 0 : offsets.back();
    DeviceTensor<Row> out({n, H});
    experts_.grouped(device_cast(rows.data()), through ? through->order.data() : nullptr, through ? through->top_k : 1,
                     offsets, device_cast(w.gate_up.data()), device_cast(w.down.data()), H, I, device_cast(out.data()),
                     c.stream, kept(keep, n, I));
    return out;
  }

  template <class Row>
  DeviceTensor<float> combine(Context& c, const DeviceTensor<Row>& y, const Routed& r, index_t hidden) const {
    DeviceTensor<float> out({r.tokens, hidden});
    DevicePermute::combine(device_cast(y.data()), r.inverse.data(), r.weights.data(), r.tokens, r.top_k, hidden,
                           out.data(), c.stream);
    return out;
  }

  DeviceTensor<float> shared_mlp(Context& c, const DeviceTensor<T>& x, const Weights& w, Activations* keep = nullptr) {
    DeviceTensor<float> out({x.dim(0), x.dim(1)});
    experts_.dense(device_cast(x.data()), x.dim(0), device_cast(w.shared_gate.data()), device_cast(w.shared_up.data()),
                   device_cast(w.shared_down.data()), x.dim(1), w.shared_gate.dim(0), out.data(), c.stream,
                   kept(keep, x.dim(0), w.shared_gate.dim(0)));
    return out;
  }

  // ---- The backward's primitives (moe/moe_backend.hpp) ------------------------------------

  /// The fp32 weights the input gradients' products read (once per set of weights), and
  /// the cuBLAS handle they run on (once per backend).
  void prepare_backward(Context& c, Weights& w) {
    if (!dgrad_) dgrad_.emplace();
    if (w.backward_ready) return;
    if constexpr (!std::is_same_v<T, float>) {
      w.router32 = widened(c, w.router);
      w.gate_up32 = widened(c, w.gate_up);
      w.down32 = widened(c, w.down);
      if (w.has_shared()) w.shared_down32 = widened(c, w.shared_down);
    }
    if (w.has_shared()) {
      const index_t S = w.shared_gate.dim(0), H = w.shared_gate.dim(1);
      w.shared_gate_up32 = DeviceTensor<float>({2 * S, H});
      DeviceBackward::widen(device_cast(w.shared_gate.data()), S * H, w.shared_gate_up32.data(), c.stream);
      DeviceBackward::widen(device_cast(w.shared_up.data()), S * H, w.shared_gate_up32.data() + S * H, c.stream);
    }
    w.backward_ready = true;
  }

  /// Whether every element is finite: a reduction on the device and one copy to the host.
  bool all_finite(Context& c, const DeviceTensor<float>& t) {
    if (t.numel() == 0) return true;
    flag_.resize(1);
    MESHPLAN_CUDA_CHECK(cudaMemsetAsync(flag_.data(), 0, sizeof(int), c.stream));
    DeviceBackward::find_non_finite(t.data(), t.numel(), flag_.data(), c.stream);
    int bad = 0;
    MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(&bad, flag_.data(), sizeof bad, cudaMemcpyDeviceToHost, c.stream));
    MESHPLAN_CUDA_CHECK(cudaStreamSynchronize(c.stream));
    return bad == 0;
  }

  /// A tensor of `total` rows, zero but for `rows` placed at [offset, +rows.dim(0)).
  template <class U>
  DeviceTensor<U> place_rows(Context& c, const DeviceTensor<U>& rows, index_t offset, index_t total) const {
    const index_t width = rows.dim(1);
    DeviceTensor<U> out({total, width});
    if (out.numel() > 0)
      MESHPLAN_CUDA_CHECK(cudaMemsetAsync(out.data(), 0, out.span().size_bytes(), c.stream));
    if (rows.numel() > 0)
      MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(out.data() + offset * width, rows.data(), rows.span().size_bytes(),
                                          cudaMemcpyDeviceToDevice, c.stream));
    return out;
  }

  /// The combine's backward: for each pair (t, s) at sorted position i, rows[i] = w[t, s]
  /// dy[t] and dw[t, s] = <y[i], dy[t]> (one chain over h; y as the forward stored it).
  template <class Row>
  std::pair<DeviceTensor<float>, DeviceTensor<float>> combine_backward(Context& c, const DeviceTensor<Row>& y,
                                                                       const Routed& r,
                                                                       const DeviceTensor<float>& dy) const {
    const index_t H = dy.dim(1);
    DeviceTensor<float> rows({r.tokens * r.top_k, H}), dw({r.tokens, r.top_k});
    DeviceBackward::combine_backward(device_cast(y.data()), r.inverse.data(), r.weights.data(), r.tokens, r.top_k, H,
                                     dy.data(), rows.data(), dw.data(), c.stream);
    return {std::move(rows), std::move(dw)};
  }

  /// The logits' gradient [tokens, E] from the routing weights' gradient [tokens, k].
  DeviceTensor<float> router_backward(Context& c, const Routed& r, const DeviceTensor<float>& dw,
                                      const ModelSpec& model) const {
    DeviceTensor<float> dlogits({r.tokens, model.num_experts});
    DeviceBackward::router_backward(r.logits.data(), r.ids.data(), r.weights.data(), dw.data(), RouterParams::of(model),
                                    r.tokens, dlogits.data(), c.stream);
    return dlogits;
  }

  /// The router's input gradient dlogits [tokens, E] router [E, H].
  DeviceTensor<float> router_input_grad(Context& c, const DeviceTensor<float>& dlogits, const Weights& w) {
    const index_t tokens = dlogits.dim(0), E = dlogits.dim(1), H = w.router.dim(1);
    DeviceTensor<float> dx({tokens, H});
    dgrad(c).rows_times(dlogits.data(), tokens, E, fp32(w.router, w.router32), H, dx.data(), c.stream);
    return dx;
  }

  /// A grouped SwiGLU MLP's backward from the output gradient dout [N, H] (grouped by
  /// `offsets`, as the forward's rows): da = dout down, the SwiGLU's derivative from the
  /// kept pre-activations, and dx = dgate_up gate_up. `shared`: the shared experts.
  MlpBackward mlp_backward(Context& c, const DeviceTensor<float>& dout, std::span<const index_t> offsets,
                           const Activations& a, const Weights& w, bool shared) {
    const index_t N = offsets.back(), H = dout.dim(1);
    const index_t I = shared ? w.shared_gate.dim(0) : w.down.dim(2);
    const float* down = shared ? fp32(w.shared_down, w.shared_down32) : fp32(w.down, w.down32);
    const float* gate_up = shared ? w.shared_gate_up32.data() : fp32(w.gate_up, w.gate_up32);
    da_.resize(static_cast<std::size_t>(N * I));
    MlpBackward b{DeviceTensor<float>({N, H}), DeviceBuffer<float>(static_cast<std::size_t>(N * 2 * I))};
    CublasDgrad& gemm = dgrad(c);
    for (std::size_t j = 0; j + 1 < offsets.size(); ++j) {
      const index_t o = offsets[j], n = offsets[j + 1] - o, e = static_cast<index_t>(j);
      gemm.rows_times(dout.data() + o * H, n, H, down + e * H * I, I, da_.data() + o * I, c.stream);
    }
    DeviceBackward::swiglu_backward(a.gate_up.data(), da_.data(), N, I, b.dgate_up.data(), c.stream);
    for (std::size_t j = 0; j + 1 < offsets.size(); ++j) {
      const index_t o = offsets[j], n = offsets[j + 1] - o, e = static_cast<index_t>(j);
      gemm.rows_times(b.dgate_up.data() + o * 2 * I, n, 2 * I, gate_up + e * 2 * I * H, H, b.dx.data() + o * H,
                      c.stream);
    }
    return b;
  }

  /// Adds the weight-gradient terms of rows [first[j], +count[j]) of each group j to
  /// dgate_up [groups, 2I, H] and ddown [groups, H, I] (device memory), continuing their
  /// chains (with `fresh`, starting them from +0): the rows are `a.rows` (grouped), or x's
  /// read through the routing when those are empty.
  void mlp_weight_grads(Context& c, const DeviceTensor<T>& x, const Routed* through, const Activations& a,
                        const DeviceTensor<float>& dout, const MlpBackward& b, std::span<const index_t> first,
                        std::span<const index_t> count, float* dgate_up, float* ddown, bool fresh) const {
    const index_t H = dout.dim(1), I = a.inter;
    const bool grouped = a.rows.numel() > 0;
    const D* rows = device_cast(grouped ? a.rows.data() : x.data());
    const std::int32_t* index = !grouped && through ? through->order.data() : nullptr;
    for (std::size_t j = 0; j < first.size(); ++j) {
      const index_t r0 = first[j], n = count[j], e = static_cast<index_t>(j);
      DeviceOuterTerm<D> gu{b.dgate_up.data() + r0 * 2 * I, 2 * I, rows, H, nullptr, 1, n, 2 * I, H,
                            dgate_up + e * 2 * I * H, fresh};
      if (index) gu.index = index + r0, gu.index_div = static_cast<int>(through->top_k);
      else gu.x = rows + r0 * H;
      DeviceBackward::accumulate_outer(gu, c.stream);
      const DeviceOuterTerm<D> dn{dout.data() + r0 * H, H, device_cast(a.act.data()) + r0 * I, I, nullptr, 1, n, H, I,
                                  ddown + e * H * I, fresh};
      DeviceBackward::accumulate_outer(dn, c.stream);
    }
  }

  /// Adds rows [first, +count) of dlogits^T x to the router's gradient [E, H] (device
  /// memory; with `fresh`, from +0).
  void router_weight_grad(Context& c, const DeviceTensor<T>& x, const DeviceTensor<float>& dlogits, index_t first,
                          index_t count, float* drouter, bool fresh) const {
    const index_t H = x.dim(1), E = dlogits.dim(1);
    const DeviceOuterTerm<D> term{dlogits.data() + first * E, E, device_cast(x.data()) + first * H, H, nullptr, 1,
                                  count, E, H, drouter, fresh};
    DeviceBackward::accumulate_outer(term, c.stream);
  }

  /// The input gradient of each token from its slots' row gradients (sorted order), summed
  /// in slot order from +0.
  DeviceTensor<float> unpermute_add(Context& c, const DeviceTensor<float>& rows, const Routed& r,
                                    index_t hidden) const {
    DeviceTensor<float> dx({r.tokens, hidden});
    DeviceBackward::unpermute_add(rows.data(), r.inverse.data(), r.tokens, r.top_k, hidden, dx.data(), c.stream);
    return dx;
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
  /// Where a forward keeps an MLP's activations for n rows of intermediate width I.
  static KeptActivations<D> kept(Activations* keep, index_t n, index_t I) {
    if (!keep) return {};
    keep->inter = I;
    keep->gate_up.resize(static_cast<std::size_t>(n * 2 * I));
    keep->act.resize(static_cast<std::size_t>(n * I));
    return {keep->gate_up.data(), device_cast(keep->act.data())};
  }

  /// A weight as the backward's products read it: itself (fp32 storage) or its fp32 copy.
  static const float* fp32(const DeviceTensor<T>& w, const DeviceTensor<float>& wide) {
    if constexpr (std::is_same_v<T, float>) return w.data();
    else return wide.data();
  }

  DeviceTensor<float> widened(Context& c, const DeviceTensor<T>& t) const {
    DeviceTensor<float> out(t.shape());
    DeviceBackward::widen(device_cast(t.data()), t.numel(), out.data(), c.stream);
    return out;
  }

  CublasDgrad& dgrad(Context&) {
    if (!dgrad_) dgrad_.emplace();
    return *dgrad_;
  }

  ExpertMLP experts_;
  DeviceBuffer<std::int32_t> sorted_ids_, counts_, offsets_;
  DeviceBuffer<unsigned long long> status_;
  DeviceBuffer<int> bad_id_;
  DeviceBuffer<unsigned char> temp_;
  DeviceBuffer<kernels::RowBlock> table_;
  std::optional<CublasDgrad> dgrad_;  // the backward's products (made at the first backward)
  DeviceBuffer<float> da_;            // mlp_backward's activation gradient
  DeviceBuffer<int> flag_;            // all_finite's
};

/// A CUDA block's gradients (MoEBlock<..., CudaBackend<T>>::Gradients), in device memory.
using DeviceMoEGradients = BasicMoEGradients<DeviceTensor<float>>;

/// The gradients copied to the host (waits for `stream`).
inline MoEGradients to_host(const DeviceMoEGradients& g, cudaStream_t stream) {
  return map_gradients<Tensor<float>>(g, [&](const DeviceTensor<float>& t) { return to_host(t, stream); });
}

}  // namespace meshplan::cuda

#include "meshplan/core/detail/public_end.hpp"
