#pragma once
// DeviceMesh<Axes...>: named axes over the ranks of a job, as torch's DeviceMesh.
//
//   using Mesh = DeviceMesh<Axis<"dp">, Axis<"ep", 8>, Axis<"tp", 2>>;
//   Mesh mesh{4};                                   // run-time sizes, in axis order
//   mesh.size();                                    // 64
//   mesh.size<"ep">();                              // C<8>: static sizes stay static
//   mesh.coordinates(13);                           // {0, 6, 1}
//   mesh.group<"ep">(13);                           // ranks along ep through rank 13
//   mesh.group<"dp", "ep">(13);                     // dp x ep flattened into one group
//
// Only the run-time sizes are stored: a fully static mesh is an empty object.

#include "meshplan/core/detail/public_begin.hpp"

#include <array>
#include <cstddef>
#include <initializer_list>
#include <span>
#include <string_view>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/detail/dynamic_values.hpp"
#include "meshplan/core/fixed_string.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/core/detail/type_name.hpp"
#include "meshplan/mesh/axis.hpp"
#include "meshplan/mesh/group.hpp"
#include "meshplan/mesh/detail/indexing.hpp"
#include "meshplan/mesh/detail/mesh_rules.hpp"

namespace meshplan {

namespace detail {
template <class... Axes>
constexpr Message mesh_arguments_are_axes() noexcept {
  Message m;
  std::size_t i = 0;
  ((m.ok() && !is_axis_v<Axes>
        ? void(m = Message::rule("mesh_arguments_are_axes")
                   << "DeviceMesh argument " << i << " is '" << type_name<Axes>()
                   << "', not an Axis<\"name\", size> or Axis<\"name\">")
        : void(),
    ++i),
   ...);
  return m;
}

template <class A>
constexpr std::string_view axis_name_of() noexcept {
  if constexpr (is_axis_v<A>) return A::name.view();
  else return {};
}
template <class A>
constexpr index_t axis_static_size_of() noexcept {
  if constexpr (is_axis_v<A>) return A::static_size;
  else return 1;
}

template <class... Axes>
constexpr Message check_mesh_axes() noexcept {
  constexpr std::array<std::string_view, sizeof...(Axes)> names{axis_name_of<Axes>()...};
  return first_of({mesh_arguments_are_axes<Axes...>(), mesh_rules::mesh_has_axes(sizeof...(Axes)),
                   mesh_rules::axis_names_unique(names)});
}
}  // namespace detail

/// True when DeviceMesh<Axes...> would compile: detection without a hard error.
template <class... Axes>
inline constexpr bool valid_mesh_v = detail::check_mesh_axes<Axes...>().ok();

template <class... Axes>
class DeviceMesh {
  static_assert(rule_check<detail::check_mesh_axes<Axes...>()>::passed);

 public:
  static constexpr std::array<std::string_view, sizeof...(Axes)> names{detail::axis_name_of<Axes>()...};
  static constexpr std::array<index_t, sizeof...(Axes)> static_sizes{detail::axis_static_size_of<Axes>()...};
  static constexpr std::size_t dynamic_count =
      ((detail::axis_static_size_of<Axes>() == dynamic ? 1u : 0u) + ... + 0u);
  static constexpr bool is_static = dynamic_count == 0;

  static constexpr std::size_t ndim() noexcept { return sizeof...(Axes); }

  constexpr DeviceMesh() noexcept
    requires(dynamic_count == 0)
  = default;

  /// One size per axis declared without a size, in axis order.
  template <std::integral... Sizes>
    requires(sizeof...(Sizes) > 0)
  constexpr explicit DeviceMesh(Sizes... sizes) {
    static_assert(rule_check<mesh_rules::dynamic_sizes_given(dynamic_count, sizeof...(Sizes))>::passed);
    if constexpr (dynamic_count == sizeof...(Sizes)) {
      dynamic_sizes_.values = {static_cast<index_t>(sizes)...};
      validate_dynamic_sizes();
    }
  }

  /// Run-time form: sizes of the dynamic axes from a container (e.g. parsed options).
  constexpr explicit DeviceMesh(std::span<const index_t> sizes) {
    enforce(mesh_rules::dynamic_sizes_given(dynamic_count, sizes.size()));
    if constexpr (dynamic_count > 0)
      for (std::size_t i = 0; i < dynamic_count; ++i) dynamic_sizes_[i] = sizes[i];
    validate_dynamic_sizes();
  }

