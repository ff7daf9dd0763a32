#pragma once
// CausalLM: a whole decoder-only model on one rank of a mesh, under a plan, forward and
// backward, on the CPU. The modules (nn/) are sharded as the plan's styles say, read
// from the same walk that validates the plan (nn/detail/execution_plan.hpp); MoE layers are
// meshplan's MoEBlock, which reads its own entries.
//
//   mp::nn::CausalLM<Mesh, Plan> model(spec, mesh, rank, source);
//   auto step = model.forward(comm, batch, mp::nn::Mode::train);   // logits and loss
//   model.backward(comm);                                          // every gradient
//   model.sgd_step(0.1f);
//
// The batch is the whole global batch on every rank (B sequences of S tokens, labels
// optional); each rank runs the sequences of its data member and, under sequence
// parallelism, its chunk of their tokens. Every rank checks the whole batch, so bad
// input fails alike everywhere.

#include "meshplan/core/detail/public_begin.hpp"

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "meshplan/comm/agree.hpp"
#include "meshplan/comm/communicator.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/cpu/detail/cross_entropy.hpp"
#include "meshplan/cpu/moe_backend.hpp"
#include "meshplan/cpu/thread_pool.hpp"
#include "meshplan/mesh/mesh_spec.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/nn/detail/attention.hpp"
#include "meshplan/nn/detail/dense_mlp.hpp"
#include "meshplan/nn/detail/embedding.hpp"
#include "meshplan/nn/detail/execution_plan.hpp"
#include "meshplan/nn/detail/mla_attention.hpp"
#include "meshplan/nn/optimizer.hpp"
#include "meshplan/nn/detail/output_head.hpp"
#include "meshplan/nn/detail/rms_norm.hpp"
#include "meshplan/placement/sharding.hpp"
#include "meshplan/plan/lower.hpp"

namespace meshplan::nn {

/// Where a rank's parameter pieces come from: `piece(name, layout, rank)` by checkpoint
/// name ("model.layers.0.self_attn.q_proj.weight"), and the MoE blocks' loader for a
/// block prefix ("model.layers.1.mlp."), which also reads per-expert hub names.
struct ModelSource {
  std::function<Tensor<float>(const std::string& name, const LayoutSpec& layout, index_t rank)> piece;
  std::function<MoEWeightLoader<float>(const std::string& prefix)> moe;
};

/// A batch of B sequences of S tokens, row-major [B, S]; labels empty or [B, S].
struct TokenBatch {
  index_t sequences = 0, length = 0;
  std::vector<std::int64_t> ids;
  std::vector<std::int64_t> labels;
};

enum class Mode : unsigned char { infer, train };

/// The checkpoint name of an inventory parameter in layer `layer`.
inline std::string checkpoint_name(std::string_view param, index_t layer) {
  std::string name(param);
  if (auto star = name.find('*'); star != std::string::npos) name.replace(star, 1, std::to_string(layer));
  return name.starts_with("lm_head") ? name : "model." + name;
}

namespace rules {
inline Message batch_shape(const TokenBatch& b) {
  Message m = Message::rule("batch_shape");
  if (b.sequences < 0 || b.length < 0) return m << "a batch of " << b.sequences << " x " << b.length << " tokens";
  if (static_cast<index_t>(b.ids.size()) != b.sequences * b.length)
    return m << "the batch has " << static_cast<index_t>(b.ids.size()) << " token ids for " << b.sequences << " x "
             << b.length;
  if (!b.labels.empty() && b.labels.size() != b.ids.size())
    return m << "the batch has " << static_cast<index_t>(b.labels.size()) << " labels for "
             << static_cast<index_t>(b.ids.size()) << " tokens";
  return {};
}
inline Message token_in_vocab(const TokenBatch& b, index_t vocab) {
  for (std::size_t i = 0; i < b.ids.size(); ++i)
    if (b.ids[i] < 0 || b.ids[i] >= vocab)
      return Message::rule("token_in_vocab") << "token " << static_cast<index_t>(i) << " (sequence "
                                             << static_cast<index_t>(i) / b.length << ", position "
                                             << static_cast<index_t>(i) % b.length << ") has id " << b.ids[i]
                                             << ", outside the vocabulary of " << vocab;
  for (std::size_t i = 0; i < b.labels.size(); ++i)
    if (b.labels[i] != cpu::ignore_index && (b.labels[i] < 0 || b.labels[i] >= vocab))
      return Message::rule("token_in_vocab") << "label " << static_cast<index_t>(i) << " is " << b.labels[i]
                                             << ", neither -100 nor inside the vocabulary of " << vocab;
  return {};
}
}  // namespace rules

template <class Mesh, PlanType Plan>
class CausalLM {
 public:
  using Block = MoEBlock<RuntimeModel, Mesh, Plan, CpuBackend<float>>;

