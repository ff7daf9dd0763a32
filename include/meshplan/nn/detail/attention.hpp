#pragma once
// Grouped-query attention (Qwen3, Qwen3-MoE, Mixtral) as transformers runs it eagerly:
// q, k, v projections, Qwen3's per-head RMSNorm on q and k, rotary embeddings, causal
// softmax attention within each sequence (query head h reads key/value head
// h / (heads / kv_heads)), and the output projection.
//
// Under tensor parallelism q, k and v are colwise (a rank holds whole heads: heads and
// kv_heads divide by the axis, a rule validation checks) and o_proj is rowwise: its
// partial sums are all-reduced, or reduce-scattered onto sequence shards (sequence
// parallel, where the scope gathers the shards on entry). The per-head norms see a rank's
// heads only; their weight gradients are all-reduced over the axis after the token sum.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <optional>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "meshplan/core/tensor.hpp"
#include "meshplan/cpu/detail/attention.hpp"
#include "meshplan/cpu/detail/rotary.hpp"
#include "meshplan/nn/detail/linear.hpp"
#include "meshplan/nn/detail/param.hpp"
#include "meshplan/nn/detail/rms_norm.hpp"
#include "meshplan/nn/detail/rowwise_output.hpp"
#include "meshplan/nn/detail/scope.hpp"

namespace meshplan::nn {

/// The sequences of a rank's batch: their lengths, and each token's position.
struct Sequences {
  std::vector<index_t> lengths;
  std::vector<index_t> positions;
  index_t tokens() const noexcept { return static_cast<index_t>(positions.size()); }
  static Sequences equal(index_t count, index_t length) {
    Sequences s;
    s.lengths.assign(static_cast<std::size_t>(count), length);
    for (index_t i = 0; i < count; ++i)
      for (index_t p = 0; p < length; ++p) s.positions.push_back(p);
    return s;
  }
};

struct GqaShape {
  index_t heads = 0, kv_heads = 0, head_dim = 0;  // this rank's
  float scaling = 1.0f;
  double rope_theta = 10000.0;
};

class GqaAttention {
 public:
  struct Kept {
    Tensor<float> x;              // the scope's input after its entry hook [T, H]
    Tensor<float> q, k, v;        // after norm and rope: [T, heads * d], [T, kv * d] x2
    Tensor<float> o;              // attention output [T, heads * d]
    std::vector<float> lse;       // [T, heads]
    RmsNorm::Kept q_norm, k_norm; // the norms' inputs
  };

  GqaAttention() = default;
  GqaAttention(Param q, Param k, Param v, Param o, std::optional<RmsNorm> q_norm, std::optional<RmsNorm> k_norm,
               std::optional<Group> norm_grad_group, GqaShape shape, Scope scope,
               std::optional<AxisStyle> o_split, TokenGroup tokens)
      : q_(std::move(q)), k_(std::move(k)), v_(std::move(v)), o_(std::move(o)), q_norm_(std::move(q_norm)),
        k_norm_(std::move(k_norm)), norm_grad_group_(std::move(norm_grad_group)), shape_(shape),
        scope_(std::move(scope)), o_out_{std::move(o_split)}, tokens_(std::move(tokens)) {
    repack();
  }

  std::vector<Param*> params() {
    std::vector<Param*> p{&q_, &k_, &v_, &o_};
    if (q_norm_) p.push_back(&q_norm_->weight());
    if (k_norm_) p.push_back(&k_norm_->weight());
    return p;
  }

  void repack() {
    const index_t H = q_.value.dim(1), nq = q_.value.dim(0), nk = k_.value.dim(0);
    Tensor<float> stacked({nq + 2 * nk, H});
    std::copy_n(q_.value.data(), nq * H, stacked.data());
    std::copy_n(k_.value.data(), nk * H, stacked.data() + nq * H);
    std::copy_n(v_.value.data(), nk * H, stacked.data() + (nq + nk) * H);
    qkv_.set_weight(std::move(stacked));
    o_piece_.set_weight(o_.value);
  }

