#pragma once
// lower(): a validated plan as plain data: for every parameter, its placement on each mesh
// axis and the local shape a given rank holds.
//
//   auto params = mp::lower(Model::spec, mesh_spec, Plan::entries, rank);
//   for (auto& p : params) p.name, p.global_shape, p.placements, p.local_shape ...

#include "meshplan/core/detail/public_begin.hpp"

#include <cstddef>
#include <span>
#include <string_view>
#include <vector>

#include "meshplan/core/size.hpp"
#include "meshplan/mesh/mesh_spec.hpp"
#include "meshplan/model/inventory.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/placement/layout_spec.hpp"
#include "meshplan/plan/detail/param_placement.hpp"
#include "meshplan/plan/plan.hpp"
#include "meshplan/plan/validate.hpp"

namespace meshplan {

struct LoweredParam {
  ParamInfo info;                         // name, kind, dims, layer count
  std::string_view entry;                 // the pattern of the entry that placed it
  std::vector<StyleSpec> styles;          // that entry's styles
  std::vector<PlacementSpec> placements;  // one per mesh axis
  std::vector<index_t> global_shape;
  std::vector<index_t> local_shape;       // on the rank lowered for

  index_t local_elements() const noexcept {
    index_t n = 1;
    for (index_t e : local_shape) n *= e;
    return n;
  }
  /// The layout of this parameter on the mesh (for any rank's pieces).
  LayoutSpec layout(const MeshSpec& mesh) const { return LayoutSpec(mesh, global_shape, placements); }
};

/// Validates, then lowers every parameter for `rank`.
inline std::vector<LoweredParam> lower(const ModelSpec& model, const MeshSpec& mesh, std::span<const EntrySpec> plan,
                                       index_t rank) {
  validate(model, mesh, plan);
  MeshSpecView view(mesh);
  std::vector<LoweredParam> out;
  for (const ParamInfo& p : inventory(model)) {
    EntryMatch match = match_param(p.name, plan);
    const EntrySpec& entry = plan[match.first];
    LoweredParam l;
    l.info = p;
    l.entry = entry.pattern;
    l.styles.assign(entry.style_list().begin(), entry.style_list().end());
    l.placements = param_placements(p, entry, view.view());
    for (std::size_t d = 0; d < p.rank; ++d) l.global_shape.push_back(p.dims[d].extent);
    l.local_shape = l.layout(mesh).local_extents(rank);
    out.push_back(std::move(l));
  }
  return out;
}

/// Typed form: a model type and a plan type on a DeviceMesh.
template <ModelType Model, PlanType P, class... Axes>
std::vector<LoweredParam> lower(const DeviceMesh<Axes...>& mesh, index_t rank) {
  return lower(Model::spec, MeshSpec(mesh), P::entries, rank);
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
