#pragma once
// Redistribution: the collectives that turn one layout of a tensor into another.
//
// Per mesh axis, a change of placement is one of:
//   Shard(d) or StridedShard -> Replicate   all_gather
//   Partial -> Replicate                    all_reduce
//   Partial -> Shard(d)                     reduce_scatter
//   Shard(i) -> Shard(j), i != j            all_to_all
//   Replicate -> Shard(d) or StridedShard   local_split (no communication)
//   Replicate -> Partial                    local_partition (sum: each rank keeps x/n;
//                                           avg, max, min: each rank keeps x)
// and a transition that has no direct collective goes through Replicate (StridedShard to
// Shard, Partial to StridedShard). Shard -> Partial and Partial(a) -> Partial(b) are
// refused. Axes are processed as DTensor's greedy planner does: first from the last mesh
// axis to the first, replicating any axis whose target shard would sit on differently
// sharded earlier axes, then from the first axis to the last to reach the targets.
//
// The planner is constexpr: `redistribution<FromLayout, ToLayout>::steps` is computed by
// the compiler, and `plan_redistribution` gives the same steps at run time.

#include "meshplan/core/detail/public_begin.hpp"

#include <array>
#include <cstddef>
#include <span>
#include <string_view>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/placement/layout.hpp"
#include "meshplan/placement/placement.hpp"

