#pragma once
// CpuBackend<T>: the MoE pipeline's primitives on the CPU (moe/moe_backend.hpp says what a
// backend supplies). Host tensors; the products (router, experts, shared experts) run on
// the packed, cache-blocked kernels of cpu/detail/gemm.hpp on the rank's ThreadPool, the
// activation on cpu/detail/fast_math.hpp, the combine on cpu/detail/combine.hpp; every output keeps the
// reference's summation order, so the results are those of moe/reference.hpp bit for bit
// whatever the rows, the threads or the instruction set.

#include "meshplan/core/detail/public_begin.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/detail/row_block.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/cpu/detail/backward.hpp"
#include "meshplan/cpu/detail/combine.hpp"
#include "meshplan/cpu/detail/fast_math.hpp"
#include "meshplan/cpu/detail/gemm.hpp"
#include "meshplan/cpu/isa.hpp"
#include "meshplan/cpu/detail/packed_matrix.hpp"
#include "meshplan/cpu/detail/permute.hpp"
#include "meshplan/cpu/detail/router.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/model/routing.hpp"
#include "meshplan/moe/moe_weights.hpp"

namespace meshplan {

namespace detail {
/// The ranks whose threads share this machine: all of a ThreadComm's; for processes, what
/// the launcher says (Open MPI, MPICH), else 1.
template <class C>
index_t ranks_on_this_machine(const C& comm) {
  if constexpr (std::is_same_v<C, ThreadComm>) {
    return comm.size();
  } else {
    for (const char* var : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"})
      if (const char* v = std::getenv(var)) return std::max<index_t>(1, std::atoll(v));
    return 1;
  }
}
}  // namespace detail

template <StorageType T>
class CpuBackend {
 public:
  using value_type = T;
  template <class U>
  using tensor = Tensor<U>;

  /// A rank's weights as loaded, and packed for the kernels (cpu/detail/packed_matrix.hpp: fp32
  /// panels, so bf16 weights take three times their size here in all).
  struct Weights {
    MoEWeights<T> w;
    cpu::PackedMatrix<float> router;                          // [E, H]
    std::vector<cpu::PackedMatrix<float>> gate_up, down;      // per local expert: [2I, H], [H, I]
    cpu::PackedMatrix<float> shared_gate_up, shared_down;     // [2S, H] (gate rows, then up rows), [H, S]
    // The transposes the backward's input gradients read, packed at its first call
    // (prepare_backward): a forward-only block does not pay for them.
    cpu::PackedMatrix<float> router_t;                        // [H, E]
    std::vector<cpu::PackedMatrix<float>> gate_up_t, down_t;  // per local expert: [H, 2I], [I, H]
    cpu::PackedMatrix<float> shared_gate_up_t, shared_down_t; // [H, 2S], [S, H]
  };

  /// What a grouped SwiGLU MLP's forward keeps for its backward: its fp32 pre-activations
  /// and its stored activation, and the rows it read where they are not the block's input
  /// (expert parallelism's received rows).
  struct Activations {
    Tensor<T> rows;               // [N, H], grouped; empty: read through the routing from x
    std::vector<float> gate_up;   // [N, 2I]
    std::vector<T> act;           // [N, I]
    index_t inter = 0;            // I (known with no rows too: the weight gradients are [.., 2I, H])
  };

  /// A grouped MLP's backward, before its weight gradients: the input gradient of each row
  /// and the gradient at the gate/up outputs, which the weight gradients read.
  struct MlpBackward {
    Tensor<float> dx;             // [N, H]
    std::vector<float> dgate_up;  // [N, 2I]
  };

  /// The routing of one forward: the pairs (token, slot) sorted by expert, stably.
  struct Routed {
    Routing routing;
    std::vector<std::int32_t> order;    // sorted position -> pair
    std::vector<std::int32_t> inverse;  // pair -> sorted position
    std::vector<index_t> counts;        // pairs per global expert
    Tensor<float> logits;               // [tokens, E]: the router backward's scores come from these
    Message problem;
  };

