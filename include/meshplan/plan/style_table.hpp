#pragma once
// The style table: one constexpr description per parallel style, indexed by StyleKind.
//
// An entry says everything the rest of the library needs to know about a style on its mesh
// axis: the placement it gives each kind of parameter (validation, lowering), the
// activation placements a step of its module accepts and writes (the activation check),
// how it finishes the partial sums its split produces (the MoE block's pipeline), and the
// collectives it adds to the forward and the backward pass (the cost model). Validation,
// lowering, the cost model and the MoE block's plan read this table rather than switch on
// the style (where they compare kinds, it is to find one: the EP style, a hook, the
// loss_parallel head). A new style is a StyleKind, one entry here, and its kernels.
//
// Activations are [tokens, features]. On one axis an activation is Replicate, sharded on
// the token (sequence) dim, or sharded on the feature dim; partial sums never leave a style
// (rowwise reduces them itself, by all-reduce or by reduce-scatter).

#include "meshplan/core/detail/public_begin.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "meshplan/model/inventory.hpp"
#include "meshplan/placement/placement.hpp"
#include "meshplan/placement/redistribute.hpp"

namespace meshplan {

/// The placement of an activation [tokens, features] on one axis.
enum class Act : std::uint8_t { replicate, shard_seq, shard_hidden };

constexpr std::string_view to_string(Act a) noexcept {
  switch (a) {
    case Act::replicate: return "Replicate";
    case Act::shard_seq: return "Shard(1)";
    case Act::shard_hidden: return "Shard(-1)";
  }
  return "?";
}

/// The styles, in the order of style_table below (see each entry there).
enum class StyleKind : std::uint8_t {
  replicate,
  colwise,
  colwise_gather_output,
  rowwise,
  rowwise_reduce_scatter,
  packed_colwise,
  vocab_parallel,
  vocab_parallel_reduce_scatter,
  sequence_parallel,
  replicated_with_grad_allreduce,
  prepare_input,
  prepare_output,
  moe_experts,
  expert_tp,
  expert_tp_reduce_scatter,
  router,
  loss_parallel,
};
inline constexpr std::size_t style_kind_count = static_cast<std::size_t>(StyleKind::loss_parallel) + 1;

/// A set of activation placements.
struct ActSet {
  bool replicate = false, shard_seq = false, shard_hidden = false;
  constexpr bool contains(Act a) const noexcept {
    return a == Act::replicate ? replicate : a == Act::shard_seq ? shard_seq : shard_hidden;
  }
  friend constexpr bool operator==(const ActSet&, const ActSet&) noexcept = default;
};

namespace detail {
constexpr ActSet only(Act a) noexcept {
  ActSet s;
  if (a == Act::replicate) s.replicate = true;
  if (a == Act::shard_seq) s.shard_seq = true;
  if (a == Act::shard_hidden) s.shard_hidden = true;
  return s;
}
}  // namespace detail

/// What a step of a style's module does to the activation it reads, on the style's axis.
struct StepEffect {
  ActSet accepts = {};
  bool within_heads = false;      // also accepts Shard(-1) at a step that works within heads (q_norm, k_norm)
  std::optional<Act> out = {};    // nothing: the output is placed as the input
};

/// The placement a style gives each kind of parameter on its axis; a kind left out is one
/// the style cannot place (validation reports it). Members in ParamKind's order.
struct ParamPlacements {
  std::optional<PlacementSpec> embedding = {}, norm = {}, head_norm = {}, linear = {}, linear_bias = {}, router = {},
                               router_bias = {}, experts_gate_up = {}, experts_down = {}, lm_head = {};

  static constexpr ParamPlacements all(PlacementSpec p) noexcept { return {p, p, p, p, p, p, p, p, p, p}; }

