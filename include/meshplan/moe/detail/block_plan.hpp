#pragma once
// What a plan asks of the MoE block, read from its entries at compile time: the EP axis
// (moe_experts), the axis splitting each expert's intermediate dim and how its partial
// sums are reduced, the same for the shared experts, and the hooks on "layers.*.mlp".
// MoEBlock picks its pipeline from this with `if constexpr`.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <array>
#include <cstddef>
#include <span>
#include <string_view>

#include "meshplan/plan/detail/param_placement.hpp"
#include "meshplan/plan/detail/pattern.hpp"
#include "meshplan/plan/plan.hpp"
#include "meshplan/plan/style.hpp"

namespace meshplan {

struct MoEHook {
  std::string_view axis;
  Act from = Act::replicate;
  Act to = Act::replicate;
};

struct MoEBlockPlan {
  std::string_view ep_axis;          // experts split over this axis; empty: every expert local
  std::string_view expert_tp_axis;   // each expert's intermediate dim split over this axis
  PartialReduce expert_reduce = PartialReduce::none;
  std::string_view shared_tp_axis;   // the shared experts' intermediate dim split over this axis
  PartialReduce shared_reduce = PartialReduce::none;
  std::array<MoEHook, 4> entry{};    // prepare_input hooks on layers.*.mlp, in entry order
  std::size_t entry_count = 0;
  std::array<MoEHook, 4> exit{};     // prepare_output hooks
  std::size_t exit_count = 0;

  constexpr bool expert_parallel() const noexcept { return !ep_axis.empty(); }
  /// Partial sums reduce-scattered onto sequence shards, which must then be equal.
  constexpr bool reduce_scatters() const noexcept {
    return expert_reduce == PartialReduce::reduce_scatter || shared_reduce == PartialReduce::reduce_scatter;
  }
};

namespace detail {
constexpr const EntrySpec* entry_for(std::span<const EntrySpec> plan, std::string_view param) noexcept {
  EntryMatch m = match_param(param, plan);
  return m.count == 1 ? &plan[m.first] : nullptr;
}

/// The axis a style (on `param`'s entry, a down projection of kind `kind`) splits the
/// contracted dim with, and the reduce its output needs: the style's partial sums at that
/// step (style table: rowwise, expert_tp and their reduce-scatter forms).
constexpr void split_of(std::span<const EntrySpec> plan, std::string_view param, ParamKind kind, std::string_view& axis,
                        PartialReduce& reduce) noexcept {
  const EntrySpec* e = entry_for(plan, param);
  if (!e) return;
  for (const auto& s : e->style_list()) {
    const Reduction& r = style_info(s.kind).reduce;
    if (r.how != PartialReduce::none && happens_at(r.at, {kind})) {
      axis = s.axis;
      reduce = r.how;
    }
  }
}
}  // namespace detail

constexpr MoEBlockPlan moe_block_plan(std::span<const EntrySpec> plan) noexcept {
  MoEBlockPlan p;
  // Which style is which is a kind compared (the EP style, the entry and exit hooks); what
  // a style does is read from the style table (split_of).
  if (const EntrySpec* e = detail::entry_for(plan, "layers.*.mlp.experts.gate_up_proj"))
    for (const auto& s : e->style_list())
      if (s.kind == StyleKind::moe_experts) p.ep_axis = s.axis;
  // The down projection decides how the split intermediate dim is summed.
  detail::split_of(plan, "layers.*.mlp.experts.down_proj", ParamKind::experts_down, p.expert_tp_axis, p.expert_reduce);
  detail::split_of(plan, "layers.*.mlp.shared_experts.down_proj.weight", ParamKind::linear, p.shared_tp_axis,
                   p.shared_reduce);
  for (const auto& e : plan)
    if (e.is_hook_entry() && matches_module(e.pattern, "layers.*.mlp"))
      for (const auto& s : e.style_list()) {
        MoEHook h{s.axis, s.from, s.to};
        if (s.kind == StyleKind::prepare_input && p.entry_count < p.entry.size()) p.entry[p.entry_count++] = h;
        if (s.kind == StyleKind::prepare_output && p.exit_count < p.exit.size()) p.exit[p.exit_count++] = h;
      }
  return p;
}

}  // namespace meshplan
