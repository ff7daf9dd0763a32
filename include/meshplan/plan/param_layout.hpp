#pragma once
// The typed view of one parameter: for a static model, mesh and plan, the Layout type the
// plan gives a parameter.
//
//   using Mesh = DeviceMesh<Axis<"ep", 8>, Axis<"tp", 4>>;
//   using GateUp = param_layout_t<models::Qwen3_30B_A3B, Mesh, plans::qwen3_moe::ep_tp<>,
//                                 "layers.*.mlp.experts.gate_up_proj">;
//   // Layout<Mesh, Extents<128, 1536, 2048>, Shard<0>, Replicate>
//   static_assert(GateUp::static_local_extent(0) == 16);
//
// The name is the parameter's name in the model's inventory (transformers' name, with
// "layers.*." for the per-layer ones). The type is what lower() computes at run time, from
// the same functions: the plan is checked by check_plan (validate's rules), the parameter's
// entry found by match_param and its placements given by param_placements. A broken rule,
// or a name the model does not have, fails to compile with the rule's one message;
// has_param_layout_v asks the same question without an error.

#include "meshplan/core/detail/public_begin.hpp"

#include <array>
#include <cstddef>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/fixed_string.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/mesh/device_mesh.hpp"
#include "meshplan/model/inventory.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/placement/extents.hpp"
#include "meshplan/placement/layout.hpp"
#include "meshplan/placement/placement.hpp"
#include "meshplan/plan/detail/param_placement.hpp"
#include "meshplan/plan/detail/pattern.hpp"
#include "meshplan/plan/plan.hpp"
#include "meshplan/plan/validate.hpp"

namespace meshplan {

namespace plan_rules {
/// A typed view asks for a parameter by name: the name must be one of the model's. A module
/// path that holds exactly one parameter (q_proj for q_proj.weight) is pointed at it.
constexpr Message param_known(std::string_view name, const std::vector<ParamInfo>& params) {
  for (const ParamInfo& p : params)
    if (p.name == name) return {};
  Message m = Message::rule("param_known");
  m << "the model has no parameter '" << name << "'";
  std::size_t held = 0;
  std::string_view suggestion;
  for (const ParamInfo& p : params)
    if (matches_param(name, p.name)) {
      ++held;
      suggestion = p.name;
    }
  if (held == 1) return m << "; did you mean '" << suggestion << "'?";
  return m << "; parameters are named as in transformers, per-layer ones with 'layers.*.' (e.g. '" << params.back().name
           << "', 'layers.*.input_layernorm.weight')";
}
}  // namespace plan_rules

namespace detail {
/// A model type's inventory as a static array: computed once per model type, read by the
/// typed views of all its parameters.
template <ModelType Model>
struct static_inventory {
  static constexpr std::size_t size = inventory(Model::spec).size();
  static constexpr std::array<ParamInfo, size> params = [] {
    std::array<ParamInfo, size> a{};
    const std::vector<ParamInfo> v = inventory(Model::spec);
    for (std::size_t i = 0; i < size; ++i) a[i] = v[i];
    return a;
  }();

