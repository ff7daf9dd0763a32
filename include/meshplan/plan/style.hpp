#pragma once
// Parallel styles: how one module is split along one named mesh axis.
//
// A style names its axis (`colwise<"tp">`); what it does there is its entry in the style
// table (style_table.hpp): the placement of each parameter it covers on that axis, the
// placement of the activations the module reads and writes there, hence the collectives it
// inserts. Styles are empty tag types; StyleSpec is the same information as constexpr data.
//
// As in DTensor (`RowwiseParallel(output_layouts=Shard(1))`), a style whose output can be
// placed two ways takes that placement as a type: `rowwise<"tp">` all-reduces its output
// (Replicate), `rowwise<"tp", Shard<1>>` reduce-scatters it onto sequence shards. Hooks take
// the placements they convert from and to: `prepare_input<"tp", Shard<1>, Replicate>`.
// Activations are placed as transformers' [batch, sequence, hidden] tensors: Replicate,
// Shard<1> (the sequence) or Shard<-1> (the hidden dim; Shard<2> is the same). Each
// (style, output placement) pair is one row of the style table, since each inserts other
// collectives; the long names (`rowwise_reduce_scatter`) remain as aliases.

#include "meshplan/core/detail/public_begin.hpp"

#include <string_view>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/fixed_string.hpp"
#include "meshplan/core/detail/type_name.hpp"
#include "meshplan/placement/placement.hpp"
#include "meshplan/plan/style_table.hpp"