  struct Step {
    Tensor<float> logits;  // the rank's tokens: [T, V], or [T, V / tp] under loss_parallel
    double loss = 0;       // NaN without labels (or no labelled token)
    index_t first_sequence = 0, sequences = 0;  // the rank's part of the batch
  };

  CausalLM(const ModelSpec& model, const Mesh& mesh, index_t rank, const ModelSource& source, int threads = 0)
      : model_(model), mesh_(mesh), spec_(mesh), rank_(rank), plan_(model, spec_, Plan::entries, rank),
        pool_(threads > 0 ? threads : cpu::default_threads(spec_.size())) {
    enforce(model.rope_scaled ? Message::rule("executor_model")
                                    << "the model's rope scaling is not executed yet (only the default rope)"
                              : Message{});
    enforce(model.tie_word_embeddings || model.attention_bias
                ? Message::rule("executor_model") << "tied embeddings and attention biases are not executed yet"
                : Message{});
    load(source);
  }

  /// Loads the rank's pieces and agrees with every rank on the outcome: a missing tensor
  /// or a wrong shape on one rank (each reads only its pieces) stops every rank with an
  /// error instead of leaving the others waiting in the first collective.
  template <Communicator C>
  static std::unique_ptr<CausalLM> load(C& comm, const ModelSpec& model, const Mesh& mesh, const ModelSource& source,
                                        int threads = 0) {
    std::unique_ptr<CausalLM> m;
    std::exception_ptr failure;
    // By default the hardware threads divided among the ranks on this machine.
    if (threads <= 0) threads = cpu::default_threads(meshplan::detail::ranks_on_this_machine(comm));
    try {
      m = std::make_unique<CausalLM>(model, mesh, comm.rank(), source, threads);
    } catch (const std::exception&) {
      failure = std::current_exception();
    }
    try {
      agree(comm, failure ? Message::rule("model_load") << "this rank could not load its pieces" : Message{},
            comm.world_group());
    } catch (const RuleViolation&) {
      if (failure) std::rethrow_exception(failure);  // the rank's own error, naming file and tensor
      throw;
    }
    return m;
  }

  const ModelSpec& model() const noexcept { return model_; }
  const ExecutionPlan& plan() const noexcept { return plan_; }

  template <Communicator C>
  Step forward(C& comm, const TokenBatch& batch, Mode mode = Mode::infer) {
    enforce(first_of({rules::batch_shape(batch), rules::token_in_vocab(batch, model_.vocab_size)}));
    const bool train = mode == Mode::train;
    kept_ = {};
    const Group& data = plan_.data_group();
    const Chunk mine = chunk(batch.sequences, data.size(), data.rank);
    const std::span<const std::int64_t> ids(batch.ids.data() + mine.offset * batch.length,
                                            static_cast<std::size_t>(mine.size * batch.length));
    kept_.ids.assign(ids.begin(), ids.end());
    kept_.seq = Sequences::equal(mine.size, batch.length);
    const CpuContext c{&pool_, cpu::active_isa()};

    Tensor<float> x = embed_.forward(comm, ids);
    for (auto& layer : layers_) {
      x = layer_forward(comm, c, layer, std::move(x), train);
    }
    Tensor<float> final_x = final_norm_.forward(x, train ? &kept_.final_norm : nullptr);
    Step step;
    step.first_sequence = mine.offset;
    step.sequences = mine.size;
    step.logits = head_.logits(comm, c, final_x, &kept_.head);
    step.loss = std::numeric_limits<double>::quiet_NaN();
    // An empty batch has (no) labels too: its loss is NaN and its gradients zeros.
    if (!batch.labels.empty() || batch.ids.empty()) {
      std::vector<index_t> shifted(kept_.ids.size(), cpu::ignore_index);
      index_t labelled = 0;
      for (index_t s = 0; s < batch.sequences; ++s)
        for (index_t p = 0; p + 1 < batch.length; ++p) {
          const std::int64_t l = batch.labels[static_cast<std::size_t>(s * batch.length + p + 1)];
          if (l == cpu::ignore_index) continue;
          ++labelled;
          if (s >= mine.offset && s < mine.offset + mine.size)
            shifted[static_cast<std::size_t>((s - mine.offset) * batch.length + p)] = l;
        }
      step.loss = head_.loss(comm, shifted, labelled, kept_.head);
      kept_.has_loss = true;
    }
    kept_.trained = train;
    if (!train) kept_ = {};
    return step;
  }