  static constexpr std::string_view axis_name(std::size_t axis) noexcept { return names[axis]; }

  constexpr index_t axis_size(std::size_t axis) const noexcept {
    return detail::value_at(static_sizes, dynamic_sizes_, axis);
  }

  /// The index of axis `Name`; an unknown name fails to compile.
  template <fixed_string Name>
  static constexpr std::size_t index_of() noexcept {
    static_assert(rule_check<mesh_rules::axis_known(names, Name.view())>::passed);
    // After a failed check, answer axis 0 so that callers add no second error.
    constexpr std::size_t a = find_axis_static(Name.view());
    return a == no_axis ? 0 : a;
  }

  /// The index of the axis called `name`; an unknown name throws RuleViolation.
  constexpr std::size_t index_of(std::string_view name) const { return axis_index(*this, name); }

  /// Size of axis `Name`: C<n> when static.
  template <fixed_string Name>
  constexpr auto size() const noexcept {
    constexpr std::size_t a = index_of<Name>();
    if constexpr (static_sizes[a] != dynamic) return C<static_sizes[a]>{};
    else return axis_size(a);
  }

  constexpr index_t size(std::string_view name) const { return axis_size(index_of(name)); }

  /// Number of ranks: C<n> when every axis is static.
  constexpr auto size() const noexcept {
    if constexpr (is_static) return C<product_of_static_sizes()>{};
    else return world_size(*this);
  }

  constexpr std::array<index_t, sizeof...(Axes)> coordinates(index_t rank) const {
    enforce(mesh_rules::rank_in_mesh(rank, world_size(*this)));
    std::array<index_t, sizeof...(Axes)> c{};
    for (std::size_t a = 0; a < ndim(); ++a) c[a] = meshplan::coordinate(*this, rank, a);
    return c;
  }

  template <fixed_string Name>
  constexpr index_t coordinate(index_t rank) const {
    enforce(mesh_rules::rank_in_mesh(rank, world_size(*this)));
    return meshplan::coordinate(*this, rank, index_of<Name>());
  }

  constexpr index_t rank_of(std::span<const index_t> coords) const { return meshplan::rank_of(*this, coords); }
  constexpr index_t rank_of(std::initializer_list<index_t> coords) const {
    return meshplan::rank_of(*this, std::span<const index_t>(coords.begin(), coords.size()));
  }

  /// The group of `rank` along one or more axes (several axes are flattened, row-major
  /// in the order given).
  template <fixed_string... Names>
    requires(sizeof...(Names) > 0)
  Group group(index_t rank) const {
    constexpr std::array<std::string_view, sizeof...(Names)> group_names{Names.view()...};
    static_assert(rule_check<mesh_rules::group_axes_distinct(group_names)>::passed);
    constexpr std::array<std::size_t, sizeof...(Names)> axes{index_of<Names>()...};
    return make_group(*this, rank, std::span<const std::size_t>(axes));
  }

  Group group(index_t rank, std::initializer_list<std::string_view> axis_names) const {
    return group(rank, std::span<const std::string_view>(axis_names.begin(), axis_names.size()));
  }

  Group group(index_t rank, std::span<const std::string_view> axis_names) const {
    return make_group(*this, rank, axis_names);
  }

  friend constexpr bool operator==(const DeviceMesh&, const DeviceMesh&) = default;

 private:
  static constexpr std::size_t find_axis_static(std::string_view name) noexcept {
    for (std::size_t a = 0; a < ndim(); ++a)
      if (names[a] == name) return a;
    return no_axis;
  }

  static constexpr index_t product_of_static_sizes() noexcept {
    index_t n = 1;
    for (index_t s : static_sizes) n *= s;
    return n;
  }

  constexpr void validate_dynamic_sizes() const {
    for (std::size_t a = 0; a < ndim(); ++a) enforce(mesh_rules::axis_size_positive(names[a], axis_size(a)));
  }

  // Empty when every axis is static, so a static mesh costs no bytes.
  [[no_unique_address]] detail::DynamicValues<dynamic_count> dynamic_sizes_{};
};

template <class T>
inline constexpr bool is_device_mesh_v = false;
template <class... Axes>
inline constexpr bool is_device_mesh_v<DeviceMesh<Axes...>> = true;

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
