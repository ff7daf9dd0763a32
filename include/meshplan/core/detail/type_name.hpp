#pragma once
// The spelling of a type, available at compile time, for diagnostics.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <string_view>

namespace meshplan {

/// `type_name<int>()` is "int". Read from the compiler's pretty function name, which both
/// g++ ("[with T = int; ...]") and nvcc's front end ("[with T=int]") provide in constant
/// expressions.
template <class T>
constexpr std::string_view type_name() noexcept {
  std::string_view pretty = __PRETTY_FUNCTION__;
  std::string_view marker = "T = ";
  auto start = pretty.find(marker);
  if (start == std::string_view::npos) {
    marker = "T=";
    start = pretty.find(marker);
  }
  if (start == std::string_view::npos) return "<unknown type>";
  start += marker.size();
  // The type ends at the first ';' or ']' that is not nested in brackets.
  int depth = 0;
  for (auto i = start; i < pretty.size(); ++i) {
    char c = pretty[i];
    if (c == '<' || c == '(' || c == '{' || c == '[') ++depth;
    if (c == '>' || c == ')' || c == '}') --depth;
    if (depth == 0 && (c == ';' || c == ']')) return pretty.substr(start, i - start);
    if (c == ']') --depth;
  }
  return pretty.substr(start);
}

template <class... T>
inline constexpr bool dependent_false = false;

}  // namespace meshplan