  struct Context {
    cpu::ThreadPool* pool;
    cpu::Isa isa;
  };

  /// `threads`: the threads this rank's kernels use; by default the hardware threads divided
  /// by the ranks sharing this machine (known at the first forward, from the communicator).
  CpuBackend() = default;
  explicit CpuBackend(int threads, cpu::Isa isa = cpu::active_isa())
      : pool_(std::make_unique<cpu::ThreadPool>(threads)), isa_(isa) {}
  /// Runs on a pool the caller owns and keeps alive (a whole model's layers share one).
  explicit CpuBackend(cpu::ThreadPool& shared, cpu::Isa isa = cpu::active_isa()) : shared_(&shared), isa_(isa) {}

  Weights prepare(MoEWeights<T> w) const {
    Weights p;
    const index_t E = w.gate_up.dim(0), I2 = w.gate_up.dim(1), H = w.gate_up.dim(2), I = I2 / 2;
    p.router = cpu::PackedMatrix<float>::pack(w.router.data(), w.router.dim(0), w.router.dim(1));
    for (index_t e = 0; e < E; ++e) {
      p.gate_up.push_back(cpu::PackedMatrix<float>::pack(w.gate_up.data() + e * I2 * H, I2, H));
      p.down.push_back(cpu::PackedMatrix<float>::pack(w.down.data() + e * H * I, H, I));
    }
    if (w.has_shared()) {
      const index_t S = w.shared_gate.dim(0);
      const std::vector<T> gu = shared_gate_up_rows(w);
      p.shared_gate_up = cpu::PackedMatrix<float>::pack(gu.data(), 2 * S, H);
      p.shared_down = cpu::PackedMatrix<float>::pack(w.shared_down.data(), H, S);
    }
    p.w = std::move(w);
    return p;
  }

  template <class C>
  static C& host_comm(C& comm) noexcept {
    return comm;
  }
  template <class C>
  Context context(C& comm) {
    if (shared_) return {shared_, isa_};
    if (!pool_) pool_ = std::make_unique<cpu::ThreadPool>(cpu::default_threads(detail::ranks_on_this_machine(comm)));
    return {pool_.get(), isa_};
  }
  int threads() const noexcept { return shared_ ? shared_->size() : pool_ ? pool_->size() : 0; }

