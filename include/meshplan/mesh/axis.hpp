#pragma once
// A named mesh axis: `Axis<"ep", 8>` (size fixed when compiling) or `Axis<"dp">` (size
// given when the DeviceMesh is constructed).

#include "meshplan/core/detail/public_begin.hpp"

#include <string_view>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/fixed_string.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/mesh/detail/mesh_rules.hpp"

namespace meshplan {

namespace detail {
// A size of `dynamic` is checked when the DeviceMesh receives it.
constexpr Message check_axis(std::string_view name, index_t size) noexcept {
  return first_of({mesh_rules::axis_name_valid(name),
                   size == dynamic ? Message{} : mesh_rules::axis_size_positive(name, size)});
}
}  // namespace detail

template <fixed_string Name, index_t Size = dynamic>
struct Axis {
  static_assert(rule_check<detail::check_axis(Name.view(), Size)>::passed);

  /// Marks the type as an Axis (nvcc cannot match partial specializations on class-type
  /// template arguments such as fixed_string, so membership is tested by this tag).
  using meshplan_axis_tag = void;
  static constexpr fixed_string name = Name;
  /// The size, or `dynamic`.
  static constexpr index_t static_size = Size;
  static constexpr bool is_static = Size != dynamic;
};

template <class T>
inline constexpr bool is_axis_v = requires { typename T::meshplan_axis_tag; };

/// An `Axis<"name", size>` or `Axis<"name">`.
template <class T>
concept AxisType = is_axis_v<T>;

/// True when `Axis<Name, Size>` would compile: detection without a hard error.
template <fixed_string Name, index_t Size = dynamic>
inline constexpr bool valid_axis_v = detail::check_axis(Name.view(), Size).ok();

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