  template <Communicator C>
  Tensor<float> forward(C& comm, const CpuContext& c, const Tensor<float>& x_in, const Sequences& seq,
                        Kept* keep) const {
    Kept k;
    k.x = scope_.enter(comm, x_in, "attention gather");
    const index_t T = k.x.dim(0), d = shape_.head_dim, nq = shape_.heads * d, nk = shape_.kv_heads * d;
    const Tensor<float> qkv = qkv_.forward(c, k.x);
    k.q = column_block(qkv, 0, nq);
    k.k = column_block(qkv, nq, nk);
    k.v = column_block(qkv, nq + nk, nk);
    if (q_norm_) k.q = q_norm_->forward(k.q, &k.q_norm);
    if (k_norm_) k.k = k_norm_->forward(k.k, &k.k_norm);
    const cpu::RopeTable rope(seq.positions, d, shape_.rope_theta);
    cpu::rope_forward(k.q.data(), T, shape_.heads, d, 0, d, rope, false);
    cpu::rope_forward(k.k.data(), T, shape_.kv_heads, d, 0, d, rope, false);
    k.o = Tensor<float>({T, nq});
    k.lse.resize(static_cast<std::size_t>(T * shape_.heads));
    cpu::attention_forward(k.q.data(), k.k.data(), k.v.data(), seq.lengths, shape_.heads, shape_.kv_heads, d, d,
                           shape_.scaling, k.o.data(), k.lse.data(), c.pool);
    Tensor<float> y = o_piece_.forward(c, k.o);
    if (keep) *keep = std::move(k);
    return scope_.exit(comm, o_out_.finish(comm, std::move(y), "attention o_proj"), "attention exit");
  }

  template <Communicator C>
  Tensor<float> backward(C& comm, const CpuContext& c, const Tensor<float>& dy_scope, const Sequences& seq, Kept& k) {
    const Tensor<float> dy_out = scope_.exit_backward(dy_scope);
    const Tensor<float> dy = o_out_.output_grad(comm, dy_out, "attention backward gather");
    const index_t T = k.x.dim(0), H = k.x.dim(1), d = shape_.head_dim, nq = shape_.heads * d,
                  nk = shape_.kv_heads * d;
    Tensor<float> d_o({T, nq});
    o_piece_.backward_input(c, dy.data(), T, H, d_o.data(), nq);
    Tensor<float> dq({T, nq}), dk({T, nk}), dv({T, nk});
    cpu::attention_backward(k.q.data(), k.k.data(), k.v.data(), k.o.data(), d_o.data(), k.lse.data(), seq.lengths,
                            shape_.heads, shape_.kv_heads, d, d, shape_.scaling, dq.data(), dk.data(), dv.data(),
                            c.pool);
    const cpu::RopeTable rope(seq.positions, d, shape_.rope_theta);
    cpu::rope_backward(dq.data(), T, shape_.heads, d, 0, d, rope, false);
    cpu::rope_backward(dk.data(), T, shape_.kv_heads, d, 0, d, rope, false);
    if (q_norm_) dq = q_norm_->backward(comm, dq, k.q_norm, norm_grad_group_);
    if (k_norm_) dk = k_norm_->backward(comm, dk, k.k_norm, norm_grad_group_);

    // dx = [dq | dk | dv] [Wq; Wk; Wv]: one product over the stacked rows.
    Tensor<float> dqkv({T, nq + 2 * nk});
    for (index_t t = 0; t < T; ++t) {
      float* row = dqkv.data() + t * (nq + 2 * nk);
      std::copy_n(dq.data() + t * nq, nq, row);
      std::copy_n(dk.data() + t * nk, nk, row + nq);
      std::copy_n(dv.data() + t * nk, nk, row + nq + nk);
    }
    Tensor<float> dx({T, H});
    qkv_.backward_input(c, dqkv.data(), T, nq + 2 * nk, dx.data(), H);

    const index_t ld = nq + 2 * nk;
    // The projections' inputs: x for q, k, v; the attention output for o_proj.
    GradientSum s{tokens_, {&q_, &k_, &v_, &o_}, [&](bool fresh) {
                    const cpu::OuterTerm<float> terms[] = {
                        {dqkv.data(), ld, {k.x.data(), H}, T, nq, H, q_.grad.data(), fresh},
                        {dqkv.data() + nq, ld, {k.x.data(), H}, T, nk, H, k_.grad.data(), fresh},
                        {dqkv.data() + nq + nk, ld, {k.x.data(), H}, T, nk, H, v_.grad.data(), fresh},
                        o_piece_.weight_term(dy.data(), H, k.o.data(), nq, T, o_.grad.data(), fresh)};
                    outer_.run(c, terms);
                  },
                  std::nullopt};
    finish_gradients(comm, s, "attention grad");
    return scope_.enter_backward(comm, std::move(dx), "attention input grad");
  }

 private:
  Param q_, k_, v_, o_;
  std::optional<RmsNorm> q_norm_, k_norm_;
  std::optional<Group> norm_grad_group_;
  GqaShape shape_;
  Scope scope_;
  RowwiseOutput o_out_;
  TokenGroup tokens_;
  LinearPiece qkv_, o_piece_;
  OuterProducts outer_;
};

}  // namespace meshplan::nn