  // A switch on ParamKind, not on the style: the member of each kind.
  constexpr std::optional<PlacementSpec> of(ParamKind k) const noexcept {
    switch (k) {
      case ParamKind::embedding: return embedding;
      case ParamKind::norm: return norm;
      case ParamKind::head_norm: return head_norm;
      case ParamKind::linear: return linear;
      case ParamKind::linear_bias: return linear_bias;
      case ParamKind::router: return router;
      case ParamKind::router_bias: return router_bias;
      case ParamKind::experts_gate_up: return experts_gate_up;
      case ParamKind::experts_down: return experts_down;
      case ParamKind::lm_head: return lm_head;
    }
    return std::nullopt;
  }
};
inline constexpr std::size_t param_kind_count = static_cast<std::size_t>(ParamKind::lm_head) + 1;

/// How partial sums over an axis are finished.
enum class PartialReduce : unsigned char { none, all_reduce, reduce_scatter };

/// The steps of a style's module at which something (a reduction, a collective) happens.
enum class At : unsigned char {
  every_step,  // every parameter step of the module
  opening,     // every step but the experts' down_proj: gate_up opens the experts, as any colwise step
  closing,     // the experts' down_proj, which closes what gate_up opened
  token_ids,   // a step reading the token ids: the input embedding, not the tied output embedding
  loss,        // the loss (not a parameter step), when the style is on the output embedding
};

/// Where a flow step stands, for At.
struct StepPosition {
  ParamKind kind = ParamKind::linear;
  bool reads_token_ids = false;
  bool loss = false;
};

// A switch on At, not on the style.
constexpr bool happens_at(At at, const StepPosition& s) noexcept {
  if (s.loss) return at == At::loss;
  switch (at) {
    case At::every_step: return true;
    case At::opening: return s.kind != ParamKind::experts_down;
    case At::closing: return s.kind == ParamKind::experts_down;
    case At::token_ids: return s.reads_token_ids;
    case At::loss: return false;
  }
  return false;
}

/// A style's partial sums: the module's output is a partial sum over the axis at these
/// steps, finished by this reduction. Forward: the reduction of the output (all_reduce:
/// output Replicate; reduce_scatter: output Shard(1)). Backward: its adjoint (adjoint()).
struct Reduction {
  PartialReduce how = PartialReduce::none;
  At at = At::every_step;
};

/// The collective a partial reduction runs, and its adjoint in the backward pass: the
/// gradient of a reduce-scatter's output is all-gathered; that of an all-reduce's is
/// replicated already.
constexpr std::optional<Collective> forward_collective(PartialReduce r) noexcept {
  if (r == PartialReduce::all_reduce) return Collective::all_reduce;
  if (r == PartialReduce::reduce_scatter) return Collective::reduce_scatter;
  return std::nullopt;
}
constexpr std::optional<Collective> adjoint(PartialReduce r) noexcept {
  if (r == PartialReduce::reduce_scatter) return Collective::all_gather;
  return std::nullopt;
}

/// What a collective of a style moves (the cost model sizes it).
enum class Payload : unsigned char {
  none,             // an unused slot of a collective list
  output,           // the step's output activation [tokens, output width]
  input_gradient,   // the gradient of the step's input when Replicate, [tokens, input width]: partial
                    // over the axis, reduced once per activation (by reduce-scatter where a gather
                    // hook wrote the activation, by the listed collective otherwise)
  routed_rows,      // tokens x top-k rows of hidden width; reported on the module (experts)
  expert_counts,    // one 8-byte count per expert; reported on the module
  routing_weights,  // the routing weights' gradient, tokens x top-k fp32: partial where the routed
                    // experts' output is (and the shared experts' partial sums then join theirs)
  loss_terms,       // three fp32 per token: the vocab-parallel cross entropy's partial terms
};

/// One collective a style adds to a pass, at some steps of its module.
struct StyleCollective {
  Collective collective = Collective::all_reduce;
  Payload payload = Payload::none;
  At at = At::every_step;
  std::string_view label = {};  // reported as "<name> (<label>)": the step's name, the module's for
                                // routed rows and counts; no label: the step's name alone
};
inline constexpr std::size_t max_style_collectives = 3;

/// One style: everything the library decides from its kind.
struct StyleInfo {
  StyleKind kind = StyleKind::replicate;
  std::string_view name = {};          // to_string(kind)
  bool hook = false;                   // acts on a module scope's input or output (its StyleSpec's from
                                       // -> to: hook_effect); places no parameter
  bool splits_model = true;            // tokens are replicated on its axis (false: a data-like axis on
                                       // which each rank holds its own tokens)
  ParamPlacements params = {};         // what it places on its axis
  StepEffect effect = {};              // on a step of its module (for the experts: on gate_up)
  std::optional<StepEffect> closing = {};       // on the experts' down_proj, where it differs
  std::optional<Act> output_embedding_out = {};  // the output of the tied output embedding (an
                                                 // embedding step not reading token ids), where it differs
  Reduction reduce = {};               // its partial sums, and where
  StyleCollective forward[max_style_collectives] = {};   // besides the reduction, in order
  StyleCollective backward[max_style_collectives] = {};  // besides the reduction's adjoint, in order