namespace meshplan {

enum class Collective : unsigned char {
  all_gather,
  all_reduce,
  reduce_scatter,
  all_to_all,
  local_split,
  local_partition,
};

constexpr std::string_view to_string(Collective c) noexcept {
  switch (c) {
    case Collective::all_gather: return "all_gather";
    case Collective::all_reduce: return "all_reduce";
    case Collective::reduce_scatter: return "reduce_scatter";
    case Collective::all_to_all: return "all_to_all";
    case Collective::local_split: return "local_split";
    case Collective::local_partition: return "local_partition";
  }
  return "?";
}

/// True for the steps that move data between ranks.
constexpr bool communicates(Collective c) noexcept {
  return c != Collective::local_split && c != Collective::local_partition;
}

struct RedistributeStep {
  std::size_t axis;
  Collective collective;
  PlacementSpec from;
  PlacementSpec to;
  friend constexpr bool operator==(const RedistributeStep&, const RedistributeStep&) = default;
};

namespace placement_rules {
constexpr Message redistribution_supported(std::string_view axis, const PlacementSpec& from,
                                           const PlacementSpec& to) noexcept {
  if (from.is_shard() && to.is_partial())
    return Message::rule("redistribution_supported") << "cannot redistribute " << from << " to " << to
                                                     << " on mesh axis '" << axis
                                                     << "': a sharded tensor has no partial form";
  if (from.is_partial() && to.is_partial() && from.op != to.op)
    return Message::rule("redistribution_supported") << "cannot redistribute " << from << " to " << to
                                                     << " on mesh axis '" << axis
                                                     << "': partial values of one reduction cannot become another's";
  return {};
}

constexpr Message same_tensor(std::span<const index_t> from, std::span<const index_t> to) noexcept {
  bool same = from.size() == to.size();
  for (std::size_t d = 0; same && d < from.size(); ++d) same = from[d] == to[d];
  if (same) return {};
  return Message::rule("redistribution_same_tensor")
         << "a redistribution keeps the global extents; the two layouts describe tensors of different shapes";
}
}  // namespace placement_rules

namespace detail {
/// Appends the steps of one axis's transition `from -> to` (from != to, supported).
template <class Out>
constexpr void transition_steps(std::size_t axis, const PlacementSpec& from, const PlacementSpec& to, Out& out) {
  const auto replicate = PlacementSpec::replicate();
  auto step = [&](Collective c, const PlacementSpec& a, const PlacementSpec& b) {
    out.push_back(RedistributeStep{axis, c, a, b});
  };
  if (from == to) return;
  if (to.is_replicate()) {
    step(from.is_partial() ? Collective::all_reduce : Collective::all_gather, from, to);
  } else if (from.is_replicate()) {
    step(to.is_partial() ? Collective::local_partition : Collective::local_split, from, to);
  } else if (from.is_partial() && to.kind == PlacementKind::shard) {
    step(Collective::reduce_scatter, from, to);
  } else if (from.kind == PlacementKind::shard && to.kind == PlacementKind::shard) {
    step(Collective::all_to_all, from, to);
  } else {
    // No single collective: through Replicate.
    transition_steps(axis, from, replicate, out);
    transition_steps(axis, replicate, to, out);
  }
}

/// Whether axes before `axis` shard tensor dim `dim` in the same way in `a` and `b`.
constexpr bool same_earlier_sharding(std::span<const PlacementSpec> a, std::span<const PlacementSpec> b,
                                     std::size_t axis, int dim) noexcept {
  for (std::size_t i = 0; i < axis; ++i) {
    bool sa = a[i].is_shard(dim), sb = b[i].is_shard(dim);
    if (sa != sb || (sa && !(a[i] == b[i]))) return false;
  }
  return true;
}

template <std::size_t N>
struct StepList {
  std::array<RedistributeStep, N> items{};
  std::size_t count = 0;
  constexpr void push_back(const RedistributeStep& s) { items[count++] = s; }
};
}  // namespace detail

/// The steps from `from` to `to` (one placement per axis, dims normalized), appended to
/// `out`; returns the first broken rule (then `out` is unspecified).
template <class Out>
constexpr Message plan_redistribution(std::span<const std::string_view> axis_names,
                                      std::span<const PlacementSpec> from, std::span<const PlacementSpec> to,
                                      Out& out) {
  if (auto m = placement_rules::placement_count(from.size(), to.size()); !m.ok()) return m;
  for (std::size_t a = 0; a < from.size(); ++a)
    if (auto m = placement_rules::redistribution_supported(axis_names[a], from[a], to[a]); !m.ok()) return m;

  std::array<PlacementSpec, 16> current{};
  if (from.size() > current.size())
    return Message::rule("redistribution_supported") << "redistribution supports meshes of up to 16 axes";
  for (std::size_t a = 0; a < from.size(); ++a) current[a] = from[a];
  std::span<const PlacementSpec> now(current.data(), from.size());

  for (std::size_t a = from.size(); a-- > 0;) {
    PlacementSpec target = to[a];
    if (target.is_shard() && !detail::same_earlier_sharding(now, to, a, target.dim))
      target = PlacementSpec::replicate();
    detail::transition_steps(a, current[a], target, out);
    current[a] = target;
  }
  for (std::size_t a = 0; a < from.size(); ++a) {
    detail::transition_steps(a, current[a], to[a], out);
    current[a] = to[a];
  }
  return {};
}

/// Run-time form: the steps, or RuleViolation.
inline std::vector<RedistributeStep> redistribution_steps(std::span<const std::string_view> axis_names,
                                                          std::span<const PlacementSpec> from,
                                                          std::span<const PlacementSpec> to) {
  std::vector<RedistributeStep> steps;
  enforce(plan_redistribution(axis_names, from, to, steps));
  return steps;
}

namespace detail {
template <class From, class To>
constexpr Message check_redistribution() noexcept {
  if constexpr (!std::is_same_v<typename From::mesh_type, typename To::mesh_type>) {
    return Message::rule("redistribution_same_mesh") << "a redistribution stays on one mesh; the layouts use '"
                                                     << type_name<typename From::mesh_type>() << "' and '"
                                                     << type_name<typename To::mesh_type>() << "'";
  } else {
    constexpr auto n = From::placements.size();
    std::array<index_t, From::tensor_rank> fe{}, te{};
    for (std::size_t d = 0; d < From::tensor_rank; ++d) fe[d] = From::extents_type::static_extent(d);
    for (std::size_t d = 0; d < To::tensor_rank; ++d) te[d] = To::extents_type::static_extent(d);
    if (From::tensor_rank != To::tensor_rank || !placement_rules::same_tensor(fe, te).ok())
      return placement_rules::same_tensor(fe, te);
    StepList<4 * n> steps;
    return plan_redistribution(From::mesh_type::names, From::placements, To::placements, steps);
  }
}

template <class From, class To>
constexpr auto redistribution_step_list() noexcept {
  constexpr auto n = From::placements.size();
  StepList<4 * n> steps;
  if constexpr (check_redistribution<From, To>().ok())
    (void)plan_redistribution(From::mesh_type::names, From::placements, To::placements, steps);
  return steps;
}
}  // namespace detail

/// The redistribution from layout type From to layout type To, computed when compiling.
/// `steps` holds the collectives in order; an empty list means nothing to do.
template <class From, class To>
struct redistribution {
  static_assert(rule_check<detail::check_redistribution<From, To>()>::passed);

 private:
  static constexpr auto list_ = detail::redistribution_step_list<From, To>();

 public:
  static constexpr std::size_t size = list_.count;
  static constexpr std::array<RedistributeStep, list_.count> steps = [] {
    std::array<RedistributeStep, list_.count> s{};
    for (std::size_t i = 0; i < list_.count; ++i) s[i] = list_.items[i];
    return s;
  }();
  static constexpr bool is_noop = size == 0;

  /// True when the redistribution uses collective `c` on some axis.
  static constexpr bool uses(Collective c) noexcept {
    for (const auto& s : steps)
      if (s.collective == c) return true;
    return false;
  }
};

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