  Routed route(Context& c, const Tensor<T>& x, const Weights& w, const ModelSpec& model) {
    Routed r;
    const index_t tokens = x.dim(0), E = model.num_experts;
    r.logits = Tensor<float>({tokens, E});
    cpu::gemm(cpu::GemmTask<T>{{x.data(), x.dim(1)}, tokens, &w.router, r.logits.data(), E}, *c.pool, c.isa);
    r.problem = cpu::check_logits(r.logits);
    r.counts.assign(static_cast<std::size_t>(E), 0);
    if (!r.problem.ok()) return r;
    r.routing = cpu::route(model, r.logits, w.w.correction_bias.span());
    const ExpertOrder sorted = cpu::sort_by_expert(r.routing, E);
    r.order.assign(sorted.order.begin(), sorted.order.end());
    r.inverse.resize(r.order.size());
    for (std::size_t i = 0; i < r.order.size(); ++i)
      r.inverse[static_cast<std::size_t>(r.order[i])] = static_cast<std::int32_t>(i);
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

  /// The grouped expert MLP on rows grouped by local expert (`offsets`); `through`: row i is
  /// token order[i] / top_k of `rows`, read in place.
  /// With `keep`, the pre-activations and the activation are written there for the backward.
  template <class Row>
  Tensor<Row> expert_mlp(Context& c, const Tensor<T>& rows, const Routed* through, std::span<const index_t> offsets,
                         const Weights& w, Activations* keep = nullptr) {
    const index_t H = rows.dim(1), N = offsets.empty() ? 0 : offsets.back();
    std::vector<cpu::GemmTask<T>> up;
    for (std::size_t j = 0; j + 1 < offsets.size(); ++j) {
      cpu::RowSource<T> a{rows.data(), H};
      if (through) a.index = through->order.data() + offsets[j], a.index_div = through->routing.top_k;
      else a.base = rows.data() + offsets[j] * H;
      up.push_back({a, offsets[j + 1] - offsets[j], &w.gate_up[j], nullptr, 0});
    }
    Tensor<Row> out({N, H});
    swiglu(c, up, offsets, w.down, out.data(), keep);
    return out;
  }

  template <class Row>
  Tensor<float> combine(Context& c, const Tensor<Row>& y, const Routed& r, index_t hidden) const {
    Tensor<float> out({r.routing.tokens, hidden});
    for_chunks(c, r.routing.tokens, [&](index_t t0, index_t t1) {
      cpu::combine_tokens<Row>(r.routing, y.span(), r.inverse, hidden, out.span(), t0, t1, c.isa);
    });
    return out;
  }

  Tensor<float> shared_mlp(Context& c, const Tensor<T>& x, const Weights& w, Activations* keep = nullptr) {
    std::vector<cpu::GemmTask<T>> up{{{x.data(), x.dim(1)}, x.dim(0), &w.shared_gate_up, nullptr, 0}};
    const index_t offsets[2] = {0, x.dim(0)};
    Tensor<float> out({x.dim(0), x.dim(1)});
    swiglu(c, up, offsets, std::span(&w.shared_down, 1), out.data(), keep);
    return out;
  }

  // ---- The backward's primitives (moe/moe_backend.hpp) ------------------------------------

  /// Packs the transposed weights the input gradients read (once per set of weights: the
  /// router's transpose, never empty, marks them packed).
  void prepare_backward(Context& c, Weights& p) const {
    if (p.router_t.rows() > 0) return;
    const MoEWeights<T>& w = p.w;
    const index_t E = w.gate_up.dim(0), I2 = w.gate_up.dim(1), H = w.gate_up.dim(2), I = I2 / 2;
    p.router_t = cpu::PackedMatrix<float>::pack_transposed(w.router.data(), w.router.dim(0), H, H, c.pool);
    for (index_t e = 0; e < E; ++e) {
      p.gate_up_t.push_back(cpu::PackedMatrix<float>::pack_transposed(w.gate_up.data() + e * I2 * H, I2, H, H, c.pool));
      p.down_t.push_back(cpu::PackedMatrix<float>::pack_transposed(w.down.data() + e * H * I, H, I, I, c.pool));
    }
    if (w.has_shared()) {
      const index_t S = w.shared_gate.dim(0);
      const std::vector<T> gu = shared_gate_up_rows(w);
      p.shared_gate_up_t = cpu::PackedMatrix<float>::pack_transposed(gu.data(), 2 * S, H, H, c.pool);
      p.shared_down_t = cpu::PackedMatrix<float>::pack_transposed(w.shared_down.data(), H, S, S, c.pool);
    }
  }

  /// Whether every element is finite.
  bool all_finite(Context&, const Tensor<float>& t) const {
    for (float v : t.vector())
      if (!std::isfinite(v)) return false;
    return true;
  }

  /// The combine's backward: for each pair (t, s) at sorted position i, the row gradient
  /// rows[i] = w[t, s] dy[t] and the weight's gradient dw[t, s] = <y[i], dy[t]> (one chain
  /// over h; y as the forward stored it).
  template <class Row>
  std::pair<Tensor<float>, Tensor<float>> combine_backward(Context& c, const Tensor<Row>& y, const Routed& r,
                                                           const Tensor<float>& dy) const {
    const index_t tokens = r.routing.tokens, k = r.routing.top_k, H = dy.dim(1);
    Tensor<float> rows({tokens * k, H}), dw({tokens, k});
    for_chunks(c, tokens, [&](index_t t0, index_t t1) {
      cpu::combine_backward_tokens<Row>(r.routing, y.data(), r.inverse, dy.data(), H, rows.data(), dw.data(), t0, t1,
                                        c.isa);
    });
    return {std::move(rows), std::move(dw)};
  }

  /// The logits' gradient [tokens, E] from the routing weights' gradient [tokens, k].
  Tensor<float> router_backward(Context& c, const Routed& r, const Tensor<float>& dw, const ModelSpec& model) const {
    const index_t tokens = r.routing.tokens, k = r.routing.top_k, E = model.num_experts;
    Tensor<float> dlogits({tokens, E});
    for_chunks(c, tokens, [&](index_t t0, index_t t1) {
      std::vector<float> scores(static_cast<std::size_t>(E));
      for (index_t t = t0; t < t1; ++t) {
        const auto at = static_cast<std::size_t>(t * k), n = static_cast<std::size_t>(k);
        cpu::router_scores(model, r.logits.row(t), scores);
        cpu::router_backward_row(model, scores, std::span(r.routing.experts).subspan(at, n),
                                 std::span(r.routing.weights).subspan(at, n), dw.span().subspan(at, n),
                                 dlogits.span().subspan(static_cast<std::size_t>(t * E), static_cast<std::size_t>(E)));
      }
    });
    return dlogits;
  }

  /// The router's input gradient dlogits [tokens, E] router [E, H] (one chain over e).
  Tensor<float> router_input_grad(Context& c, const Tensor<float>& dlogits, const Weights& w) const {
    const index_t tokens = dlogits.dim(0), H = w.router_t.rows();
    Tensor<float> dx({tokens, H});
    cpu::gemm(cpu::GemmTask<float>{{dlogits.data(), dlogits.dim(1)}, tokens, &w.router_t, dx.data(), H}, *c.pool, c.isa);
    return dx;
  }

  /// A grouped SwiGLU MLP's backward from the output gradient dout [N, H] (grouped by
  /// `offsets`, as the forward's rows): da = dout down, the SwiGLU's derivative, and
  /// dx = dgate_up gate_up, each a chain in the reference's order. `shared`: the shared
  /// experts' weights instead of the local experts'.
  MlpBackward mlp_backward(Context& c, const Tensor<float>& dout, std::span<const index_t> offsets,
                           const Activations& a, const Weights& w, bool shared) {
    using Packs = std::span<const cpu::PackedMatrix<float>>;
    const Packs gate_up_t = shared ? Packs(&w.shared_gate_up_t, 1) : Packs(w.gate_up_t);
    const Packs down_t = shared ? Packs(&w.shared_down_t, 1) : Packs(w.down_t);
    const index_t N = offsets.back(), H = dout.dim(1), I = down_t.empty() ? 0 : down_t.front().rows();
    std::vector<float>& da = grow(da_, N * I);
    std::vector<cpu::GemmTask<float>> tasks;
    for (std::size_t j = 0; j + 1 < offsets.size(); ++j)
      tasks.push_back({{dout.data() + offsets[j] * H, H}, offsets[j + 1] - offsets[j], &down_t[j],
                       da.data() + offsets[j] * I, I});
    cpu::gemm_batch<float>(tasks, *c.pool, c.isa);
    MlpBackward b{Tensor<float>({N, H}), std::vector<float>(static_cast<std::size_t>(N * 2 * I))};
    for_chunks(c, N, [&](index_t r0, index_t r1) {
      cpu::swiglu_grad(a.gate_up.data() + r0 * 2 * I, da.data() + r0 * I, r1 - r0, I, b.dgate_up.data() + r0 * 2 * I,
                       c.isa);
    });
    tasks.clear();
    for (std::size_t j = 0; j + 1 < offsets.size(); ++j)
      tasks.push_back({{b.dgate_up.data() + offsets[j] * 2 * I, 2 * I}, offsets[j + 1] - offsets[j], &gate_up_t[j],
                       b.dx.data() + offsets[j] * H, H});
    cpu::gemm_batch<float>(tasks, *c.pool, c.isa);
    return b;
  }

  /// Adds the weight-gradient terms of rows [first[j], +count[j]) of each group j to
  /// dgate_up [groups, 2I, H] and ddown [groups, H, I], continuing their chains (with
  /// `fresh`, starting them from +0): the rows are `rows` (grouped), or x's read through
  /// the routing when `rows` is empty.
  void mlp_weight_grads(Context& c, const Tensor<T>& x, const Routed* through, const Activations& a,
                        const Tensor<float>& dout, const MlpBackward& b, std::span<const index_t> first,
                        std::span<const index_t> count, float* dgate_up, float* ddown, bool fresh) {
    const index_t H = dout.dim(1), groups = static_cast<index_t>(first.size());
    const index_t I = a.inter;
    cpu::RowSource<T> rows{a.rows.numel() > 0 ? a.rows.data() : x.data(), H};
    if (a.rows.numel() == 0 && through) rows.index = through->order.data(), rows.index_div = through->routing.top_k;
    std::vector<cpu::OuterTerm<T>> terms;
    for (index_t j = 0; j < groups; ++j) {
      const index_t r0 = first[static_cast<std::size_t>(j)], n = count[static_cast<std::size_t>(j)];
      terms.push_back({b.dgate_up.data() + r0 * 2 * I, 2 * I, cpu::rows_from(rows, r0), n, 2 * I, H,
                       dgate_up + j * 2 * I * H, fresh});
      terms.push_back({dout.data() + r0 * H, H, cpu::RowSource<T>{a.act.data() + r0 * I, I}, n, H, I,
                       ddown + j * H * I, fresh});
    }
    cpu::accumulate_outer<T>(terms, *c.pool, c.isa, outer_packs_);
  }

  /// Adds rows [first, +count) of dlogits^T x to the router's gradient [E, H] (with
  /// `fresh`, from +0).
  void router_weight_grad(Context& c, const Tensor<T>& x, const Tensor<float>& dlogits, index_t first, index_t count,
                          float* drouter, bool fresh) {
    const index_t H = x.dim(1), E = dlogits.dim(1);
    const cpu::OuterTerm<T> term{dlogits.data() + first * E, E, {x.data() + first * H, H}, count, E, H, drouter, fresh};
    cpu::accumulate_outer<T>(std::span(&term, 1), *c.pool, c.isa, outer_packs_);
  }

  /// The input gradient of each token from its slots' row gradients (sorted order), summed
  /// in slot order from +0.
  Tensor<float> unpermute_add(Context& c, const Tensor<float>& rows, const Routed& r, index_t hidden) const {
    const index_t tokens = r.routing.tokens, k = r.routing.top_k;
    Tensor<float> dx({tokens, hidden});
    for_chunks(c, tokens, [&](index_t t0, index_t t1) {
      for (index_t t = t0; t < t1; ++t) {
        float* out = dx.data() + t * hidden;
        for (index_t s = 0; s < k; ++s) {
          const float* row = rows.data() + static_cast<index_t>(r.inverse[static_cast<std::size_t>(t * k + s)]) * hidden;
          for (index_t h = 0; h < hidden; ++h) out[h] += row[h];
        }
      }
    });
    return dx;
  }

  /// A tensor of `total` rows, zero but for `rows` placed at [offset, +rows.dim(0)).
  template <class U>
  Tensor<U> place_rows(Context&, const Tensor<U>& rows, index_t offset, index_t total) const {
    Tensor<U> out({total, rows.dim(1)});
    std::copy_n(rows.data(), rows.numel(), out.data() + offset * rows.dim(1));
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
  /// The shared experts' gate rows, then their up rows: [2S, H], as the products read them.
  static std::vector<T> shared_gate_up_rows(const MoEWeights<T>& w) {
    std::vector<T> gu(w.shared_gate.vector());
    gu.insert(gu.end(), w.shared_up.vector().begin(), w.shared_up.vector().end());
    return gu;
  }

  /// f(begin, end) over [0, n) in chunks on the pool.
  template <class F>
  static void for_chunks(Context& c, index_t n, F&& f) {
    constexpr index_t chunk = 64;
    c.pool->parallel_for((n + chunk - 1) / chunk,
                         [&](index_t i) { f(i * chunk, std::min(n, (i + 1) * chunk)); });
  }

  /// down(silu(gate x) * up x) for each group of rows: `up` holds the gate_up products
  /// (their outputs are placed here), `offsets` the groups' first rows, `down` their down
  /// projections; out [rows, H] of Row. The activation is rounded to T before the down
  /// projection, as the reference stores it.
  template <class Row>
  void swiglu(Context& c, std::vector<cpu::GemmTask<T>>& up, std::span<const index_t> offsets,
              std::span<const cpu::PackedMatrix<float>> down, Row* out, Activations* keep) {
    const index_t N = offsets.back();
    const index_t I2 = up.empty() ? 0 : up.front().b->rows(), I = I2 / 2, H = down.empty() ? 0 : down.front().rows();
    // Workspaces kept from one forward to the next: fresh pages for every forward cost more
    // than the activation itself. A training forward writes straight into what it keeps.
    if (keep) {
      keep->inter = I;
      keep->gate_up.resize(static_cast<std::size_t>(N * I2));
      keep->act.resize(static_cast<std::size_t>(N * I));
    }
    std::vector<float>& gu = keep ? keep->gate_up : grow(gate_up_, N * I2);
    std::vector<T>& act = keep ? keep->act : grow(act_, N * I);
    for (std::size_t j = 0; j < up.size(); ++j) up[j].c = gu.data() + offsets[j] * I2, up[j].ldc = I2;
    cpu::gemm_batch<T>(up, *c.pool, c.isa);
    for_chunks(c, N, [&](index_t r0, index_t r1) {
      cpu::silu_mul<T>(gu.data() + r0 * I2, r1 - r0, I, I2, act.data() + r0 * I, I, c.isa);
    });
    std::vector<float>& y = grow(down_out_, std::is_same_v<Row, float> ? 0 : N * H);
    float* y_out = std::is_same_v<Row, float> ? reinterpret_cast<float*>(out) : y.data();
    std::vector<cpu::GemmTask<T>> tasks;
    for (std::size_t j = 0; j < up.size(); ++j)
      tasks.push_back({{act.data() + offsets[j] * I, I}, up[j].m, &down[j], y_out + offsets[j] * H, H});
    cpu::gemm_batch<T>(tasks, *c.pool, c.isa);
    if constexpr (!std::is_same_v<Row, float>)
      for_chunks(c, N, [&](index_t r0, index_t r1) {
        for (index_t i = r0 * H; i < r1 * H; ++i) out[i] = from_float<Row>(y[static_cast<std::size_t>(i)]);
      });
  }

  template <class U>
  static std::vector<U>& grow(std::vector<U>& v, index_t n) {
    if (static_cast<index_t>(v.size()) < n) v.resize(static_cast<std::size_t>(n));
    return v;
  }

  std::unique_ptr<cpu::ThreadPool> pool_;
  cpu::ThreadPool* shared_ = nullptr;  // not owned
  cpu::Isa isa_ = cpu::active_isa();
  std::vector<float> gate_up_, down_out_, da_;
  std::vector<T> act_;
  std::vector<cpu::PackedMatrix<float>> outer_packs_;  // the weight gradients' packed rows (cpu::accumulate_outer)
};

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
