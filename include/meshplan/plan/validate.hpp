#pragma once
// validate: a plan checked against a model and a mesh, every rule once.
//
//   static_assert(mp::validate<Model, Mesh, Plan>());   // compile time: one error if broken
//   mp::validate<Model, Plan>(mesh);                     // run time, with the mesh's sizes
//   mp::validate(model_spec, mesh_spec, plan_entries);   // all of it known at run time
//
// The rules, in the order they are checked (plan_rules.hpp, model_rules.hpp):
//   the model config is consistent (heads and kv heads, top-k, expert groups);
//   every entry is well formed (pattern syntax, 1-4 styles, hooks and parameter styles not
//   mixed, one style per axis) and every axis a style names exists;
//   every mesh axis of more than one rank is used by the plan, or is "dp";
//   every parameter is matched by exactly one entry, and every entry matches something;
//   every style can place the parameters it matches;
//   no dim is split by plain Shard on two axes;
//   every split dim divides in whole units (heads, kv heads, experts, vocab, intermediate
//   sizes, each packed half);
//   a tied output embedding is placed as the input embedding is;
//   activation placements agree from one module to the next on every axis.
// Rules that need an axis size known only at run time are checked at run time.

#include "meshplan/core/detail/public_begin.hpp"

#include <array>
#include <cstddef>
#include <span>
#include <string_view>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/detail/type_name.hpp"
#include "meshplan/mesh/device_mesh.hpp"
#include "meshplan/mesh/detail/mesh_rules.hpp"
#include "meshplan/mesh/mesh_spec.hpp"
#include "meshplan/model/detail/flow.hpp"
#include "meshplan/model/inventory.hpp"
#include "meshplan/model/detail/model_rules.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/plan/detail/activation_check.hpp"
#include "meshplan/plan/detail/mesh_view.hpp"
#include "meshplan/plan/detail/param_placement.hpp"
#include "meshplan/plan/detail/pattern.hpp"
#include "meshplan/plan/plan.hpp"
#include "meshplan/plan/plan_rules.hpp"
#include "meshplan/plan/detail/style_semantics.hpp"