  /// The gradients of the last training forward's loss, into every parameter's grad (and
  /// the MoE blocks' gradients).
  template <Communicator C>
  void backward(C& comm) {
    enforce(kept_.trained && kept_.has_loss
                ? Message{}
                : Message::rule("backward_after_training_forward")
                      << "backward needs a forward with Mode::train and labels before it");
    const CpuContext c{&pool_, cpu::active_isa()};
    Tensor<float> dfinal = head_.backward(comm, c, kept_.head);
    Tensor<float> dx = final_norm_.backward(comm, dfinal, kept_.final_norm);
    for (std::size_t i = layers_.size(); i-- > 0;) dx = layer_backward(comm, c, layers_[i], kept_.layers[i], dx);
    embed_.backward(comm, kept_.ids, dx);
    kept_ = {};
  }

  /// Every parameter piece of this rank outside the MoE blocks, with its gradient.
  std::vector<Param*> params() {
    std::vector<Param*> p{&embed_.weight()};
    for (auto& l : layers_) {
      p.push_back(&l.input_norm.weight());
      for (Param* a : l.gqa ? l.gqa->params() : l.mla->params()) p.push_back(a);
      p.push_back(&l.post_norm.weight());
      if (l.mlp)
        for (Param* m : l.mlp->params()) p.push_back(m);
    }
    p.push_back(&final_norm_.weight());
    p.push_back(&head_.weight());
    return p;
  }

  /// The MoE layers' blocks and their last gradients, with the blocks' checkpoint prefixes.
  struct MoELayer {
    std::string prefix;
    Block* block;
    const typename Block::Gradients* grads;
  };
  std::vector<MoELayer> moe_layers() {
    std::vector<MoELayer> out;
    for (std::size_t i = 0; i < layers_.size(); ++i)
      if (layers_[i].moe)
        out.push_back({checkpoint_name("layers.*.mlp.", static_cast<index_t>(i)), layers_[i].moe.get(),
                       &layers_[i].moe_grads});
    return out;
  }

  /// One parameter piece of this rank: its checkpoint name (fused experts as transformers 5
  /// names them in memory, e.g. "model.layers.1.mlp.experts.gate_up_proj"), its values and
  /// its layout on the mesh.
  struct NamedPiece {
    std::string name;
    const Tensor<float>* value;
    LayoutSpec layout;
  };

  /// Every parameter piece of this rank, MoE blocks included, in module order.
  std::vector<NamedPiece> pieces() {
    std::vector<NamedPiece> out;
    for (Param* p : params()) out.push_back({p->name, &p->value, *p->layout});
    for (const auto& moe : moe_layers()) {
      const MoEWeights<float>& w = moe.block->local_weights().w;
      auto add = [&](std::string_view name, const Tensor<float>& t) {
        if (!t.empty() || name.starts_with("experts")) out.push_back({moe.prefix + std::string(name), &t,
                                                                      layout_of("layers.*.mlp." + std::string(name))});
      };
      add("gate.weight", w.router);
      if (model_.router() == RouterKind::sigmoid_group_topk) add("gate.e_score_correction_bias", w.correction_bias);
      add("experts.gate_up_proj", w.gate_up);
      add("experts.down_proj", w.down);
      if (w.has_shared()) {
        add("shared_experts.gate_proj.weight", w.shared_gate);
        add("shared_experts.up_proj.weight", w.shared_up);
        add("shared_experts.down_proj.weight", w.shared_down);
      }
    }
    return out;
  }

