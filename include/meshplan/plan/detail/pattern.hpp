#pragma once
// Plan patterns: dotted module paths where "*" stands for one component (the layer index):
// "layers.*.mlp.experts.gate_up_proj", "layers.*.self_attn", "lm_head".
//
// A parameter entry matches a parameter when its pattern is the parameter's whole name or
// the name of a module that holds it ("layers.*.self_attn.q_proj" matches
// "layers.*.self_attn.q_proj.weight"), component by component, as transformers' plans do.
// A hook entry matches a module scope exactly.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <string_view>

#include "meshplan/core/diagnostic.hpp"

namespace meshplan {

namespace detail {
constexpr bool is_component_char(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/// Splits off the first component of `path`.
constexpr std::string_view next_component(std::string_view& path) noexcept {
  auto dot = path.find('.');
  std::string_view head = path.substr(0, dot);
  path = dot == std::string_view::npos ? std::string_view{} : path.substr(dot + 1);
  return head;
}
}  // namespace detail

namespace plan_rules {
constexpr Message pattern_syntax(std::string_view pattern) noexcept {
  bool ok = !pattern.empty();
  std::string_view rest = pattern;
  while (ok && !rest.empty()) {
    bool trailing_dot = rest.back() == '.';
    std::string_view c = detail::next_component(rest);
    ok = !c.empty() && !trailing_dot;
    if (ok && c != "*")
      for (char ch : c) ok = ok && detail::is_component_char(ch);
  }
  if (ok) return {};
  return Message::rule("pattern_syntax") << "plan pattern '" << pattern
                                         << "' is not a dotted path of names and '*' (e.g. layers.*.mlp.experts)";
}
}  // namespace plan_rules

/// Whether `pattern` matches the first components of `name` (all of them if `whole`).
constexpr bool pattern_matches(std::string_view pattern, std::string_view name, bool whole) noexcept {
  while (!pattern.empty()) {
    if (name.empty()) return false;
    std::string_view p = detail::next_component(pattern);
    std::string_view n = detail::next_component(name);
    if (p != "*" && p != n) return false;
  }
  return !whole || name.empty();
}

/// A parameter entry's match: the parameter itself or a module holding it.
constexpr bool matches_param(std::string_view pattern, std::string_view param) noexcept {
  return pattern_matches(pattern, param, false);
}

/// A hook entry's match: exactly this module.
constexpr bool matches_module(std::string_view pattern, std::string_view module) noexcept {
  return pattern_matches(pattern, module, true);
}

}  // namespace meshplan
