#pragma once
// The built-in plans by family and name, on the axes "ep" and "tp", for tools that pick a
// plan at run time (the plan explorer, the runner).

#include <array>
#include <span>
#include <string_view>
#include <vector>

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

namespace detail {
template <class TP, class TPSP, class EP, class EPTP, class EPSP, class ETP>
inline constexpr std::array<BuiltinPlan, 6> moe_family_plans{{
    {"tp", "attention, experts and vocab split over tp", TP::entries},
    {"tp_sp", "tp with sequence parallelism over tp", TPSP::entries},
    {"ep", "experts over ep (all-to-all-v); the rest data parallel", EP::entries},
    {"ep_tp", "attention tp over tp, experts over ep, MoE tokens split over tp", EPTP::entries},
    {"ep_sp", "ep_tp with sequence parallelism: no tp communication in the MoE block", EPSP::entries},
    {"etp", "experts over ep, each expert's intermediate dim over tp", ETP::entries},
}};

inline constexpr std::array<BuiltinPlan, 2> qwen3_plans{{
    {"tp", "attention, MLP and vocab split over tp", plans::qwen3::tp<>::entries},
    {"tp_sp", "tp with sequence parallelism over tp", plans::qwen3::tp_sp<>::entries},
}};
}  // namespace detail

namespace detail {
// At namespace scope: nvcc's host code generation cannot spell plan types (class-type
// template arguments) inside function bodies.
inline constexpr auto qwen3_moe_plans = moe_family_plans<qwen3_moe::tp<>, qwen3_moe::tp_sp<>, qwen3_moe::ep<>,
                                                         qwen3_moe::ep_tp<>, qwen3_moe::ep_sp<>, qwen3_moe::etp<>>;
inline constexpr auto mixtral_plans = moe_family_plans<mixtral::tp<>, mixtral::tp_sp<>, mixtral::ep<>,
                                                       mixtral::ep_tp<>, mixtral::ep_sp<>, mixtral::etp<>>;
inline constexpr auto deepseek_v3_plans =
    moe_family_plans<deepseek_v3::tp<>, deepseek_v3::tp_sp<>, deepseek_v3::ep<>, deepseek_v3::ep_tp<>,
                     deepseek_v3::ep_sp<>, deepseek_v3::etp<>>;
}  // namespace detail

/// The built-in plans of a family.
constexpr std::span<const BuiltinPlan> builtin_plans(Family family) noexcept {
  switch (family) {
    case Family::qwen3: return detail::qwen3_plans;
    case Family::qwen3_moe: return detail::qwen3_moe_plans;
    case Family::mixtral: return detail::mixtral_plans;
    case Family::deepseek_v3: return detail::deepseek_v3_plans;
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

}  // namespace meshplan::plans
