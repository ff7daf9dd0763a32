#pragma once
// CpuBackend<T>: the MoE pipeline's primitives on the CPU (moe/moe_backend.hpp says what a
// backend supplies). Host tensors; the products run on the cache-blocked kernels of
// cpu/gemm.hpp on the rank's thread pool; every output keeps the reference's summation
// order, so the results are those of moe/reference.hpp bit for bit whatever the rows, the
// threads or the instruction set.

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/row_block.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/cpu/combine.hpp"
#include "meshplan/cpu/experts.hpp"
#include "meshplan/cpu/permute.hpp"
#include "meshplan/cpu/router.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/model/routing.hpp"
#include "meshplan/moe/moe_weights.hpp"

namespace meshplan {

template <StorageType T>
class CpuBackend {
 public:
  using value_type = T;
  template <class U>
  using tensor = Tensor<U>;

  /// A rank's weights as they were loaded.
  struct Weights {
    MoEWeights<T> w;
  };

  /// The routing of one forward: the pairs (token, slot) sorted by expert, stably.
  struct Routed {
    Routing routing;
    std::vector<std::int32_t> order;    // sorted position -> pair
    std::vector<std::int32_t> inverse;  // pair -> sorted position
    std::vector<index_t> counts;        // pairs per global expert
    Message problem;
  };

  struct Context {};

  /// `threads`: the threads this rank's kernels use; 0 picks the hardware threads divided by
  /// the ranks sharing this machine.
  CpuBackend() = default;
  explicit CpuBackend(int threads) : threads_(threads) {}

  Weights prepare(MoEWeights<T> w) const { return {std::move(w)}; }

  template <class C>
  static C& host_comm(C& comm) noexcept {
    return comm;
  }
  template <class C>
  Context context(C&) {
    return {};
  }
  int threads() const noexcept { return threads_; }

  Routed route(Context&, const Tensor<T>& x, const Weights& w, const ModelSpec& model) {
    Routed r;
    const Tensor<float> logits = cpu::router_logits(x, w.w.router);
    r.problem = cpu::check_logits(logits);
    r.counts.assign(static_cast<std::size_t>(model.num_experts), 0);
    if (!r.problem.ok()) return r;
    r.routing = cpu::route(model, logits, w.w.correction_bias.span());
    const ExpertOrder sorted = cpu::sort_by_expert(r.routing, model.num_experts);
    r.order.assign(sorted.order.begin(), sorted.order.end());
    r.inverse.resize(r.order.size());
    for (std::size_t i = 0; i < r.order.size(); ++i) r.inverse[static_cast<std::size_t>(r.order[i])] = static_cast<std::int32_t>(i);
    r.counts = sorted.counts;
    return r;
  }

  static Routing host_routing(const Routed& r) { return r.routing; }

  Tensor<T> rows_by_expert(Context&, const Tensor<T>& x, const Routed& r) const {
    const index_t H = x.dim(1), k = r.routing.top_k;
    Tensor<T> out({static_cast<index_t>(r.order.size()), H});
    for (std::size_t i = 0; i < r.order.size(); ++i)
      std::copy_n(x.data() + (r.order[i] / k) * H, H, out.data() + static_cast<index_t>(i) * H);
    return out;
  }

  template <class U>
  Tensor<U> slice_rows(Context&, const Tensor<U>& t, index_t offset, index_t count) const {
    const index_t width = t.dim(1);
    return Tensor<U>({count, width}, std::vector<U>(t.data() + offset * width, t.data() + (offset + count) * width));
  }

  template <class U>
  Tensor<U> regroup(Context&, const Tensor<U>& rows, std::span<const RowBlock> blocks, bool inverse) const {
    Tensor<U> out(rows.shape());
    cpu::copy_row_blocks<U>(rows.span(), blocks, rows.dim(1), inverse, out.span());
    return out;
  }

  /// The grouped expert MLP on rows grouped by local expert; `through`: read token
  /// order[i] / top_k as row i.
  template <class Row>
  Tensor<Row> expert_mlp(Context& ctx, const Tensor<T>& rows, const Routed* through, std::span<const index_t> offsets,
                         const Weights& w) const {
    const Tensor<T> grouped = through ? rows_by_expert(ctx, rows, *through) : Tensor<T>();
    const Tensor<T>& in = through ? grouped : rows;
    const index_t H = w.w.gate_up.dim(2);
    std::vector<float> y(static_cast<std::size_t>(in.dim(0) * H));
    cpu::grouped_expert_mlp<T>(in.span(), offsets, w.w.gate_up, w.w.down, y);
    Tensor<Row> out({in.dim(0), H});
    for (std::size_t i = 0; i < y.size(); ++i) out[static_cast<index_t>(i)] = from_float<Row>(y[i]);
    return out;
  }

  template <class Row>
  Tensor<float> combine(Context&, const Tensor<Row>& y, const Routed& r, index_t hidden) const {
    Tensor<float> out({r.routing.tokens, hidden});
    cpu::combine<Row>(r.routing, y.span(), r.inverse, hidden, out.span());
    return out;
  }

  Tensor<float> shared_mlp(Context&, const Tensor<T>& x, const Weights& w) const {
    Tensor<float> out({x.dim(0), x.dim(1)});
    cpu::dense_mlp(x, w.w.shared_gate, w.w.shared_up, w.w.shared_down, out.span());
    return out;
  }

  void add(Context&, Tensor<float>& a, const Tensor<float>& b) const {
    for (index_t i = 0; i < a.numel(); ++i) a[i] += b[i];
  }

  Tensor<T> round_sum(Context&, const Tensor<float>& r, const Tensor<float>* s) const {
    Tensor<T> out(r.shape());
    for (index_t i = 0; i < out.numel(); ++i) {
      float v = to_float(from_float<T>(r[i]));
      if (s) v += to_float(from_float<T>((*s)[i]));
      out[i] = from_float<T>(v);
    }
    return out;
  }

 private:
  int threads_ = 0;
};

}  // namespace meshplan
