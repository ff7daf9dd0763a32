#pragma once
// The built-in plans by family and name, on the axes "ep" and "tp", for tools that pick a
// plan at run time (the plan explorer, the runner) and for tests that cover every plan.
//
//   for (const auto& p : mp::plans::builtin_plans(Family::mixtral)) ... p.name, p.entries
//   mp::plans::with_builtin_plan(family, "ep_tp", [&]<class Plan>() { MoEBlock<..., Plan> ... });
//
// Each family's plans are listed once, as types with their names (PlanSet): the run-time
// table and the typed dispatch both read that list, so a new plan is one line here and
// every table-driven test picks it up.

#include "meshplan/core/detail/public_begin.hpp"

#include <array>
#include <cstddef>
#include <span>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/plan/builtin/deepseek_v3.hpp"
#include "meshplan/plan/builtin/mixtral.hpp"
#include "meshplan/plan/builtin/qwen3.hpp"
#include "meshplan/plan/builtin/qwen3_moe.hpp"
#include "meshplan/plan/plan.hpp"

namespace meshplan::plans {

struct BuiltinPlan {
  std::string_view name;
  std::string_view summary;
  std::span<const EntrySpec> entries;
};

struct PlanName {
  std::string_view name;
  std::string_view summary;
};

/// A family's plans: `Names::list[i]` names the i-th plan type.
template <class Names, class... Plans>
struct PlanSet {
  static_assert(Names::list.size() == sizeof...(Plans), "meshplan: a PlanSet names each of its plans once");
  using types = std::tuple<Plans...>;

  static constexpr std::array<BuiltinPlan, sizeof...(Plans)> table = [] {
    std::array<BuiltinPlan, sizeof...(Plans)> t{};
    std::size_t i = 0;
    ((t[i] = {Names::list[i].name, Names::list[i].summary, Plans::entries}, ++i), ...);
    return t;
  }();

  /// Calls f.template operator()<Plan>() for the plan called `name`; false if there is none.
  template <class F>
  static bool visit(std::string_view name, F&& f) {
    return visit_at(name, f, std::index_sequence_for<Plans...>{});
  }

  /// Calls f.template operator()<Plan>(name) for every plan, in table order.
  template <class F>
  static void for_each(F&& f) {
    for_each_at(f, std::index_sequence_for<Plans...>{});
  }

 private:
  template <class F, std::size_t... I>
  static void for_each_at(F& f, std::index_sequence<I...>) {
    (f.template operator()<std::tuple_element_t<I, types>>(Names::list[I].name), ...);
  }