  /// The layout of an inventory parameter ("layers.*.mlp.experts.gate_up_proj") on the mesh.
  LayoutSpec layout_of(std::string_view name) const {
    for (const auto& l : lowered_)
      if (l.info.name == name) return l.layout(spec_);
    throw RuleViolation(Message::rule("flow_step") << "the model has no parameter '" << name << "'");
  }

  /// One optimizer step on every piece with the last backward's gradients (the MoE blocks'
  /// weights included; DeepSeek-V3's correction bias has no gradient and stays).
  template <Optimizer O>
  void step(O& opt) {
    opt.begin_step();
    for (Param* p : params()) opt.update(p->name, p->value.span(), p->grad.span());
    for (auto& l : layers_) {
      if (l.gqa) l.gqa->repack();
      if (l.mla) l.mla->repack();
      if (l.mlp) l.mlp->repack();
    }
    head_.repack();
    for (const auto& moe : moe_layers()) {
      MoEWeights<float> w = moe.block->local_weights().w;
      const typename Block::Gradients& g = *moe.grads;
      for (auto [t, grad, name] : {std::tuple{&w.router, &g.router, "gate.weight"},
                                   std::tuple{&w.gate_up, &g.gate_up, "experts.gate_up_proj"},
                                   std::tuple{&w.down, &g.down, "experts.down_proj"},
                                   std::tuple{&w.shared_gate, &g.shared_gate, "shared_experts.gate_proj.weight"},
                                   std::tuple{&w.shared_up, &g.shared_up, "shared_experts.up_proj.weight"},
                                   std::tuple{&w.shared_down, &g.shared_down, "shared_experts.down_proj.weight"}})
        if (!t->empty()) opt.update(moe.prefix + name, t->span(), grad->span());
      moe.block->set_local_weights(std::move(w));
    }
  }

  /// Plain SGD: step(Sgd{lr}).
  void sgd_step(float lr) {
    Sgd opt{lr};
    step(opt);
  }


 private:
  struct Layer {
    RmsNorm input_norm;
    std::optional<GqaAttention> gqa;  // one of the two
    std::optional<MlaAttention> mla;
    RmsNorm post_norm;
    std::optional<DenseMlp> mlp;
    std::unique_ptr<Block> moe;
    typename Block::Gradients moe_grads;
  };
  struct LayerKept {
    RmsNorm::Kept input_norm, post_norm;
    GqaAttention::Kept gqa;
    MlaAttention::Kept mla;
    DenseMlp::Kept mlp;
    std::optional<typename Block::State> moe;
  };
  struct Kept {
    std::vector<std::int64_t> ids;
    Sequences seq;
    std::vector<LayerKept> layers;
    RmsNorm::Kept final_norm;
    OutputHead::Kept head;
    bool trained = false, has_loss = false;
  };

  template <Communicator C>
  Tensor<float> layer_forward(C& comm, const CpuContext& c, Layer& layer, Tensor<float> x, bool train) {
    LayerKept* k = nullptr;
    if (train) k = &kept_.layers.emplace_back();
    Tensor<float> h = layer.input_norm.forward(x, k ? &k->input_norm : nullptr);
    add_into(x, layer.gqa ? layer.gqa->forward(comm, c, h, kept_.seq, k ? &k->gqa : nullptr)
                          : layer.mla->forward(comm, c, h, kept_.seq, k ? &k->mla : nullptr));
    h = layer.post_norm.forward(x, k ? &k->post_norm : nullptr);
    if (layer.mlp) {
      add_into(x, layer.mlp->forward(comm, c, h, k ? &k->mlp : nullptr));
    } else {
      layer.moe->set_training(train ? Training::keep_activations : Training::off);
      auto out = layer.moe->forward(comm, h);
      add_into(x, out.hidden_states);
      if (k) k->moe.emplace(std::move(out.state));
    }
    return x;
  }