namespace meshplan {

namespace detail {
constexpr Message check_entries(const MeshView& mesh, std::span<const EntrySpec> plan) noexcept {
  for (const auto& e : plan) {
    Message checks[] = {plan_rules::pattern_syntax(e.pattern), plan_rules::entry_style_count(e.pattern, e.style_count),
                        plan_rules::entry_style_kinds(e), plan_rules::entry_axis_once(e)};
    for (const auto& m : checks)
      if (!m.ok()) return m;
    for (const auto& s : e.style_list())
      if (auto m = plan_rules::style_axis_known(e.pattern, s, mesh.names); !m.ok()) return m;
  }
  for (std::size_t a = 0; a < mesh.ndim(); ++a)
    if (auto m = plan_rules::axis_used(mesh.axis_name(a), mesh.axis_size(a), plan); !m.ok()) return m;
  return {};
}

/// The dims of one parameter under its placements: each split dim by plain Shard on one
/// axis at most, whole units per shard. (Packed dims only ever get StridedShard: every
/// style that splits one packs its halves.)
constexpr Message check_param_dims(const ParamInfo& p, const std::vector<PlacementSpec>& placements,
                                   const MeshView& mesh) {
  for (std::size_t d = 0; d < p.rank; ++d) {
    const int dim = static_cast<int>(d);
    std::size_t first = no_axis;
    index_t shards = 1;
    bool known = true;
    Message axes;
    for (std::size_t a = 0; a < placements.size(); ++a) {
      const PlacementSpec& pl = placements[a];
      if (!pl.is_shard(dim)) continue;
      if (first != no_axis && pl.kind == PlacementKind::shard && placements[first].kind == PlacementKind::shard)
        return plan_rules::dim_sharded_once(p, dim, mesh.axis_name(first), mesh.axis_name(a));
      axes << (first == no_axis ? "" : "' x '") << mesh.axis_name(a);
      if (first == no_axis) first = a;
      known = known && mesh.size_known(a);
      if (mesh.size_known(a)) shards *= mesh.axis_size(a);
    }
    if (first != no_axis && known)
      if (auto m = plan_rules::shard_divides(p, dim, axes.view(), shards); !m.ok()) return m;
  }
  return {};
}

/// A tied output embedding (no lm_head.weight of its own) placed by an lm_head entry must
/// be placed as the input embedding is: they are one tensor.
constexpr Message check_tied_embeddings(const ModelSpec& model, const MeshView& mesh, std::span<const EntrySpec> plan,
                                        const std::vector<ParamInfo>& params,
                                        const std::vector<std::size_t>& entry_of) {
  if (!model.tie_word_embeddings) return {};
  const EntryMatch head = match_param(output_embedding_param, plan);
  std::size_t embed = no_entry;
  for (std::size_t i = 0; i < params.size(); ++i)
    if (params[i].name == "embed_tokens.weight") embed = i;
  if (head.count == 0 || embed == no_entry) return {};
  ParamInfo as_head = params[embed];  // the same [vocab, hidden] tensor, read as the head
  as_head.kind = ParamKind::lm_head;
  const std::vector<PlacementSpec> h = param_placements(as_head, plan[head.first], mesh);
  const std::vector<PlacementSpec> e = param_placements(params[embed], plan[entry_of[embed]], mesh);
  for (std::size_t a = 0; a < mesh.ndim(); ++a)
    if (auto m = plan_rules::tied_embeddings_agree(plan[head.first].pattern, plan[entry_of[embed]].pattern,
                                                   mesh.axis_name(a), h[a], e[a]);
        !m.ok())
      return m;
  return {};
}
}  // namespace detail

/// Every rule; the first broken one, or ok.
constexpr Message check_plan(const ModelSpec& model, const MeshView& mesh, std::span<const EntrySpec> plan) {
  if (auto m = model_rules::check_config(model); !m.ok()) return m;
  if (auto m = detail::check_entries(mesh, plan); !m.ok()) return m;

  const std::vector<ParamInfo> params = inventory(model);
  std::vector<std::size_t> entry_of(params.size(), no_entry);
  for (std::size_t i = 0; i < params.size(); ++i) {
    EntryMatch match = match_param(params[i].name, plan);
    if (auto m = plan_rules::param_matched_once(params[i].name, match.count,
                                                match.first == no_entry ? "" : plan[match.first].pattern,
                                                match.second == no_entry ? "" : plan[match.second].pattern);
        !m.ok())
      return m;
    entry_of[i] = match.first;
  }

  const std::vector<FlowStep> flow = activation_flow(model);
  for (std::size_t e = 0; e < plan.size(); ++e) {
    bool matched = false;
    if (plan[e].is_hook_entry()) {
      for (const auto& step : flow)
        matched = matched || (step.kind == FlowStepKind::scope_enter && matches_module(plan[e].pattern, step.name));
    } else {
      for (std::size_t i = 0; i < params.size(); ++i) matched = matched || entry_of[i] == e;
      // A tied output embedding has no weight of its own, but the lm_head module is there.
      matched = matched || (model.tie_word_embeddings && matches_param(plan[e].pattern, output_embedding_param));
    }
    if (auto m = plan_rules::entry_matches(plan[e], matched); !m.ok()) return m;
  }

  for (std::size_t i = 0; i < params.size(); ++i) {
    const EntrySpec& entry = plan[entry_of[i]];
    for (const auto& s : entry.style_list())
      if (auto m = plan_rules::style_applies(params[i], entry.pattern, s,
                                             placement_on_axis(s.kind, params[i].kind).has_value());
          !m.ok())
        return m;
    if (auto m = detail::check_param_dims(params[i], param_placements(params[i], entry, mesh), mesh); !m.ok())
      return m;
  }

  if (auto m = detail::check_tied_embeddings(model, mesh, plan, params, entry_of); !m.ok()) return m;
  return check_activation_flow(model, mesh, plan, params, entry_of);
}

namespace detail {
template <class Mesh>
struct StaticMeshView;
template <class... Axes>
struct StaticMeshView<DeviceMesh<Axes...>> {
  static constexpr MeshView view{DeviceMesh<Axes...>::names, DeviceMesh<Axes...>::static_sizes};
};

template <class Model, class Mesh, class P>
constexpr Message check_static() {
  return check_plan(Model::spec, StaticMeshView<Mesh>::view, P::entries);
}
}  // namespace detail

/// True when the plan passes every rule that the static sizes let the compiler check.
template <ModelType Model, class Mesh, PlanType P>
inline constexpr bool valid_plan_v = detail::check_static<Model, Mesh, P>().ok();

/// Compile-time validation: fails to compile with the first broken rule's message; rules
/// on run-time axis sizes are left to the run-time validate. Returns true.
template <ModelType Model, class Mesh, PlanType P>
consteval bool validate() {
  static_assert(rule_check<mesh_rules::mesh_is_device_mesh(is_device_mesh_v<Mesh>, "validate<Model, Mesh, Plan>",
                                                           type_name<Mesh>())>::passed);
  if constexpr (is_device_mesh_v<Mesh>) static_assert(rule_check<detail::check_static<Model, Mesh, P>()>::passed);
  return true;
}

/// Run-time validation with the actual sizes of `mesh`; throws RuleViolation.
template <class... Axes>
void validate(const ModelSpec& model, const DeviceMesh<Axes...>& mesh, std::span<const EntrySpec> plan) {
  std::array<index_t, sizeof...(Axes)> sizes{};
  for (std::size_t a = 0; a < sizes.size(); ++a) sizes[a] = mesh.axis_size(a);
  enforce(check_plan(model, MeshView{DeviceMesh<Axes...>::names, sizes}, plan));
}

inline void validate(const ModelSpec& model, const MeshSpec& mesh, std::span<const EntrySpec> plan) {
  enforce(check_plan(model, MeshSpecView(mesh).view(), plan));
}

/// Run-time validation of typed model and plan on a mesh object.
template <ModelType Model, PlanType P, class Mesh>
void validate(const Mesh& mesh) {
  validate(Model::spec, mesh, std::span<const EntrySpec>(P::entries));
}

/// Checks a job's world size against the mesh (run time).
template <MeshShape M>
void validate_world_size(const M& mesh, index_t world) {
  enforce(plan_rules::world_size_matches(world, world_size(mesh)));
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