  /// The effect of one of its steps.
  constexpr StepEffect effect_at(ParamKind param) const noexcept {
    return param == ParamKind::experts_down && closing ? *closing : effect;
  }
};

namespace detail::style_words {
// The table and its short words (kept out of namespace meshplan).
using K = StyleKind;
inline constexpr PlacementSpec Replicate = PlacementSpec::replicate();
constexpr PlacementSpec Shard(int dim) noexcept { return PlacementSpec::shard(dim); }
/// StridedShard with split factor 2: a fused gate||up dim, rank r holding [gate_r | up_r].
constexpr PlacementSpec StridedShard(int dim) noexcept { return PlacementSpec::strided_shard(dim, 2); }
inline constexpr ActSet token_splits{true, true, false};  // whole weights: any split of the tokens
inline constexpr ActSet anything{true, true, true};
using detail::only;
inline constexpr StyleCollective input_gradient_all_reduce{Collective::all_reduce, Payload::input_gradient};

// clang-format off
inline constexpr StyleInfo table[] = {
  // every parameter whole on every rank of the axis (no axis)
  {.kind = K::replicate, .name = "replicate", .splits_model = false,
   .params = ParamPlacements::all(Replicate),
   .effect = {.accepts = token_splits, .within_heads = true}},

  // weight [out, in] Shard(0): input Replicate, output Shard(-1)
  {.kind = K::colwise, .name = "colwise",
   .params = {.linear = Shard(0), .linear_bias = Shard(0), .lm_head = Shard(0)},
   .effect = {.accepts = only(Act::replicate), .out = Act::shard_hidden},
   .backward = {input_gradient_all_reduce}},

  // colwise, then all-gather the output: output Replicate
  {.kind = K::colwise_gather_output, .name = "colwise_gather_output",
   .params = {.linear = Shard(0), .linear_bias = Shard(0), .lm_head = Shard(0)},
   .effect = {.accepts = only(Act::replicate), .out = Act::replicate},
   .forward = {{Collective::all_gather, Payload::output}},
   .backward = {input_gradient_all_reduce}},

  // weight Shard(1), bias Replicate: input Shard(-1), partial sums all-reduced
  {.kind = K::rowwise, .name = "rowwise",
   .params = {.linear = Shard(1), .linear_bias = Replicate /* added once, after the reduction */, .experts_down = Shard(2)},
   .effect = {.accepts = only(Act::shard_hidden), .out = Act::replicate},
   .reduce = {PartialReduce::all_reduce, At::every_step}},

  // rowwise with reduce-scatter: output Shard(1) (sequence parallel)
  {.kind = K::rowwise_reduce_scatter, .name = "rowwise_reduce_scatter",
   .params = {.linear = Shard(1), .linear_bias = Replicate, .experts_down = Shard(2)},
   .effect = {.accepts = only(Act::shard_hidden), .out = Act::shard_seq},
   .reduce = {PartialReduce::reduce_scatter, At::every_step}},

  // fused gate||up weight, StridedShard(out, 2): rank r holds [gate_r | up_r]
  {.kind = K::packed_colwise, .name = "packed_colwise",
   .params = {.linear = StridedShard(0), .linear_bias = StridedShard(0), .experts_gate_up = StridedShard(1)},
   .effect = {.accepts = only(Act::replicate), .out = Act::shard_hidden},
   .backward = {input_gradient_all_reduce}},

  // embedding Shard(vocab): masked lookup, all-reduce out; tied as the output embedding, vocab-sharded logits
  {.kind = K::vocab_parallel, .name = "vocab_parallel",
   .params = {.embedding = Shard(0)},
   .effect = {.accepts = only(Act::replicate), .out = Act::replicate},
   .output_embedding_out = Act::shard_hidden,
   .reduce = {PartialReduce::all_reduce, At::token_ids}},

  // vocab_parallel with reduce-scatter: output Shard(1)
  {.kind = K::vocab_parallel_reduce_scatter, .name = "vocab_parallel_reduce_scatter",
   .params = {.embedding = Shard(0)},
   .effect = {.accepts = only(Act::replicate), .out = Act::shard_seq},
   .output_embedding_out = Act::shard_hidden,
   .reduce = {PartialReduce::reduce_scatter, At::token_ids}},

  // norms on Shard(1) activations; weight Replicate, grads all-reduced
  {.kind = K::sequence_parallel, .name = "sequence_parallel",
   .params = {.norm = Replicate},
   .effect = {.accepts = only(Act::shard_seq), .out = Act::shard_seq}},

  // weight Replicate on head-sharded input (q_norm/k_norm); grads all-reduced
  {.kind = K::replicated_with_grad_allreduce, .name = "replicated_with_grad_allreduce",
   .params = {.norm = Replicate, .head_norm = Replicate},
   .effect = {.accepts = anything}},

  // module hook: convert the input placement (all-gather or split); as a parameter style (refused) it passes tokens through
  {.kind = K::prepare_input, .name = "prepare_input", .hook = true,
   .effect = {.accepts = token_splits, .within_heads = true}},

  // module hook: convert the output placement
  {.kind = K::prepare_output, .name = "prepare_output", .hook = true,
   .effect = {.accepts = token_splits, .within_heads = true}},

  // experts dim on an EP axis: all-to-all-v dispatch of routed rows, and combine
  {.kind = K::moe_experts, .name = "moe_experts", .splits_model = false,
   .params = {.experts_gate_up = Shard(0), .experts_down = Shard(0)},
   .effect = {.accepts = only(Act::shard_seq), .out = Act::shard_seq},
   .forward = {{Collective::all_to_all, Payload::expert_counts, At::opening, "counts"},
               {Collective::all_to_all, Payload::routed_rows, At::opening, "dispatch"},
               {Collective::all_to_all, Payload::routed_rows, At::closing, "combine"}},
   .backward = {{Collective::all_to_all, Payload::routed_rows, At::opening, "dispatch"},
                {Collective::all_to_all, Payload::routed_rows, At::closing, "combine"}}},

  // expert intermediate dim on a TP axis: gate_up colwise (packed), down rowwise; partial sums all-reduced
  {.kind = K::expert_tp, .name = "expert_tp",
   .params = {.experts_gate_up = StridedShard(1), .experts_down = Shard(2)},
   .effect = {.accepts = only(Act::replicate), .out = Act::shard_hidden},
   .closing = StepEffect{.accepts = only(Act::shard_hidden), .out = Act::replicate},
   .reduce = {PartialReduce::all_reduce, At::closing},
   .backward = {{Collective::all_reduce, Payload::routing_weights, At::closing, "routing weights"},
                {Collective::all_reduce, Payload::input_gradient, At::opening}}},

  // expert_tp with reduce-scatter: output Shard(1)
  {.kind = K::expert_tp_reduce_scatter, .name = "expert_tp_reduce_scatter",
   .params = {.experts_gate_up = StridedShard(1), .experts_down = Shard(2)},
   .effect = {.accepts = only(Act::replicate), .out = Act::shard_hidden},
   .closing = StepEffect{.accepts = only(Act::shard_hidden), .out = Act::shard_seq},
   .reduce = {PartialReduce::reduce_scatter, At::closing},
   .backward = {{Collective::all_reduce, Payload::routing_weights, At::closing, "routing weights"},
                {Collective::all_reduce, Payload::input_gradient, At::opening}}},

  // router weight Replicate; routes the tokens each rank holds
  {.kind = K::router, .name = "router", .splits_model = false,
   .params = {.router = Replicate, .router_bias = Replicate},
   .effect = {.accepts = token_splits, .within_heads = true}},

  // lm_head Shard(vocab) and a vocab-parallel cross entropy
  {.kind = K::loss_parallel, .name = "loss_parallel",
   .params = {.embedding = Shard(0), .lm_head = Shard(0)},
   .effect = {.accepts = only(Act::replicate), .out = Act::shard_hidden},
   .forward = {{Collective::all_reduce, Payload::loss_terms, At::loss}},
   .backward = {input_gradient_all_reduce}},
};
// clang-format on
}  // namespace detail::style_words

/// The table, one StyleInfo per StyleKind in its order.
inline constexpr const auto& style_table = detail::style_words::table;

namespace detail {
constexpr bool style_table_in_order() noexcept {
  for (std::size_t i = 0; i < std::size(style_table); ++i)
    if (static_cast<std::size_t>(style_table[i].kind) != i) return false;
  return true;
}

/// A reduction writes what the step's effect says: all_reduce Replicate, reduce_scatter
/// Shard(1), from a split (Shard(-1)) or a masked lookup (token ids) input.
constexpr bool style_reductions_agree() noexcept {
  for (const StyleInfo& s : style_table) {
    if (s.reduce.how == PartialReduce::none) continue;
    const StepEffect e = s.reduce.at == At::closing ? s.effect_at(ParamKind::experts_down) : s.effect;
    const Act want = s.reduce.how == PartialReduce::all_reduce ? Act::replicate : Act::shard_seq;
    if (!e.out || *e.out != want) return false;
  }
  return true;
}
}  // namespace detail

static_assert(std::size(style_table) == style_kind_count, "meshplan: one style_table entry per StyleKind");
static_assert(detail::style_table_in_order(), "meshplan: style_table's entries are in StyleKind's order");
static_assert(detail::style_reductions_agree(), "meshplan: a style's reduction writes what its effect says");

/// The description of one style.
constexpr const StyleInfo& style_info(StyleKind k) noexcept { return style_table[static_cast<std::size_t>(k)]; }

constexpr std::string_view to_string(StyleKind k) noexcept {
  return static_cast<std::size_t>(k) < style_kind_count ? style_info(k).name : std::string_view("?");
}

/// Hooks act on a module scope's input or output; all other styles place parameters.
constexpr bool is_hook(StyleKind k) noexcept { return style_info(k).hook; }

/// Axes where tokens are replicated at the input: those that split model tensors. On all
/// other axes (data, expert parallel) each rank holds its own tokens.
constexpr bool splits_model(StyleKind k) noexcept { return style_info(k).splits_model; }

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
