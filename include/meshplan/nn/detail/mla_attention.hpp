#pragma once
// DeepSeek-V3's multi-head latent attention as transformers runs it eagerly:
//
//   q        = q_b_proj(q_a_layernorm(q_a_proj(x)))        (or q_proj(x) without q_lora_rank)
//              per head [q_nope | q_rope]
//   latent   = kv_a_proj_with_mqa(x) = [kv | k_rope]         k_rope one head, shared by all
//   kv       = kv_b_proj(kv_a_layernorm(kv))  per head [k_nope | v]
//   q_rope, k_rope rotated (interleaved pairs when rope_interleave: the rotated dims come
//   out de-interleaved, in q and k alike, so the scores are those of the paired rotation)
//   attention over key [k_nope | k_rope] and v, scaled by qk_head_dim^-1/2; o_proj.
//
// Under tensor parallelism the up-projections (q_b_proj or q_proj, kv_b_proj) split the
// heads and o_proj is rowwise; the low-rank down-projections and their norms stay whole.
// In the backward the latents' gradients from a rank's heads are partial sums: they are
// all-reduced over the axis at the latent width (q_lora_rank + kv_lora_rank + rope dims,
// far narrower than hidden), after which the whole down-projections see whole gradients,
// and the input gradient is whole on every rank of the axis.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "meshplan/core/tensor.hpp"
#include "meshplan/cpu/detail/attention.hpp"
#include "meshplan/cpu/detail/rotary.hpp"
#include "meshplan/nn/detail/attention.hpp"
#include "meshplan/nn/detail/linear.hpp"
#include "meshplan/nn/detail/param.hpp"
#include "meshplan/nn/detail/rms_norm.hpp"
#include "meshplan/nn/detail/rowwise_output.hpp"
#include "meshplan/nn/detail/scope.hpp"

namespace meshplan::nn {

struct MlaShape {
  index_t heads = 0;  // this rank's
  index_t q_lora = 0, kv_lora = 0, nope = 0, rope = 0, v = 0;
  float scaling = 1.0f;
  double rope_theta = 10000.0;
  bool interleaved = true;
  index_t qk() const noexcept { return nope + rope; }
};

class MlaAttention {
 public:
  struct Kept {
    Tensor<float> x;                 // the scope's input after its entry hook [T, H]
    Tensor<float> q_latent_normed;   // [T, q_lora] (with q_lora)
    Tensor<float> kv_normed;         // [T, kv_lora]
    Tensor<float> q, key, value;     // [T, heads * qk], [T, heads * qk], [T, heads * v]
    Tensor<float> o;                 // [T, heads * v]
    std::vector<float> lse;
    RmsNorm::Kept q_norm, kv_norm;
  };

  /// q_a, q_a_norm absent without q_lora_rank (then `q` is q_proj, else q_b_proj).
  MlaAttention(std::optional<Param> q_a, std::optional<RmsNorm> q_a_norm, Param q, Param kv_a, RmsNorm kv_a_norm,
               Param kv_b, Param o, MlaShape shape, Scope scope, std::optional<AxisStyle> heads_split,
               std::optional<AxisStyle> o_split, TokenGroup tokens)
      : q_a_(std::move(q_a)), q_a_norm_(std::move(q_a_norm)), q_(std::move(q)), kv_a_(std::move(kv_a)),
        kv_a_norm_(std::move(kv_a_norm)), kv_b_(std::move(kv_b)), o_(std::move(o)), shape_(shape),
        scope_(std::move(scope)), heads_split_(std::move(heads_split)), o_out_{std::move(o_split)},
        tokens_(std::move(tokens)) {
    repack();
  }

  std::vector<Param*> params() {
    std::vector<Param*> p;
    if (q_a_) p.push_back(&*q_a_);
    if (q_a_norm_) p.push_back(&q_a_norm_->weight());
    for (Param* x : {&q_, &kv_a_, &kv_a_norm_.weight(), &kv_b_, &o_}) p.push_back(x);
    return p;
  }

  void repack() {
    if (q_a_) q_a_piece_.set_weight(q_a_->value);
    q_piece_.set_weight(q_.value);
    kv_a_piece_.set_weight(kv_a_.value);
    kv_b_piece_.set_weight(kv_b_.value);
    o_piece_.set_weight(o_.value);
  }

