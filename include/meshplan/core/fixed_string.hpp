#pragma once
// Strings usable as template arguments: `Axis<"ep">`, `Entry<"layers.*.mlp.gate", ...>`.
//
// Names are class-type template arguments rather than user-defined literals because nvcc
// rejects string-literal operator templates. They live in host-side types only: plans are
// lowered to integers and tag types before anything reaches device code.

#include "meshplan/core/detail/public_begin.hpp"

#include <cstddef>
#include <string_view>

namespace meshplan {

template <std::size_t N>
struct fixed_string {
  // Public so that the type is structural (usable as a template argument).
  char chars[N + 1]{};

  constexpr fixed_string() = default;
  constexpr fixed_string(const char (&text)[N + 1]) noexcept {
    for (std::size_t i = 0; i != N; ++i) chars[i] = text[i];
  }

  static constexpr std::size_t size() noexcept { return N; }
  constexpr std::string_view view() const noexcept { return {chars, N}; }
  constexpr operator std::string_view() const noexcept { return view(); }
  constexpr const char* c_str() const noexcept { return chars; }

  template <std::size_t M>
  constexpr bool operator==(const fixed_string<M>& other) const noexcept {
    return view() == other.view();
  }
};

template <std::size_t N>
fixed_string(const char (&)[N]) -> fixed_string<N - 1>;

/// Concatenation, for names built from parts ("layers.*.mlp" + ".gate_proj").
template <std::size_t N, std::size_t M>
constexpr fixed_string<N + M> operator+(const fixed_string<N>& a, const fixed_string<M>& b) noexcept {
  fixed_string<N + M> r;
  for (std::size_t i = 0; i != N; ++i) r.chars[i] = a.chars[i];
  for (std::size_t i = 0; i != M; ++i) r.chars[N + i] = b.chars[i];
  return r;
}
template <std::size_t N, std::size_t M>
constexpr fixed_string<N + M - 1> operator+(const fixed_string<N>& a, const char (&b)[M]) noexcept {
  return a + fixed_string<M - 1>(b);
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
