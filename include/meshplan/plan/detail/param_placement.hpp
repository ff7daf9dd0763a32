#pragma once
// Which entry covers each parameter, and the placement of a parameter on every mesh axis.
// Shared by validation (which checks these) and lowering (which reports them).

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cstddef>
#include <optional>
#include <span>
#include <vector>

#include "meshplan/model/inventory.hpp"
#include "meshplan/placement/placement.hpp"
#include "meshplan/plan/detail/mesh_view.hpp"
#include "meshplan/plan/detail/pattern.hpp"
#include "meshplan/plan/plan.hpp"
#include "meshplan/plan/detail/style_semantics.hpp"

namespace meshplan {

inline constexpr std::size_t no_entry = static_cast<std::size_t>(-1);

/// The parameter entries matching `param`: how many, and the first two.
struct EntryMatch {
  std::size_t count = 0;
  std::size_t first = no_entry;
  std::size_t second = no_entry;
};

constexpr EntryMatch match_param(std::string_view param, std::span<const EntrySpec> plan) noexcept {
  EntryMatch m;
  for (std::size_t e = 0; e < plan.size(); ++e) {
    if (plan[e].is_hook_entry() || !matches_param(plan[e].pattern, param)) continue;
    if (m.count == 0) m.first = e;
    if (m.count == 1) m.second = e;
    ++m.count;
  }
  return m;
}

/// The entry's style on `axis`, if it has one of the wanted kind (hooks or parameter styles).
constexpr std::optional<StyleSpec> style_on_axis(const EntrySpec& e, std::string_view axis, bool hooks,
                                                 std::optional<StyleKind> kind = std::nullopt) noexcept {
  for (const auto& s : e.style_list())
    if (s.axis == axis && is_hook(s.kind) == hooks && (!kind || s.kind == *kind)) return s;
  return std::nullopt;
}

/// One placement per mesh axis for a parameter placed by `entry` (Replicate where the
/// entry has no style; styles that cannot place the parameter are left Replicate, and
/// reported by validation).
constexpr std::vector<PlacementSpec> param_placements(const ParamInfo& p, const EntrySpec& entry, const MeshView& mesh) {
  std::vector<PlacementSpec> placements(mesh.ndim(), PlacementSpec::replicate());
  for (const auto& s : entry.style_list()) {
    std::size_t a = mesh.index_of(s.axis);
    if (a == no_axis) continue;
    if (auto placement = placement_on_axis(s.kind, p.kind)) placements[a] = *placement;
  }
  return placements;
}

}  // namespace meshplan