  template <Communicator C>
  Tensor<float> layer_backward(C& comm, const CpuContext& c, Layer& layer, LayerKept& k, const Tensor<float>& dy) {
    Tensor<float> dx = dy;
    Tensor<float> dh;
    if (layer.mlp) {
      dh = layer.mlp->backward(comm, c, dy, k.mlp);
    } else {
      layer.moe->backward(comm, *k.moe, dy, layer.moe_grads);
      dh = layer.moe_grads.hidden_states;
    }
    add_into(dx, layer.post_norm.backward(comm, dh, k.post_norm));
    Tensor<float> da = layer.gqa ? layer.gqa->backward(comm, c, dx, kept_.seq, k.gqa)
                                 : layer.mla->backward(comm, c, dx, kept_.seq, k.mla);
    add_into(dx, layer.input_norm.backward(comm, da, k.input_norm));
    return dx;
  }

  static void add_into(Tensor<float>& x, const Tensor<float>& y) {
    enforce(tensor_rules::shape_matches("a residual branch", y.shape(), x.shape()));
    for (index_t i = 0; i < x.numel(); ++i) x[i] += y[i];
  }

  void load(const ModelSource& source) {
    lowered_ = lower(model_, spec_, Plan::entries, rank_);
    auto find = [&](std::string_view name) -> const LoweredParam& {
      for (const auto& l : lowered_)
        if (l.info.name == name) return l;
      throw RuleViolation(Message::rule("flow_step") << "the model has no parameter '" << name << "'");
    };
    auto param = [&](std::string_view name, index_t layer) {
      const LoweredParam& l = find(name);
      const std::string full = checkpoint_name(name, layer);
      auto layout = std::make_shared<const LayoutSpec>(l.layout(spec_));
      Param p{full, source.piece(full, *layout, rank_), {}, layout};
      enforce(tensor_rules::shape_matches("checkpoint tensor '" + full + "'", p.value.shape(), l.local_shape));
      return p;
    };
    auto first_row = [&](std::string_view name) {
      const IndexRuns runs = find(name).layout(spec_).held_indices(0, rank_);
      return runs.empty() ? index_t{0} : runs.front().begin;
    };
    const float eps = static_cast<float>(model_.rms_norm_eps);
    auto norm = [&](std::string_view name, index_t layer) {
      return RmsNorm(param(name, layer), eps, plan_.token_group(name));
    };

    embed_ = Embedding(param("embed_tokens.weight", 0), first_row("embed_tokens.weight"),
                       plan_.split("embed_tokens.weight"), plan_.token_group("embed_tokens.weight"));
    for (index_t i = 0; i < model_.num_hidden_layers; ++i) {
      Layer layer;
      layer.input_norm = norm("layers.*.input_layernorm.weight", i);
      layer.post_norm = norm("layers.*.post_attention_layernorm.weight", i);
      if (model_.uses_mla())
        layer.mla.emplace(mla_attention(param, norm, i));
      else
        layer.gqa.emplace(gqa_attention(param, norm, i));
      if (i < model_.dense_layers()) {
        const auto gate_split = plan_.split("layers.*.mlp.gate_proj.weight");
        layer.mlp.emplace(param("layers.*.mlp.gate_proj.weight", i), param("layers.*.mlp.up_proj.weight", i),
                          param("layers.*.mlp.down_proj.weight", i), Scope::of(plan_, "layers.*.mlp", gate_split),
                          plan_.split("layers.*.mlp.down_proj.weight"),
                          plan_.token_group("layers.*.mlp.gate_proj.weight"));
      } else {
        // Every layer runs on the model's pool.
        layer.moe = std::make_unique<Block>(model_, mesh_, rank_, source.moe(checkpoint_name("layers.*.mlp.", i)),
                                            CpuBackend<float>(pool_));
      }
      layers_.push_back(std::move(layer));
    }
    final_norm_ = norm("norm.weight", 0);
    const auto head_split = plan_.split(output_embedding_param);
    head_ = OutputHead(param("lm_head.weight", 0), first_row("lm_head.weight"), model_.vocab_size,
                       Scope::of(plan_, "lm_head", head_split), head_split, plan_.token_group("lm_head.weight"),
                       plan_.data_group());
  }