namespace meshplan {

struct StyleSpec {
  StyleKind kind = StyleKind::replicate;
  std::string_view axis;   // empty for replicate
  Act from = Act::replicate;  // hooks: the placement converted from ...
  Act to = Act::replicate;    // ... and to
};

/// "colwise on 'tp'", "prepare_input Shard(1) -> Replicate on 'tp'", "replicate".
constexpr Message& operator<<(Message& m, const StyleSpec& s) noexcept {
  m << to_string(s.kind);
  if (is_hook(s.kind)) m << " " << to_string(s.from) << " -> " << to_string(s.to);
  if (!s.axis.empty()) m << " on '" << s.axis << "'";
  return m;
}

namespace style_rules {
/// An activation is placed Replicate, Shard<1> (sequence) or Shard<-1> / Shard<2> (hidden).
/// `owner` and `role` say which placement: "rowwise", "output placement".
constexpr Message activation_placement(std::string_view owner, std::string_view role, bool is_placement,
                                       const PlacementSpec& p, std::string_view spelling) noexcept {
  if (is_placement &&
      (p.is_replicate() || (p.kind == PlacementKind::shard && (p.dim == 1 || p.dim == 2 || p.dim == -1))))
    return {};
  return Message::rule("activation_placement")
         << owner << "'s " << role << " is '" << spelling
         << "'; an activation ([batch, sequence, hidden]) is placed Replicate, Shard<1> (the sequence) or "
            "Shard<-1> (the hidden dim)";
}

/// A style's output placement is one of the two it offers.
constexpr Message output_placement(std::string_view style, std::string_view spelling, Act got, Act first,
                                   Act second) noexcept {
  if (got == first || got == second) return {};
  return Message::rule("style_output_placement") << style << "'s output placement is '" << spelling
                                                 << "'; it writes " << to_string(first) << " or "
                                                 << to_string(second);
}
}  // namespace style_rules

namespace detail {
template <class P>
constexpr PlacementSpec placement_spec_of() noexcept {
  if constexpr (Placement<P>) return P::spec;
  else return {};
}

/// The activation placement a placement type stands for; Replicate for one that
/// activation_placement refuses (whose static_assert is then the only error).
template <class P>
constexpr Act act_of() noexcept {
  constexpr PlacementSpec p = placement_spec_of<P>();
  if constexpr (Placement<P> && p.kind == PlacementKind::shard) return p.dim == 1 ? Act::shard_seq : Act::shard_hidden;
  else return Act::replicate;
}

template <class P>
constexpr Message check_activation_placement(std::string_view owner, std::string_view role) noexcept {
  return style_rules::activation_placement(owner, role, Placement<P>, placement_spec_of<P>(), type_name<P>());
}

template <class Output, Act first, Act second>
constexpr Message check_output(std::string_view style) noexcept {
  return first_of({check_activation_placement<Output>(style, "output placement"),
                   style_rules::output_placement(style, type_name<Output>(), act_of<Output>(), first, second)});
}
}  // namespace detail

namespace styles {

template <StyleKind K, fixed_string Axis>
struct on_axis {
  static constexpr StyleSpec spec{K, Axis.view(), Act::replicate, Act::replicate};
};

/// A style with two output placements; `Output` picks the row of the style table.
template <fixed_string Name, fixed_string Axis, class Output, StyleKind Plain, Act PlainOutput, StyleKind Variant,
          Act VariantOutput>
struct with_output {
  static_assert(rule_check<detail::check_output<Output, PlainOutput, VariantOutput>(Name.view())>::passed);
  static constexpr StyleSpec spec{detail::act_of<Output>() == VariantOutput ? Variant : Plain, Axis.view(),
                                  Act::replicate, Act::replicate};
};

struct replicate {
  static constexpr StyleSpec spec{StyleKind::replicate, {}, Act::replicate, Act::replicate};
};
/// Splits the output features; the output stays split (Shard<-1>) or is all-gathered (Replicate).
template <fixed_string Axis = "tp", class Output = Shard<-1>>
struct colwise : with_output<"colwise", Axis, Output, StyleKind::colwise, Act::shard_hidden,
                             StyleKind::colwise_gather_output, Act::replicate> {};
/// Splits the input features; the partial output is all-reduced (Replicate) or
/// reduce-scattered onto sequence shards (Shard<1>).
template <fixed_string Axis = "tp", class Output = Replicate>
struct rowwise : with_output<"rowwise", Axis, Output, StyleKind::rowwise, Act::replicate,
                             StyleKind::rowwise_reduce_scatter, Act::shard_seq> {};
template <fixed_string Axis = "tp">
struct packed_colwise : on_axis<StyleKind::packed_colwise, Axis> {};
/// Splits the vocabulary of an input embedding; its partial lookups are all-reduced
/// (Replicate) or reduce-scattered onto sequence shards (Shard<1>).
template <fixed_string Axis = "tp", class Output = Replicate>
struct vocab_parallel : with_output<"vocab_parallel", Axis, Output, StyleKind::vocab_parallel, Act::replicate,
                                    StyleKind::vocab_parallel_reduce_scatter, Act::shard_seq> {};
template <fixed_string Axis = "tp">
struct sequence_parallel : on_axis<StyleKind::sequence_parallel, Axis> {};
template <fixed_string Axis = "tp">
struct replicated_with_grad_allreduce : on_axis<StyleKind::replicated_with_grad_allreduce, Axis> {};
template <fixed_string Axis = "ep">
struct moe_experts : on_axis<StyleKind::moe_experts, Axis> {};
/// Splits every expert's width; the partial output is all-reduced (Replicate) or
/// reduce-scattered onto sequence shards (Shard<1>).
template <fixed_string Axis = "tp", class Output = Replicate>
struct expert_tp : with_output<"expert_tp", Axis, Output, StyleKind::expert_tp, Act::replicate,
                               StyleKind::expert_tp_reduce_scatter, Act::shard_seq> {};
template <fixed_string Axis = "ep">
struct router : on_axis<StyleKind::router, Axis> {};
template <fixed_string Axis = "tp">
struct loss_parallel : on_axis<StyleKind::loss_parallel, Axis> {};

/// Module hooks (transformers' PrepareModuleInput / PrepareModuleOutput): the placement an
/// activation is converted from, and to.
// The named forms below are classes rather than alias templates: nvcc's host code
// generation cannot spell alias templates that forward string template arguments.
template <fixed_string Axis, class From, class To>
struct prepare_input {
  static_assert(rule_check<first_of({detail::check_activation_placement<From>("prepare_input", "input placement"),
                                     detail::check_activation_placement<To>("prepare_input", "desired placement")})>::passed);
  static constexpr StyleSpec spec{StyleKind::prepare_input, Axis.view(), detail::act_of<From>(), detail::act_of<To>()};
};
template <fixed_string Axis, class From, class To>
struct prepare_output {
  static_assert(rule_check<first_of({detail::check_activation_placement<From>("prepare_output", "output placement"),
                                     detail::check_activation_placement<To>("prepare_output", "desired placement")})>::passed);
  static constexpr StyleSpec spec{StyleKind::prepare_output, Axis.view(), detail::act_of<From>(), detail::act_of<To>()};
};
/// All-gather a sequence-sharded input (entering attention or an MLP under SP).
template <fixed_string Axis = "tp">
struct gather_input : prepare_input<Axis, Shard<1>, Replicate> {};
/// Split a replicated input by tokens (each rank then routes its share).
template <fixed_string Axis = "tp">
struct split_input : prepare_input<Axis, Replicate, Shard<1>> {};
template <fixed_string Axis = "tp">
struct gather_output : prepare_output<Axis, Shard<1>, Replicate> {};
template <fixed_string Axis = "tp">
struct split_output : prepare_output<Axis, Replicate, Shard<1>> {};

// The long names of the styles with a second output placement.
template <fixed_string Axis = "tp">
struct colwise_gather_output : colwise<Axis, Replicate> {};
template <fixed_string Axis = "tp">
struct rowwise_reduce_scatter : rowwise<Axis, Shard<1>> {};
template <fixed_string Axis = "tp">
struct vocab_parallel_reduce_scatter : vocab_parallel<Axis, Shard<1>> {};
template <fixed_string Axis = "tp">
struct expert_tp_reduce_scatter : expert_tp<Axis, Shard<1>> {};

// transformers' style names, where one of ours has the same meaning.
template <fixed_string Axis = "tp">
struct embedding_rowwise : vocab_parallel<Axis> {};
template <fixed_string Axis = "ep">
struct grouped_gemm : moe_experts<Axis> {};
template <fixed_string Axis = "ep">
struct ep_router : router<Axis> {};
template <fixed_string Axis = "tp">
struct moe_tp_experts : expert_tp<Axis> {};
template <fixed_string Axis = "tp">
struct sequence_parallel_norm : sequence_parallel<Axis> {};
template <fixed_string Axis = "tp">
struct module_allgather : gather_input<Axis> {};

}  // namespace styles

template <class T>
concept Style = requires {
  { T::spec } -> std::convertible_to<StyleSpec>;
};

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