  template <Communicator C>
  Tensor<float> forward(C& comm, const CpuContext& c, const Tensor<float>& x_in, const Sequences& seq,
                        Kept* keep) const {
    const MlaShape& s = shape_;
    Kept k;
    k.x = scope_.enter(comm, x_in, "attention gather");
    const index_t T = k.x.dim(0), nh = s.heads, qk = s.qk();
    if (q_a_) {
      k.q_latent_normed = q_a_norm_->forward(q_a_piece_.forward(c, k.x), &k.q_norm);
      k.q = q_piece_.forward(c, k.q_latent_normed);
    } else {
      k.q = q_piece_.forward(c, k.x);
    }
    const Tensor<float> latent = kv_a_piece_.forward(c, k.x);  // [T, kv_lora + rope]
    const Tensor<float> kv = column_block(latent, 0, s.kv_lora);
    Tensor<float> k_rope = column_block(latent, s.kv_lora, s.rope);
    k.kv_normed = kv_a_norm_.forward(kv, &k.kv_norm);
    const Tensor<float> kvb = kv_b_piece_.forward(c, k.kv_normed);  // [T, nh * (nope + v)]
    const cpu::RopeTable table(seq.positions, s.rope, s.rope_theta);
    cpu::rope_forward(k.q.data(), T, nh, qk, s.nope, s.rope, table, s.interleaved);
    cpu::rope_forward(k_rope.data(), T, 1, s.rope, 0, s.rope, table, s.interleaved);
    k.key = Tensor<float>({T, nh * qk});
    k.value = Tensor<float>({T, nh * s.v});
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < nh; ++h) {
        const float* src = kvb.data() + (t * nh + h) * (s.nope + s.v);
        float* key = k.key.data() + (t * nh + h) * qk;
        std::copy_n(src, s.nope, key);
        std::copy_n(k_rope.data() + t * s.rope, s.rope, key + s.nope);
        std::copy_n(src + s.nope, s.v, k.value.data() + (t * nh + h) * s.v);
      }
    k.o = Tensor<float>({T, nh * s.v});
    k.lse.resize(static_cast<std::size_t>(T * nh));
    cpu::attention_forward(k.q.data(), k.key.data(), k.value.data(), seq.lengths, nh, nh, qk, s.v, s.scaling,
                           k.o.data(), k.lse.data(), c.pool);
    Tensor<float> y = o_piece_.forward(c, k.o);
    if (keep) *keep = std::move(k);
    return scope_.exit(comm, o_out_.finish(comm, std::move(y), "attention o_proj"), "attention exit");
  }