  static constexpr std::size_t index_of(std::string_view name) noexcept {
    for (std::size_t i = 0; i < size; ++i)
      if (params[i].name == name) return i;
    return size;
  }
};

/// The plan's first broken rule on the mesh's static sizes, or ok: once per (model, mesh,
/// plan), as validate<Model, Mesh, Plan>() checks it.
template <ModelType Model, class Mesh, PlanType P>
inline constexpr Message static_plan_check = check_static<Model, Mesh, P>();

/// The parameter at `index` of the model's inventory, lowered on a valid plan: its placement
/// on every mesh axis, as lower() gives it.
template <ModelType Model, class Mesh, PlanType P, std::size_t Index>
struct static_lowered_param {
  static constexpr ParamInfo info = static_inventory<Model>::params[Index];
  static constexpr std::array<PlacementSpec, Mesh::ndim()> placements = [] {
    std::array<PlacementSpec, Mesh::ndim()> a{};
    const EntrySpec& entry = P::entries[match_param(info.name, P::entries).first];
    const std::vector<PlacementSpec> v = param_placements(info, entry, StaticMeshView<Mesh>::view);
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = v[i];
    return a;
  }();
};

/// The placement type (Replicate, Shard<D>, ...) of axis A of a lowered parameter.
template <class Lowered, std::size_t A>
constexpr auto placement_type() noexcept {
  constexpr PlacementSpec p = Lowered::placements[A];
  if constexpr (p.kind == PlacementKind::shard)
    return std::type_identity<Shard<p.dim>>{};
  else if constexpr (p.kind == PlacementKind::strided_shard)
    return std::type_identity<StridedShard<p.dim, p.split_factor>>{};
  else if constexpr (p.kind == PlacementKind::partial)
    return std::type_identity<Partial<p.op>>{};
  else
    return std::type_identity<Replicate>{};
}

template <class Mesh, class Lowered, std::size_t... D, std::size_t... A>
auto lowered_layout(std::index_sequence<D...>, std::index_sequence<A...>)
    -> Layout<Mesh, Extents<Lowered::info.dims[D].extent...>, typename decltype(placement_type<Lowered, A>())::type...>;

/// The Layout type of the parameter at `Index` of a valid plan.
template <ModelType Model, class Mesh, PlanType P, std::size_t Index>
using layout_at_t = decltype(lowered_layout<Mesh, static_lowered_param<Model, Mesh, P, Index>>(
    std::make_index_sequence<static_inventory<Model>::params[Index].rank>{}, std::make_index_sequence<Mesh::ndim()>{}));

/// Why there is no typed layout of `name` (the plan's first broken rule, then param_known),
/// or ok.
template <ModelType Model, class Mesh, PlanType P>
constexpr Message param_layout_error(std::string_view name) {
  if constexpr (!is_device_mesh_v<Mesh>) {
    return {};  // param_layout's own static_assert says so
  } else {
    if (Message m = static_plan_check<Model, Mesh, P>; !m.ok()) return m;
    return plan_rules::param_known(name, inventory(Model::spec));
  }
}

template <std::size_t>
using replicate_t = Replicate;

template <class Mesh, std::size_t... A>
auto placeholder_layout(std::index_sequence<A...>) -> Layout<Mesh, Extents<>, replicate_t<A>...>;

/// The layout type once the rules are checked: after a broken rule, a rank-0 placeholder,
/// so that the rule's message is the only error.
template <bool Ok, class Model, class Mesh, class P, std::size_t Index>
struct checked_layout {
  using type = decltype(placeholder_layout<Mesh>(std::make_index_sequence<Mesh::ndim()>{}));
};
template <class Model, class Mesh, class P, std::size_t Index>
struct checked_layout<true, Model, Mesh, P, Index> {
  using type = layout_at_t<Model, Mesh, P, Index>;
};
}  // namespace detail

/// The Layout of parameter `Name` under plan P on Mesh: Layout<Mesh, Extents<global...>,
/// one placement per mesh axis>. Its static_local_extent(d) is the extent every rank holds
/// where the split is exact (see local_shape.hpp).
template <ModelType Model, class Mesh, PlanType P, fixed_string Name>
struct param_layout {
  static_assert(is_device_mesh_v<Mesh>,
                "meshplan: param_layout<Model, Mesh, Plan, name>: Mesh must be a DeviceMesh<...>");
  static constexpr Message error = detail::param_layout_error<Model, Mesh, P>(Name.view());
  static_assert(rule_check<error>::passed);
  using type = typename detail::checked_layout<error.ok() && is_device_mesh_v<Mesh>, Model, Mesh, P,
                                               detail::static_inventory<Model>::index_of(Name.view())>::type;
};

template <ModelType Model, class Mesh, PlanType P, fixed_string Name>
using param_layout_t = typename param_layout<Model, Mesh, P, Name>::type;

namespace detail {
template <class Model, class Mesh, class P, fixed_string Name>
consteval bool has_param_layout() {
  if constexpr (ModelType<Model> && PlanType<P> && is_device_mesh_v<Mesh>)
    return param_layout_error<Model, Mesh, P>(Name.view()).ok();
  else
    return false;
}
}  // namespace detail

/// Whether param_layout_t<Model, Mesh, P, Name> compiles: detection without an error.
template <class Model, class Mesh, class P, fixed_string Name>
inline constexpr bool has_param_layout_v = detail::has_param_layout<Model, Mesh, P, Name>();

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
