#pragma once
// Building blocks of the built-in plans: the entries for one part of a model under one
// kind of parallelism. Family plans (qwen3_moe.hpp, ...) put them together with plan_cat_t.

#include "meshplan/core/detail/public_begin.hpp"

#include "meshplan/core/fixed_string.hpp"
#include "meshplan/plan/plan.hpp"
#include "meshplan/plan/style.hpp"

namespace meshplan::plans::parts {

using namespace meshplan::styles;

// ---- Embeddings, final norm, output embedding --------------------------------------------
struct replicated_ends :
    Plan<Entry<"embed_tokens", replicate>, Entry<"norm", replicate>, Entry<"lm_head", replicate>> {};

/// Vocab-parallel embedding (all-reduce) and an output embedding gathered to full logits.
template <fixed_string TP>
struct tp_ends : Plan<Entry<"embed_tokens", vocab_parallel<TP>>, Entry<"norm", replicate>,
                     Entry<"lm_head", colwise_gather_output<TP>>> {};

/// Sequence parallel: the embedding reduce-scatters onto the sequence, the final norm runs
/// on sequence shards, and the output embedding gathers its input first.
template <fixed_string TP>
struct sp_ends : Plan<Entry<"embed_tokens", vocab_parallel_reduce_scatter<TP>>, Entry<"norm", sequence_parallel<TP>>,
                     Entry<"lm_head", colwise_gather_output<TP>>, Entry<"lm_head", gather_input<TP>>> {};

// ---- Layer norms --------------------------------------------------------------------------
struct replicated_layer_norms :
    Plan<Entry<"layers.*.input_layernorm", replicate>, Entry<"layers.*.post_attention_layernorm", replicate>> {};

template <fixed_string TP>
struct sp_layer_norms : Plan<Entry<"layers.*.input_layernorm", sequence_parallel<TP>>,
                            Entry<"layers.*.post_attention_layernorm", sequence_parallel<TP>>> {};

// ---- Attention (grouped-query: Qwen3, Qwen3-MoE, Mixtral) ---------------------------------
struct replicated_gqa : Plan<Entry<"layers.*.self_attn.q_proj", replicate>, Entry<"layers.*.self_attn.k_proj", replicate>,
                            Entry<"layers.*.self_attn.v_proj", replicate>, Entry<"layers.*.self_attn.o_proj", replicate>> {};

template <fixed_string TP>
struct tp_gqa : Plan<Entry<"layers.*.self_attn.q_proj", colwise<TP>>, Entry<"layers.*.self_attn.k_proj", colwise<TP>>,
                    Entry<"layers.*.self_attn.v_proj", colwise<TP>>, Entry<"layers.*.self_attn.o_proj", rowwise<TP>>> {};

/// Sequence parallel attention: gather the sequence on entry, reduce-scatter on exit.
template <fixed_string TP>
struct sp_gqa : Plan<Entry<"layers.*.self_attn", gather_input<TP>>, Entry<"layers.*.self_attn.q_proj", colwise<TP>>,
                    Entry<"layers.*.self_attn.k_proj", colwise<TP>>, Entry<"layers.*.self_attn.v_proj", colwise<TP>>,
                    Entry<"layers.*.self_attn.o_proj", rowwise_reduce_scatter<TP>>> {};

/// Qwen3's per-head q/k norms.
struct replicated_qk_norms : Plan<Entry<"layers.*.self_attn.q_norm", replicate>, Entry<"layers.*.self_attn.k_norm", replicate>> {};

/// On head-sharded activations the norm weights see a part of the heads: their grads are
/// all-reduced over the axis.
template <fixed_string TP>
struct tp_qk_norms : Plan<Entry<"layers.*.self_attn.q_norm", replicated_with_grad_allreduce<TP>>,
                         Entry<"layers.*.self_attn.k_norm", replicated_with_grad_allreduce<TP>>> {};

// ---- Attention (DeepSeek-V3's multi-head latent attention) --------------------------------
// A config with q_lora_rank null has a plain q_proj instead of q_a_proj, q_a_layernorm and
// q_b_proj: both sets of query entries are optional, and exactly one of them matches.

/// The low-rank down-projections and their norms stay whole; the up-projections split heads.
struct mla_latents : Plan<OptionalEntry<"layers.*.self_attn.q_a_proj", replicate>,
                         OptionalEntry<"layers.*.self_attn.q_a_layernorm", replicate>,
                         Entry<"layers.*.self_attn.kv_a_proj_with_mqa", replicate>,
                         Entry<"layers.*.self_attn.kv_a_layernorm", replicate>> {};

/// The query projection by head: q_b_proj after the low-rank q_a_proj, or a plain q_proj.
template <class QueryStyle>
struct mla_queries : Plan<OptionalEntry<"layers.*.self_attn.q_b_proj", QueryStyle>,
                         OptionalEntry<"layers.*.self_attn.q_proj", QueryStyle>> {};

struct replicated_mla : plan_cat_t<mla_latents, mla_queries<replicate>,
                                   Plan<Entry<"layers.*.self_attn.kv_b_proj", replicate>,
                                        Entry<"layers.*.self_attn.o_proj", replicate>>> {};

template <fixed_string TP>
struct tp_mla : plan_cat_t<mla_latents, mla_queries<colwise<TP>>,
                           Plan<Entry<"layers.*.self_attn.kv_b_proj", colwise<TP>>,
                                Entry<"layers.*.self_attn.o_proj", rowwise<TP>>>> {};

template <fixed_string TP>
struct sp_mla : plan_cat_t<mla_latents, mla_queries<colwise<TP>>,
                           Plan<Entry<"layers.*.self_attn", gather_input<TP>>,
                                Entry<"layers.*.self_attn.kv_b_proj", colwise<TP>>,
                                Entry<"layers.*.self_attn.o_proj", rowwise_reduce_scatter<TP>>>> {};

// ---- Dense MLPs (Qwen3, DeepSeek-V3's first layers and shared experts) --------------------
// Optional entries may match nothing: DeepSeek-V3's dense first layers, since a config may
// have none (first_k_dense_replace 0). (A bool rather than a template template parameter:
// nvcc's host code generation mangles constrained template template arguments.)
template <fixed_string Prefix, bool Optional = false>
struct replicated_mlp
    : Plan<EntryWith<Prefix + ".gate_proj", Optional, replicate>, EntryWith<Prefix + ".up_proj", Optional, replicate>,
           EntryWith<Prefix + ".down_proj", Optional, replicate>> {};

template <fixed_string Prefix, fixed_string TP, bool Optional = false>
struct tp_mlp : Plan<EntryWith<Prefix + ".gate_proj", Optional, colwise<TP>>,
                     EntryWith<Prefix + ".up_proj", Optional, colwise<TP>>,
                     EntryWith<Prefix + ".down_proj", Optional, rowwise<TP>>> {};

template <fixed_string Prefix, fixed_string TP, bool Optional = false>
struct sp_mlp : Plan<EntryWith<Prefix + ".gate_proj", Optional, colwise<TP>>,
                     EntryWith<Prefix + ".up_proj", Optional, colwise<TP>>,
                     EntryWith<Prefix + ".down_proj", Optional, rowwise_reduce_scatter<TP>>> {};

// ---- Mixture of experts -------------------------------------------------------------------
// Optional: DeepSeek-V3 configs whose layers are all dense (first_k_dense_replace at least
// num_hidden_layers) have no router and no experts; Qwen3-MoE and Mixtral always have them.
template <bool Optional = false>
struct replicated_router : Plan<EntryWith<"layers.*.mlp.gate", Optional, replicate>> {};
template <fixed_string EP, bool Optional = false>
struct ep_router : Plan<EntryWith<"layers.*.mlp.gate", Optional, router<EP>>> {};

/// Experts split over an EP axis; routed rows travel by all-to-all-v.
template <fixed_string EP, bool Optional = false>
struct ep_experts : Plan<EntryWith<"layers.*.mlp.experts", Optional, moe_experts<EP>>> {};
/// Every expert's intermediate dim split over a TP axis (gate_up as [gate_t | up_t]).
template <fixed_string TP, bool Optional = false>
struct tp_experts : Plan<EntryWith<"layers.*.mlp.experts", Optional, expert_tp<TP>>> {};
template <fixed_string TP, bool Optional = false>
struct sp_experts : Plan<EntryWith<"layers.*.mlp.experts", Optional, expert_tp_reduce_scatter<TP>>> {};
/// Expert tensor parallelism: experts over EP, each expert's intermediate dim over TP.
template <fixed_string EP, fixed_string TP, bool Optional = false>
struct ep_etp_experts : Plan<EntryWith<"layers.*.mlp.experts", Optional, moe_experts<EP>, expert_tp<TP>>> {};

/// Sequence-parallel entry and exit of every MLP block.
template <fixed_string TP>
struct sp_mlp_scope : Plan<Entry<"layers.*.mlp", gather_input<TP>>> {};
/// Replicated tokens split over TP on entry to the MoE block and gathered on exit, so
/// that TP ranks route disjoint tokens instead of computing the same ones.
template <fixed_string TP>
struct token_split_mlp_scope : Plan<Entry<"layers.*.mlp", split_input<TP>, gather_output<TP>>> {};

}  // namespace meshplan::plans::parts

#include "meshplan/core/detail/public_end.hpp"