  template <Communicator C>
  Tensor<float> backward(C& comm, const CpuContext& c, const Tensor<float>& dy_scope, const Sequences& seq, Kept& k) {
    const Tensor<float> dy_out = scope_.exit_backward(dy_scope);
    const MlaShape& s = shape_;
    const Tensor<float> dy = o_out_.output_grad(comm, dy_out, "attention backward gather");
    const index_t T = k.x.dim(0), H = k.x.dim(1), nh = s.heads, qk = s.qk();
    Tensor<float> d_o({T, nh * s.v});
    o_piece_.backward_input(c, dy.data(), T, H, d_o.data(), nh * s.v);
    Tensor<float> dq({T, nh * qk}), dkey({T, nh * qk}), dvalue({T, nh * s.v});
    cpu::attention_backward(k.q.data(), k.key.data(), k.value.data(), k.o.data(), d_o.data(), k.lse.data(),
                            seq.lengths, nh, nh, qk, s.v, s.scaling, dq.data(), dkey.data(), dvalue.data(), c.pool);
    const cpu::RopeTable table(seq.positions, s.rope, s.rope_theta);
    cpu::rope_backward(dq.data(), T, nh, qk, s.nope, s.rope, table, s.interleaved);

    // The latents' gradients, partial over the heads' axis: [dq_latent | dkv | dk_rope].
    const index_t ql = q_a_ ? s.q_lora : 0, width = ql + s.kv_lora + s.rope;
    Tensor<float> dlatent({T, width});
    Tensor<float> dkvb({T, nh * (s.nope + s.v)});
    for (index_t t = 0; t < T; ++t) {
      float* dk_rope = dlatent.data() + t * width + ql + s.kv_lora;
      std::fill_n(dk_rope, s.rope, 0.0f);
      for (index_t h = 0; h < nh; ++h) {
        const float* dk = dkey.data() + (t * nh + h) * qk;
        float* dst = dkvb.data() + (t * nh + h) * (s.nope + s.v);
        std::copy_n(dk, s.nope, dst);
        std::copy_n(dvalue.data() + (t * nh + h) * s.v, s.v, dst + s.nope);
        for (index_t j = 0; j < s.rope; ++j) dk_rope[j] += dk[s.nope + j];  // heads in order
      }
    }
    if (q_a_) q_piece_.backward_input(c, dq.data(), T, nh * qk, dlatent.data(), width);
    kv_b_piece_.backward_input(c, dkvb.data(), T, nh * (s.nope + s.v), dlatent.data() + ql, width);
    if (heads_split_) comm.all_reduce(dlatent.span(), heads_split_->group, ReduceOp::sum, "mla latent grads");

    Tensor<float> dkv_rope({T, s.kv_lora + s.rope});  // the gradient of kv_a_proj's output
    const Tensor<float> dq_latent = column_block(dlatent, 0, ql);
    const Tensor<float> dkv_in = kv_a_norm_.backward(comm, column_block(dlatent, ql, s.kv_lora), k.kv_norm);
    Tensor<float> dk_rope = column_block(dlatent, ql + s.kv_lora, s.rope);
    cpu::rope_backward(dk_rope.data(), T, 1, s.rope, 0, s.rope, table, s.interleaved);
    for (index_t t = 0; t < T; ++t) {
      std::copy_n(dkv_in.data() + t * s.kv_lora, s.kv_lora, dkv_rope.data() + t * (s.kv_lora + s.rope));
      std::copy_n(dk_rope.data() + t * s.rope, s.rope, dkv_rope.data() + t * (s.kv_lora + s.rope) + s.kv_lora);
    }
    Tensor<float> dq_in;
    if (q_a_) dq_in = q_a_norm_->backward(comm, dq_latent, k.q_norm);

    Tensor<float> dx({T, H});
    kv_a_piece_.backward_input(c, dkv_rope.data(), T, s.kv_lora + s.rope, dx.data(), H);
    if (q_a_) {
      q_a_piece_.backward_input(c, dq_in.data(), T, ql, dx.data(), H, true);
    } else {
      // q_proj's input gradient is partial over the heads' axis, kv_a_proj's is whole.
      Tensor<float> dxq({T, H});
      q_piece_.backward_input(c, dq.data(), T, nh * qk, dxq.data(), H);
      if (heads_split_) comm.all_reduce(dxq.span(), heads_split_->group, ReduceOp::sum, "mla q input grads");
      for (index_t i = 0; i < dx.numel(); ++i) dx[i] += dxq[i];
    }

    std::vector<Param*> ps{&q_, &kv_a_, &kv_b_, &o_};
    if (q_a_) ps.push_back(&*q_a_);
    GradientSum sum{tokens_, ps, [&](bool fresh) {
                      std::vector<cpu::OuterTerm<float>> terms{
                          q_a_ ? q_piece_.weight_term(dq.data(), nh * qk, k.q_latent_normed.data(), ql, T,
                                                      q_.grad.data(), fresh)
                               : q_piece_.weight_term(dq.data(), nh * qk, k.x.data(), H, T, q_.grad.data(), fresh),
                          kv_a_piece_.weight_term(dkv_rope.data(), s.kv_lora + s.rope, k.x.data(), H, T,
                                                  kv_a_.grad.data(), fresh),
                          kv_b_piece_.weight_term(dkvb.data(), nh * (s.nope + s.v), k.kv_normed.data(), s.kv_lora, T,
                                                  kv_b_.grad.data(), fresh),
                          o_piece_.weight_term(dy.data(), H, k.o.data(), nh * s.v, T, o_.grad.data(), fresh)};
                      if (q_a_)
                        terms.push_back(
                            q_a_piece_.weight_term(dq_in.data(), ql, k.x.data(), H, T, q_a_->grad.data(), fresh));
                      outer_.run(c, terms);
                    },
                    std::nullopt};
    finish_gradients(comm, sum, "attention grad");
    // The input gradient is whole on every rank of the axis: no reduction at the scope.
    return scope_.enter_backward(comm, std::move(dx), "attention input grad");
  }

 private:
  std::optional<Param> q_a_;
  std::optional<RmsNorm> q_a_norm_;
  Param q_, kv_a_;
  RmsNorm kv_a_norm_;
  Param kv_b_, o_;
  MlaShape shape_;
  Scope scope_;
  std::optional<AxisStyle> heads_split_;
  RowwiseOutput o_out_;
  TokenGroup tokens_;
  LinearPiece q_a_piece_, q_piece_, kv_a_piece_, kv_b_piece_, o_piece_;
  OuterProducts outer_;
};

}  // namespace meshplan::nn
