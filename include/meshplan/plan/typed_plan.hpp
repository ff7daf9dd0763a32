#pragma once
// The typed plan: a whole plan on a static model and mesh as a compile-time map from
// parameter names to Layout types, to iterate, fold and look up with Boost.Hana.
//
//   namespace hana = boost::hana;
//   constexpr auto plan = mp::typed_plan<Model, Mesh, Plan>;      // hana::map
//   using GateUp = typename decltype(+plan[mp::param_key<"layers.*.mlp.experts.gate_up_proj">])::type;
//   hana::for_each(plan, [](auto kv) { ... mp::layout_of_t<decltype(kv)> ... });
//   constexpr index_t per_rank = hana::fold_left(plan, index_t{0}, [](index_t n, auto kv) {
//     return n + mp::param_info_of<Model>(kv).count * mp::local_elements_v<mp::layout_of_t<decltype(kv)>>;
//   });
//
// Keys are hana::strings of the parameter names (param_key<"name">), values hana::types of
// the layouts param_layout_t gives (param_layout.hpp): one computation for both. typed_params
// is the same pairs as a hana::tuple in the inventory's (module) order; the map's order of
// iteration is Hana's. A plan that breaks a rule fails to compile with the rule's message.
//
// Why Hana rather than a hand-written type list: a typed plan is a heterogeneous map whose
// keys are compile-time strings; hana::map gives lookup by name checked at compile time
// (a name not in the plan does not compile), hana::contains for detection, and the whole
// algorithm set (for_each, fold_left, filter, count_if, transform, keys) over values that
// stay usable in constant expressions, where plain C++20 would need each of those written
// here again for one type list.

#include "meshplan/core/detail/public_begin.hpp"

#include <cstddef>
#include <string_view>
#include <type_traits>
#include <utility>

// What the usage above needs: lookup, detection, iteration and folds over a map.
#include <boost/hana/at_key.hpp>
#include <boost/hana/contains.hpp>
#include <boost/hana/first.hpp>
#include <boost/hana/fold_left.hpp>
#include <boost/hana/for_each.hpp>
#include <boost/hana/map.hpp>
#include <boost/hana/pair.hpp>
#include <boost/hana/second.hpp>
#include <boost/hana/string.hpp>
#include <boost/hana/tuple.hpp>
#include <boost/hana/type.hpp>
#include <boost/hana/unpack.hpp>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/fixed_string.hpp"
#include "meshplan/mesh/device_mesh.hpp"
#include "meshplan/model/inventory.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/plan/param_layout.hpp"
#include "meshplan/plan/plan.hpp"

namespace meshplan {

namespace detail {
template <fixed_string Name, std::size_t... C>
constexpr auto hana_string_of(std::index_sequence<C...>) noexcept {
  return boost::hana::string_c<Name.chars[C]...>;
}

template <class Model, std::size_t I, std::size_t... C>
constexpr auto inventory_key(std::index_sequence<C...>) noexcept {
  return boost::hana::string_c<static_inventory<Model>::params[I].name[C]...>;
}

template <class Model, class Mesh, class P, std::size_t... I>
constexpr auto typed_params_of(std::index_sequence<I...>) {
  return boost::hana::make_tuple(boost::hana::make_pair(
      inventory_key<Model, I>(std::make_index_sequence<static_inventory<Model>::params[I].name.size()>{}),
      boost::hana::type_c<layout_at_t<Model, Mesh, P, I>>)...);
}

template <ModelType Model, class Mesh, PlanType P>
consteval auto make_typed_params() {
  static_assert(is_device_mesh_v<Mesh>, "meshplan: typed_plan<Model, Mesh, Plan>: Mesh must be a DeviceMesh<...>");
  if constexpr (is_device_mesh_v<Mesh>) {
    static_assert(rule_check<static_plan_check<Model, Mesh, P>>::passed);
    if constexpr (static_plan_check<Model, Mesh, P>.ok())
      return typed_params_of<Model, Mesh, P>(std::make_index_sequence<static_inventory<Model>::size>{});
    else
      return boost::hana::make_tuple();  // after the rule's message, nothing more to report
  } else {
    return boost::hana::make_tuple();
  }
}
}  // namespace detail

/// The key of parameter `Name` in a typed plan: hana::string<'l', 'a', ...>.
template <fixed_string Name>
inline constexpr auto param_key = detail::hana_string_of<Name>(std::make_index_sequence<Name.size()>{});

/// Every parameter of the model with its layout, in inventory order: a hana::tuple of
/// hana::pair<hana::string<name>, hana::type<Layout>>.
template <ModelType Model, class Mesh, PlanType P>
inline constexpr auto typed_params = detail::make_typed_params<Model, Mesh, P>();

/// The same pairs as a hana::map from parameter name to layout type.
template <ModelType Model, class Mesh, PlanType P>
inline constexpr auto typed_plan = boost::hana::unpack(typed_params<Model, Mesh, P>, boost::hana::make_map);

/// The Layout type of one element of a typed plan (a hana::pair).
template <class Pair>
using layout_of_t = typename std::remove_cvref_t<decltype(boost::hana::second(std::declval<Pair>()))>::type;

/// The parameter name of one element of a typed plan. (By value: the elements are empty, and
/// a lambda's parameter can then be read in a static_assert.)
template <class Pair>
constexpr std::string_view param_name_of(Pair) noexcept {
  return std::remove_cvref_t<decltype(boost::hana::first(std::declval<Pair>()))>::c_str();
}

/// The inventory entry (kind, global dims, layer count) of one element of a typed plan.
template <ModelType Model, class Pair>
constexpr ParamInfo param_info_of(Pair element) noexcept {
  return detail::static_inventory<Model>::params[detail::static_inventory<Model>::index_of(param_name_of(element))];
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
