#pragma once
// The rules a parallel plan must follow, each written once as a constexpr function that
// returns an empty Message when it holds. validate.hpp applies them in order; the same
// functions run at compile time (static sizes) and at run time.

#include "meshplan/core/detail/public_begin.hpp"

#include <array>
#include <cstddef>
#include <span>
#include <string_view>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/model/inventory.hpp"
#include "meshplan/placement/placement.hpp"
#include "meshplan/plan/plan.hpp"
#include "meshplan/plan/style.hpp"

namespace meshplan::plan_rules {

/// The axis that replicates a whole plan: data parallelism.
inline constexpr std::string_view data_parallel_axis = "dp";

/// Whether some style of the plan names `axis`.
constexpr bool plan_uses_axis(std::span<const EntrySpec> plan, std::string_view axis) noexcept {
  for (const auto& e : plan)
    for (const auto& s : e.style_list())
      if (s.kind != StyleKind::replicate && s.axis == axis) return true;
  return false;
}

/// A mesh axis with more than one rank is either named by the plan or the data-parallel
/// axis: an axis nothing shards would silently make replicas that compute the same thing.
/// (Size 1 is harmless; a size known only at run time is checked at run time.)
constexpr Message axis_used(std::string_view axis, index_t size, std::span<const EntrySpec> plan) noexcept {
  if (size == 1 || size == dynamic || axis == data_parallel_axis || plan_uses_axis(plan, axis)) return {};
  Message m = Message::rule("axis_used");
  m << "mesh axis '" << axis << "' (size " << size << ") is used by no entry of the plan, whose axes are ";
  std::array<std::string_view, 8> listed{};
  std::size_t named = 0;
  for (const auto& e : plan)
    for (const auto& s : e.style_list()) {
      if (s.kind == StyleKind::replicate || named == listed.size()) continue;
      bool seen = false;
      for (std::size_t i = 0; i < named; ++i) seen = seen || listed[i] == s.axis;
      if (seen) continue;
      m << (named ? ", '" : "'") << s.axis << "'";
      listed[named++] = s.axis;
    }
  if (named == 0) m << "none";
  m << "; only '" << data_parallel_axis << "', the data-parallel axis, may go unused: drop '" << axis
    << "' or give it size 1, or choose a plan that shards over it";
  return m;
}

/// With tie_word_embeddings the input and output embeddings are one weight: the plan's
/// entries for them must place it alike on every axis.
constexpr Message tied_embeddings_agree(std::string_view head_entry, std::string_view embed_entry,
                                        std::string_view axis, const PlacementSpec& head,
                                        const PlacementSpec& embed) noexcept {
  if (head == embed) return {};
  Message m = Message::rule("tied_embeddings_agree");
  m << "with tie_word_embeddings, 'embed_tokens.weight' is also the output embedding, but plan entry '"
    << head_entry << "' places it as " << head << " and entry '" << embed_entry << "' as " << embed
    << " on mesh axis '" << axis << "'; give both one placement";
  return m;
}

/// Every axis a style names exists in the mesh.
constexpr Message style_axis_known(std::string_view pattern, const StyleSpec& style,
                                   std::span<const std::string_view> axes) noexcept {
  if (style.kind == StyleKind::replicate) return {};
  for (auto a : axes)
    if (a == style.axis) return {};
  Message m = Message::rule("style_axis_known");
  m << "plan entry '" << pattern << "' uses style " << style << ", but the mesh has no axis '" << style.axis
    << "'; its axes are";
  for (std::size_t i = 0; i < axes.size(); ++i) m << (i ? ", '" : " '") << axes[i] << "'";
  return m;
}

/// Within one entry, a mesh axis has one parameter style (hooks may both enter and leave).
constexpr Message entry_axis_once(const EntrySpec& e) noexcept {
  for (std::size_t i = 0; i < e.style_count; ++i)
    for (std::size_t j = i + 1; j < e.style_count; ++j) {
      const auto &a = e.styles[i], &b = e.styles[j];
      bool clash = a.axis == b.axis && (a.kind == StyleKind::replicate || b.kind == StyleKind::replicate ||
                                        !is_hook(a.kind) || a.kind == b.kind);
      if (clash)
        return Message::rule("entry_axis_once") << "plan entry '" << e.pattern << "' gives mesh axis '" << a.axis
                                                << "' two styles (" << a << " and " << b << "); give each axis one";
    }
  return {};
}

/// An entry places parameters or hooks a module scope, not both; `replicate` stands alone.
constexpr Message entry_style_kinds(const EntrySpec& e) noexcept {
  for (std::size_t i = 0; i < e.style_count && e.style_count > 1; ++i)
    if (e.styles[i].kind == StyleKind::replicate)
      return Message::rule("entry_style_kinds") << "plan entry '" << e.pattern
                                                << "' combines replicate with other styles; replicate keeps a "
                                                   "parameter whole on every axis, so it stands alone";
  for (std::size_t i = 1; i < e.style_count; ++i)
    if (is_hook(e.styles[i].kind) != is_hook(e.styles[0].kind))
      return Message::rule("entry_style_kinds")
             << "plan entry '" << e.pattern << "' mixes a module hook (" << (is_hook(e.styles[0].kind) ? e.styles[0] : e.styles[i])
             << ") with a parameter style; write them as two entries";
  return {};
}

/// Every entry matches something: a parameter entry at least one parameter, a hook entry
/// at least one module scope.
constexpr Message entry_matches(const EntrySpec& e, bool matched) noexcept {
  if (matched || e.optional) return {};
  return Message::rule("entry_matches")
         << "plan entry '" << e.pattern << "' matches no "
         << (e.is_hook_entry() ? "module scope (hooks apply to layers.*.self_attn, layers.*.mlp and lm_head)"
                               : "parameter of this model")
         << "; remove it or fix the pattern";
}

/// Every parameter is matched by exactly one parameter entry.
constexpr Message param_matched_once(std::string_view param, std::size_t matches, std::string_view first,
                                     std::string_view second) noexcept {
  if (matches == 1) return {};
  if (matches == 0)
    return Message::rule("param_matched_once") << "parameter '" << param
                                               << "' is matched by no plan entry; every parameter needs exactly one "
                                                  "(use styles::replicate to keep it whole)";
  return Message::rule("param_matched_once") << "parameter '" << param << "' is matched by two plan entries, '"
                                             << first << "' and '" << second << "'; it needs exactly one";
}

/// A style can place this kind of parameter.
constexpr Message style_applies(const ParamInfo& p, std::string_view pattern, const StyleSpec& style,
                                bool applies) noexcept {
  if (applies) return {};
  return Message::rule("style_applies") << "plan entry '" << pattern << "' applies " << style << " to '" << p.name
                                        << "', which is " << to_string(p.kind) << "; " << to_string(style.kind)
                                        << " cannot place that";
}

/// One tensor dim is not split by plain Shard on two axes: the order of the splits would
/// be ambiguous (DTensor needs StridedShard for that).
constexpr Message dim_sharded_once(const ParamInfo& p, int dim, std::string_view first_axis,
                                   std::string_view second_axis) noexcept {
  return Message::rule("dim_sharded_once") << "'" << p.name << "' has dim " << dim << " sharded on mesh axes '"
                                           << first_axis << "' and '" << second_axis
                                           << "' with plain Shard; shard one dim on two axes only with StridedShard";
}

/// A dim counted in units of a hyperparameter splits in whole units: `shards` pieces per
/// packed part (the product of the sizes of the axes that shard it).
constexpr Message shard_divides(const ParamInfo& p, int dim, std::string_view axis, index_t shards) noexcept {
  const DimInfo& d = p.dims[static_cast<std::size_t>(dim)];
  if (d.units == 0 || shards <= 0 || d.units % shards == 0) return {};
  Message m = Message::rule(*d.rule);
  m << d.unit << " (" << d.units << ") is not divisible by " << shards;
  m << " (mesh axis '" << axis << "'), which shards dim " << dim << " of '" << p.name << "'";
  if (d.packed > 1) m << " (each of its " << d.packed << " packed halves)";
  return m;
}

constexpr Message activation_accepted(std::string_view axis, std::string_view step, std::string_view role,
                                      std::string_view slot, Act got, std::string_view producer,
                                      std::string_view expected) noexcept {
  return Message::rule("activation_consistent")
         << "on mesh axis '" << axis << "', '" << step << "'" << role << " reads '" << slot << "' as "
         << to_string(got) << " (written by '" << producer << "') but accepts only " << expected;
}

constexpr Message activation_agrees(std::string_view axis, std::string_view slot, std::string_view writer, Act wrote,
                                    std::string_view other, Act other_wrote) noexcept {
  if (wrote == other_wrote) return {};
  return Message::rule("activation_consistent")
         << "on mesh axis '" << axis << "', '" << writer << "' writes '" << slot << "' as " << to_string(wrote)
         << " but '" << other << "' writes it as " << to_string(other_wrote)
         << "; add the collective that converts one into the other (e.g. a reduce-scatter output, or a "
            "gather/split hook)";
}

/// The number of ranks launched equals the product of the mesh axes.
constexpr Message world_size_matches(index_t world, index_t mesh_size) noexcept {
  if (world == mesh_size) return {};
  return Message::rule("world_size_matches") << "the job has " << world << " ranks but the mesh has " << mesh_size
                                             << " (the product of its axis sizes); they must be equal";
}

/// Sequence parallelism splits the tokens evenly over its axis.
constexpr Message sequence_divisible(std::string_view axis, index_t tokens, index_t axis_size) noexcept {
  if (axis_size <= 0 || tokens % axis_size == 0) return {};
  return Message::rule("sequence_divisible")
         << "the sequence of " << tokens << " tokens does not divide evenly over mesh axis '" << axis << "' ("
         << axis_size << "), which the plan shards it on; pad it to " << (tokens / axis_size + 1) * axis_size
         << " tokens, or use a token count divisible by " << axis_size;
}

}  // namespace meshplan::plan_rules

#include "meshplan/core/detail/public_end.hpp"