  template <class F, std::size_t... I>
  static bool visit_at(std::string_view name, F& f, std::index_sequence<I...>) {
    return ((Names::list[I].name == name ? (f.template operator()<std::tuple_element_t<I, types>>(), true) : false) ||
            ...);
  }
};

namespace detail {
struct MoEPlanNames {
  static constexpr std::array<PlanName, 6> list{{
      {"tp", "attention, experts and vocab split over tp"},
      {"tp_sp", "tp with sequence parallelism over tp"},
      {"ep", "experts over ep (all-to-all-v); the rest data parallel"},
      {"ep_tp", "attention tp over tp, experts over ep, MoE tokens split over tp"},
      {"ep_sp", "ep_tp with sequence parallelism: no tp communication in the MoE block"},
      {"etp", "experts over ep, each expert's intermediate dim over tp"},
  }};
};
struct DensePlanNames {
  static constexpr std::array<PlanName, 2> list{{
      {"tp", "attention, MLP and vocab split over tp"},
      {"tp_sp", "tp with sequence parallelism over tp"},
  }};
};
}  // namespace detail

// At namespace scope: nvcc's host code generation cannot spell plan types (class-type
// template arguments) inside function bodies.
using Qwen3MoePlans = PlanSet<detail::MoEPlanNames, qwen3_moe::tp<>, qwen3_moe::tp_sp<>, qwen3_moe::ep<>,
                              qwen3_moe::ep_tp<>, qwen3_moe::ep_sp<>, qwen3_moe::etp<>>;
using MixtralPlans = PlanSet<detail::MoEPlanNames, mixtral::tp<>, mixtral::tp_sp<>, mixtral::ep<>, mixtral::ep_tp<>,
                             mixtral::ep_sp<>, mixtral::etp<>>;
using DeepSeekV3Plans = PlanSet<detail::MoEPlanNames, deepseek_v3::tp<>, deepseek_v3::tp_sp<>, deepseek_v3::ep<>,
                                deepseek_v3::ep_tp<>, deepseek_v3::ep_sp<>, deepseek_v3::etp<>>;
using Qwen3Plans = PlanSet<detail::DensePlanNames, qwen3::tp<>, qwen3::tp_sp<>>;

/// The PlanSet of a family known at compile time.
template <Family F>
struct family_plans;
template <>
struct family_plans<Family::qwen3> : std::type_identity<Qwen3Plans> {};
template <>
struct family_plans<Family::qwen3_moe> : std::type_identity<Qwen3MoePlans> {};
template <>
struct family_plans<Family::mixtral> : std::type_identity<MixtralPlans> {};
template <>
struct family_plans<Family::deepseek_v3> : std::type_identity<DeepSeekV3Plans> {};
template <Family F>
using family_plans_t = typename family_plans<F>::type;

/// Calls f.template operator()<Set>() with the PlanSet of a family with experts.
template <class F>
decltype(auto) with_moe_family_plans(Family family, F&& f) {
  switch (family) {
    case Family::qwen3_moe: return f.template operator()<family_plans_t<Family::qwen3_moe>>();
    case Family::mixtral: return f.template operator()<family_plans_t<Family::mixtral>>();
    case Family::deepseek_v3: return f.template operator()<family_plans_t<Family::deepseek_v3>>();
    case Family::qwen3: break;
  }
  throw RuleViolation(Message::rule("model_has_experts") << "a " << to_string(family) << " model has no experts");
}

/// Calls f.template operator()<Set>() with the PlanSet of any family.
template <class F>
decltype(auto) with_family_plans(Family family, F&& f) {
  if (family == Family::qwen3) return f.template operator()<family_plans_t<Family::qwen3>>();
  return with_moe_family_plans(family, f);
}

/// The built-in plans of a family.
constexpr std::span<const BuiltinPlan> builtin_plans(Family family) noexcept {
  switch (family) {
    case Family::qwen3: return Qwen3Plans::table;
    case Family::qwen3_moe: return Qwen3MoePlans::table;
    case Family::mixtral: return MixtralPlans::table;
    case Family::deepseek_v3: return DeepSeekV3Plans::table;
  }
  return {};
}

/// The built-in plan `name` of a family; throws RuleViolation naming the plans if none.
inline const BuiltinPlan& builtin_plan(Family family, std::string_view name) {
  for (const auto& p : builtin_plans(family))
    if (p.name == name) return p;
  Message m = Message::rule("plan_known");
  m << "there is no built-in plan '" << name << "' for " << to_string(family) << "; the plans are";
  bool first = true;
  for (const auto& p : builtin_plans(family)) {
    m << (first ? " " : ", ") << p.name;
    first = false;
  }
  throw RuleViolation(m);
}

/// Calls f.template operator()<Plan>() with the type of the built-in plan `name` of a family;
/// throws plan_known (naming the plans) if there is none.
template <class F>
void with_builtin_plan(Family family, std::string_view name, F&& f) {
  if (!with_family_plans(family, [&]<class Set>() { return Set::visit(name, f); }))
    (void)builtin_plan(family, name);  // throws plan_known
}

/// The same for the families with experts only (whose plans an MoE block can run); throws
/// model_has_experts for a dense family.
template <class F>
void with_moe_builtin_plan(Family family, std::string_view name, F&& f) {
  if (!with_moe_family_plans(family, [&]<class Set>() { return Set::visit(name, f); }))
    (void)builtin_plan(family, name);
}

}  // namespace meshplan::plans

#include "meshplan/core/detail/public_end.hpp"