  template <class ParamOf, class NormOf>
  GqaAttention gqa_attention(ParamOf& param, NormOf& norm, index_t i) {
    const index_t d = model_.head_dim;
    const auto q_split = plan_.split("layers.*.self_attn.q_proj.weight");
    Param q = param("layers.*.self_attn.q_proj.weight", i);
    Param k = param("layers.*.self_attn.k_proj.weight", i);
    const GqaShape shape{q.value.dim(0) / d, k.value.dim(0) / d, d, static_cast<float>(1.0 / std::sqrt(double(d))),
                         model_.rope_theta};
    std::optional<RmsNorm> qn, kn;
    std::optional<Group> norm_group;
    if (model_.family == Family::qwen3 || model_.family == Family::qwen3_moe) {
      qn = norm("layers.*.self_attn.q_norm.weight", i);
      kn = norm("layers.*.self_attn.k_norm.weight", i);
      // On head-sharded activations each rank's norm weights saw its heads only.
      if (auto s = plan_.split("layers.*.self_attn.q_norm.weight"); s && q_split) norm_group = s->group;
    }
    return GqaAttention(std::move(q), std::move(k), param("layers.*.self_attn.v_proj.weight", i),
                        param("layers.*.self_attn.o_proj.weight", i), std::move(qn), std::move(kn), norm_group, shape,
                        Scope::of(plan_, "layers.*.self_attn", q_split),
                        plan_.split("layers.*.self_attn.o_proj.weight"),
                        plan_.token_group("layers.*.self_attn.q_proj.weight"));
  }

  template <class ParamOf, class NormOf>
  MlaAttention mla_attention(ParamOf& param, NormOf& norm, index_t i) {
    const bool lora = model_.q_lora_rank > 0;
    const std::string_view q_name = lora ? "layers.*.self_attn.q_b_proj.weight" : "layers.*.self_attn.q_proj.weight";
    Param q = param(q_name, i);
    MlaShape shape{q.value.dim(0) / model_.qk_head_dim(), model_.q_lora_rank, model_.kv_lora_rank,
                   model_.qk_nope_head_dim, model_.qk_rope_head_dim, model_.v_head_dim,
                   static_cast<float>(1.0 / std::sqrt(double(model_.qk_head_dim()))), model_.rope_theta,
                   model_.rope_interleave};
    // transformers builds the latent norms with their default eps (1e-6), not rms_norm_eps.
    auto latent_norm = [&](std::string_view name) {
      return RmsNorm(param(name, i), 1e-6f, plan_.token_group(name));
    };
    (void)norm;
    std::optional<Param> q_a;
    std::optional<RmsNorm> q_a_norm;
    if (lora) {
      q_a = param("layers.*.self_attn.q_a_proj.weight", i);
      q_a_norm = latent_norm("layers.*.self_attn.q_a_layernorm.weight");
    }
    return MlaAttention(std::move(q_a), std::move(q_a_norm), std::move(q),
                        param("layers.*.self_attn.kv_a_proj_with_mqa.weight", i),
                        latent_norm("layers.*.self_attn.kv_a_layernorm.weight"),
                        param("layers.*.self_attn.kv_b_proj.weight", i), param("layers.*.self_attn.o_proj.weight", i),
                        shape, Scope::of(plan_, "layers.*.self_attn", std::nullopt), plan_.split(q_name),
                        plan_.split("layers.*.self_attn.o_proj.weight"), plan_.token_group(q_name));
  }

  ModelSpec model_;
  Mesh mesh_;
  MeshSpec spec_;
  index_t rank_;
  ExecutionPlan plan_;
  std::vector<LoweredParam> lowered_;
  cpu::ThreadPool pool_;
  Embedding embed_;
  std::vector<Layer> layers_;
  RmsNorm final_norm_;
  OutputHead head_;
  Kept kept_;
};

}  // namespace meshplan::nn

#include "meshplan/core/detail/public_end.hpp"
