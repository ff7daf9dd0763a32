#pragma once
// Sizes that are either compile-time constants or plain integers.
//
// As in CuTe, a size is a `C<v>` (an empty type whose value is part of the type) or an
// `index_t` known only at run time. Arithmetic on two static sizes stays static, so a
// fully static mesh or layout costs no bytes and its derived sizes can be checked by
// static_assert; as soon as one operand is dynamic the result is a plain index_t.

#include "meshplan/core/detail/public_begin.hpp"

#include <concepts>
#include <cstdint>
#include <type_traits>

#include "meshplan/core/diagnostic.hpp"

namespace meshplan {

/// The integer type of every extent, offset, rank and mesh size.
using index_t = std::int64_t;

/// Marks a size that is given at run time (`Axis<"dp">`, `Extents<dynamic, 2048>`).
inline constexpr index_t dynamic = -1;

/// A compile-time size.
template <index_t V>
struct C {
  using value_type = index_t;
  static constexpr index_t value = V;
  constexpr operator index_t() const noexcept { return V; }
  constexpr index_t operator()() const noexcept { return V; }
};

template <index_t V>
inline constexpr C<V> constant{};

template <class T>
inline constexpr bool is_static_v = false;
template <index_t V>
inline constexpr bool is_static_v<C<V>> = true;
template <class T>
inline constexpr bool is_static_v<const T> = is_static_v<T>;

/// A size known when compiling.
template <class T>
concept StaticSize = is_static_v<std::remove_cvref_t<T>>;

/// A size: static (`C<v>`) or any integer, which is read as index_t.
template <class T>
concept Size = StaticSize<T> || std::integral<std::remove_cvref_t<T>>;

/// The value of a size, whether static or not.
template <Size S>
constexpr index_t value_of(S s) noexcept {
  return static_cast<index_t>(s);
}

// Static op static stays static. Mixed or dynamic operands convert through
// `operator index_t` and use the built-in operators.
template <index_t A, index_t B>
constexpr C<A + B> operator+(C<A>, C<B>) noexcept { return {}; }
template <index_t A, index_t B>
constexpr C<A - B> operator-(C<A>, C<B>) noexcept { return {}; }
template <index_t A, index_t B>
constexpr C<A * B> operator*(C<A>, C<B>) noexcept { return {}; }
template <index_t A, index_t B>
  requires(B != 0)
constexpr C<A / B> operator/(C<A>, C<B>) noexcept { return {}; }
template <index_t A, index_t B>
  requires(B != 0)
constexpr C<A % B> operator%(C<A>, C<B>) noexcept { return {}; }
// A static division by a static zero is not an expression (rather than a run-time trap
// through the conversion to index_t).
template <index_t A>
void operator/(C<A>, C<0>) = delete;
template <index_t A>
void operator%(C<A>, C<0>) = delete;

namespace size_rules {
/// A static divisor is at least 1.
constexpr Message static_divisor_positive(std::string_view operation, index_t divisor) noexcept {
  if (divisor > 0) return {};
  return Message::rule("static_divisor_positive") << operation << " by the static size " << divisor
                                                  << "; the divisor must be at least 1";
}
}  // namespace size_rules

/// ceil(a / b) for b > 0; static when both are.
template <Size A, Size B>
constexpr auto ceil_div(A a, B b) noexcept {
  if constexpr (StaticSize<A> && StaticSize<B>) {
    static_assert(rule_check<size_rules::static_divisor_positive("ceil_div", B::value)>::passed);
    if constexpr (B::value > 0) return C<(A::value + B::value - 1) / B::value>{};
    else return C<0>{};  // refused above; keeps the error single
  } else {
    return (value_of(a) + value_of(b) - 1) / value_of(b);
  }
}

template <Size A, Size B>
constexpr auto min(A a, B b) noexcept {
  if constexpr (StaticSize<A> && StaticSize<B>)
    return C<(A::value < B::value ? A::value : B::value)>{};
  else
    return value_of(a) < value_of(b) ? value_of(a) : value_of(b);
}

template <Size A, Size B>
constexpr auto max(A a, B b) noexcept {
  if constexpr (StaticSize<A> && StaticSize<B>)
    return C<(A::value < B::value ? B::value : A::value)>{};
  else
    return value_of(a) < value_of(b) ? value_of(b) : value_of(a);
}

/// A static size when `V` is not `dynamic`, else the run-time value `runtime`.
template <index_t V>
constexpr auto make_size(index_t runtime) noexcept {
  if constexpr (V == dynamic)
    return runtime;
  else
    return C<V>{};
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
