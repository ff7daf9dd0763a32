#pragma once
// A Plan is a list of entries; an entry pairs a pattern with one style per mesh axis it
// uses:
//
//   using Plan = Plan<
//       Entry<"layers.*.self_attn.q_proj", styles::colwise<"tp">>,
//       Entry<"layers.*.mlp.experts", styles::moe_experts<"ep">, styles::expert_tp<"tp">>,
//       Entry<"layers.*.mlp", styles::gather_input<"tp">, styles::split_output<"tp">>, ...>;
//
// Every parameter of the model must be matched by exactly one parameter entry; hook
// entries (prepare_input / prepare_output) match module scopes. `Plan::entries` is the
// plan as constexpr data (EntrySpec), which validation and lowering read; plans built at
// run time are vectors of the same EntrySpec.

#include "meshplan/core/detail/public_begin.hpp"

#include <array>
#include <cstddef>
#include <span>
#include <string_view>
#include <type_traits>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/fixed_string.hpp"
#include "meshplan/core/detail/type_name.hpp"
#include "meshplan/plan/style.hpp"

namespace meshplan {

inline constexpr std::size_t max_styles_per_entry = 4;

struct EntrySpec {
  std::string_view pattern;
  std::array<StyleSpec, max_styles_per_entry> styles{};
  std::size_t style_count = 0;
  /// May match nothing: a family plan's entry for parameters some configs of the family lack
  /// (DeepSeek-V3's dense first layers when first_k_dense_replace is 0).
  bool optional = false;

  constexpr std::span<const StyleSpec> style_list() const noexcept { return {styles.data(), style_count}; }
  constexpr bool is_hook_entry() const noexcept { return style_count > 0 && is_hook(styles[0].kind); }
};

namespace plan_rules {
constexpr Message entry_style_count(std::string_view pattern, std::size_t count) noexcept {
  if (count >= 1 && count <= max_styles_per_entry) return {};
  return Message::rule("entry_style_count") << "plan entry '" << pattern << "' has " << count
                                            << " styles; an entry needs 1 to " << max_styles_per_entry
                                            << " (one per mesh axis it uses)";
}
}  // namespace plan_rules

template <fixed_string Pattern, Style... Styles>
struct Entry {
  static_assert(rule_check<plan_rules::entry_style_count(Pattern.view(), sizeof...(Styles))>::passed);
  using meshplan_entry_tag = void;  // see is_entry_v
  static constexpr EntrySpec spec = [] {
    EntrySpec e{Pattern.view(), {}, 0};
    if constexpr (sizeof...(Styles) <= max_styles_per_entry) {
      ((e.styles[e.style_count++] = Styles::spec), ...);
    }
    return e;
  }();
};

/// Entry<Pattern, Styles...>, optional (allowed to match nothing) when Optional is true.
template <fixed_string Pattern, bool Optional, Style... Styles>
struct EntryWith : Entry<Pattern, Styles...> {
  static constexpr EntrySpec spec = [] {
    EntrySpec e = Entry<Pattern, Styles...>::spec;
    e.optional = Optional;
    return e;
  }();
};

/// An entry that may match nothing (see EntrySpec::optional).
template <fixed_string Pattern, Style... Styles>
struct OptionalEntry : EntryWith<Pattern, true, Styles...> {};

/// Tested by a member tag: nvcc cannot match partial specializations on class-type
/// template arguments such as fixed_string.
template <class T>
inline constexpr bool is_entry_v = requires { typename T::meshplan_entry_tag; };

namespace plan_rules {
/// Plan argument `index` is an entry; `type` is its spelling.
constexpr Message plan_holds_entries(std::size_t index, bool is_entry, std::string_view type) noexcept {
  if (is_entry) return {};
  return Message::rule("plan_holds_entries") << "Plan argument " << index << " is '" << type
                                             << "', which is not an entry; use Entry<\"pattern\", styles...>";
}

template <class... Entries>
constexpr Message check_entries() noexcept {
  Message m;
  std::size_t i = 0;
  ((m = m.ok() ? plan_holds_entries(i, is_entry_v<Entries>, type_name<Entries>()) : m, ++i), ...);
  return m;
}
/// An entry's spec; an empty one for an argument refused above, so that the refusal stays
/// the only error.
template <class E>
constexpr EntrySpec spec_of() noexcept {
  if constexpr (is_entry_v<E>) return E::spec;
  else return {};
}
}  // namespace plan_rules

template <class... Entries>
struct Plan {
  static_assert(rule_check<plan_rules::check_entries<Entries...>()>::passed);
  /// The plan itself; named plans derive from Plan<...> and plan_cat_t reads this.
  using plan_type = Plan;
  static constexpr std::array<EntrySpec, sizeof...(Entries)> entries{plan_rules::spec_of<Entries>()...};
};

template <class T>
inline constexpr bool is_plan_v = false;
template <class... E>
inline constexpr bool is_plan_v<Plan<E...>> = true;

/// A Plan<...>, or a class deriving from one (the built-in plans are named classes: nvcc's
/// host code generation cannot spell alias templates that forward string arguments).
template <class T>
concept PlanType = requires { typename T::plan_type; } && is_plan_v<typename T::plan_type>;

namespace detail {
template <class... Plans>
struct plan_cat;
template <>
struct plan_cat<> {
  using type = Plan<>;
};
template <class... A>
struct plan_cat<Plan<A...>> {
  using type = Plan<A...>;
};
template <class... A, class... B, class... Rest>
struct plan_cat<Plan<A...>, Plan<B...>, Rest...> : plan_cat<Plan<A..., B...>, Rest...> {};
}  // namespace detail

/// The entries of several plans, in order, as one Plan<...>. (A plain metafunction: alias
/// templates over lambdas in unevaluated operands miscompile in g++ 12.)
template <PlanType... Plans>
using plan_cat_t = typename detail::plan_cat<typename Plans::plan_type...>::type;

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
