#pragma once
// Extents<E...>: the global shape of a tensor, each extent static or `dynamic`.
//
//   Extents<128, 1536, 2048> e;                 // static: an empty object
//   Extents<dynamic, 2048> t{4096};             // run-time extents in order
//   e.extent<0>()                               // C<128>
//   t.extent(0)                                 // 4096

#include "meshplan/core/detail/public_begin.hpp"

#include <array>
#include <concepts>
#include <cstddef>
#include <span>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/detail/dynamic_values.hpp"
#include "meshplan/core/size.hpp"

namespace meshplan {

namespace placement_rules {
constexpr Message extent_nonnegative(std::size_t dim, index_t extent) noexcept {
  if (extent >= 0) return {};
  return Message::rule("extent_nonnegative") << "tensor dim " << dim << " has extent " << extent
                                             << "; extents must be 0 or more";
}

constexpr Message dynamic_extents_given(std::size_t expected, std::size_t given) noexcept {
  if (expected == given) return {};
  return Message::rule("dynamic_extents_given")
         << "the Extents have " << expected << " extent(s) given at run time, but " << given
         << " were passed; pass one value per `dynamic` extent, in order";
}

constexpr Message static_extents_nonnegative(std::span<const index_t> extents) noexcept {
  for (std::size_t d = 0; d < extents.size(); ++d)
    if (extents[d] != dynamic)
      if (auto m = extent_nonnegative(d, extents[d]); !m.ok()) return m;
  return {};
}

/// A static dim index names one of the tensor's dims.
constexpr Message dim_index_in_range(std::string_view what, std::size_t dim, std::size_t rank) noexcept {
  if (dim < rank) return {};
  return Message::rule("dim_index_in_range") << what << "<" << dim << "> names a dim of a tensor of rank " << rank;
}
}  // namespace placement_rules

template <index_t... Es>
class Extents {
  static constexpr std::array<index_t, sizeof...(Es)> static_values{Es...};
  static_assert(rule_check<placement_rules::static_extents_nonnegative(static_values)>::passed);

 public:
  static constexpr std::size_t dynamic_count = ((Es == dynamic ? 1u : 0u) + ... + 0u);
  static constexpr bool is_static = dynamic_count == 0;

  static constexpr std::size_t rank() noexcept { return sizeof...(Es); }
  static constexpr index_t static_extent(std::size_t d) noexcept { return static_values[d]; }

  constexpr Extents() noexcept
    requires(dynamic_count == 0)
  = default;

  template <std::integral... Values>
    requires(sizeof...(Values) > 0)
  constexpr explicit Extents(Values... values) {
    static_assert(rule_check<placement_rules::dynamic_extents_given(dynamic_count, sizeof...(Values))>::passed);
    if constexpr (sizeof...(Values) == dynamic_count) {
      dynamic_.values = {static_cast<index_t>(values)...};
      for (std::size_t d = 0, slot = 0; d < rank(); ++d)
        if (static_values[d] == dynamic) enforce(placement_rules::extent_nonnegative(d, dynamic_[slot++]));
    }
  }

  constexpr index_t extent(std::size_t d) const noexcept { return detail::value_at(static_values, dynamic_, d); }

  /// C<n> when the extent is static.
  template <std::size_t D>
  constexpr auto extent() const noexcept {
    static_assert(rule_check<placement_rules::dim_index_in_range("Extents::extent", D, rank())>::passed);
    if constexpr (D >= rank()) return index_t{0};  // refused above; keeps the error single
    else if constexpr (static_values[D] != dynamic) return C<static_values[D]>{};
    else return extent(D);
  }

  constexpr std::array<index_t, sizeof...(Es)> values() const noexcept {
    std::array<index_t, sizeof...(Es)> v{};
    for (std::size_t d = 0; d < rank(); ++d) v[d] = extent(d);
    return v;
  }

  friend constexpr bool operator==(const Extents&, const Extents&) = default;

 private:
  [[no_unique_address]] detail::DynamicValues<dynamic_count> dynamic_{};
};

template <class T>
inline constexpr bool is_extents_v = false;
template <index_t... Es>
inline constexpr bool is_extents_v<Extents<Es...>> = true;

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
