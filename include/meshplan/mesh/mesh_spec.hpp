#pragma once
// MeshSpec: a device mesh whose axis names are known only at run time, e.g. parsed from
// "--mesh dp=2,ep=4". It follows the same rules and indexing as DeviceMesh; a DeviceMesh
// converts to it.

#include "meshplan/core/detail/public_begin.hpp"

#include <cstddef>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/mesh/device_mesh.hpp"
#include "meshplan/mesh/group.hpp"
#include "meshplan/mesh/detail/indexing.hpp"
#include "meshplan/mesh/detail/mesh_rules.hpp"

namespace meshplan {

class MeshSpec {
 public:
  MeshSpec() = default;

  /// Axes as (name, size) pairs in mesh order.
  MeshSpec(std::initializer_list<std::pair<std::string_view, index_t>> axes) {
    for (auto& [name, size] : axes) {
      names_.emplace_back(name);
      sizes_.push_back(size);
    }
    validate();
  }

  template <class... Axes>
  explicit MeshSpec(const DeviceMesh<Axes...>& mesh) {
    for (std::size_t a = 0; a < mesh.ndim(); ++a) {
      names_.emplace_back(mesh.axis_name(a));
      sizes_.push_back(mesh.axis_size(a));
    }
  }

  /// Parses "name=size,name=size" (spaces allowed around items). An empty item (a leading,
  /// trailing or doubled comma) is refused, not skipped: "ep=2," is more likely a typo for a
  /// missing axis than a finished mesh.
  static MeshSpec parse(std::string_view text) {
    MeshSpec spec;
    const std::string_view whole = text;
    while (!text.empty()) {
      auto comma = text.find(',');
      auto item = trim(text.substr(0, comma));
      const bool more = comma != std::string_view::npos;
      text = more ? text.substr(comma + 1) : std::string_view{};
      if (item.empty() || (more && trim(text).empty())) throw_empty_item(whole);
      auto eq = item.find('=');
      if (eq == std::string_view::npos) throw_parse_error(item);
      auto name = trim(item.substr(0, eq));
      auto size_text = trim(item.substr(eq + 1));
      index_t size = 0;
      if (size_text.empty() || size_text.size() > 12) throw_parse_error(item);
      for (char c : size_text) {
        if (c < '0' || c > '9') throw_parse_error(item);
        size = size * 10 + (c - '0');
      }
      spec.names_.emplace_back(name);
      spec.sizes_.push_back(size);
    }
    spec.validate();
    return spec;
  }

  std::size_t ndim() const noexcept { return names_.size(); }
  std::string_view axis_name(std::size_t axis) const noexcept { return names_[axis]; }
  index_t axis_size(std::size_t axis) const noexcept { return sizes_[axis]; }
  index_t size() const noexcept { return world_size(*this); }

  std::size_t index_of(std::string_view name) const { return axis_index(*this, name); }
  bool has_axis(std::string_view name) const noexcept { return find_axis(*this, name) != no_axis; }
  index_t size(std::string_view name) const { return sizes_[index_of(name)]; }

  std::vector<index_t> coordinates(index_t rank) const {
    enforce(mesh_rules::rank_in_mesh(rank, size()));
    std::vector<index_t> c(ndim());
    for (std::size_t a = 0; a < ndim(); ++a) c[a] = coordinate(*this, rank, a);
    return c;
  }
  index_t rank_of(std::span<const index_t> coords) const { return meshplan::rank_of(*this, coords); }

  Group group(index_t rank, std::initializer_list<std::string_view> axis_names) const {
    return group(rank, std::span<const std::string_view>(axis_names.begin(), axis_names.size()));
  }
  Group group(index_t rank, std::span<const std::string_view> axis_names) const {
    return make_group(*this, rank, axis_names);
  }

  /// "dp=2,ep=4"
  std::string to_string() const {
    std::string s;
    for (std::size_t a = 0; a < ndim(); ++a)
      s += (a ? "," : "") + names_[a] + "=" + std::to_string(sizes_[a]);
    return s;
  }

  std::vector<std::string_view> name_views() const { return {names_.begin(), names_.end()}; }

  friend bool operator==(const MeshSpec&, const MeshSpec&) = default;

 private:
  static std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
    return s;
  }

  [[noreturn]] static void throw_parse_error(std::string_view item) {
    throw RuleViolation(Message::rule("mesh_syntax")
                        << "cannot read mesh axis '" << item << "'; write axes as name=size separated by commas, "
                        << "e.g. dp=2,ep=4");
  }

  [[noreturn]] static void throw_empty_item(std::string_view mesh) {
    throw RuleViolation(Message::rule("mesh_syntax")
                        << "mesh '" << mesh << "' has an empty axis (a comma too many); write axes as name=size "
                        << "separated by single commas, e.g. dp=2,ep=4");
  }

  void validate() const {
    enforce(mesh_rules::mesh_has_axes(ndim()));
    for (std::size_t a = 0; a < ndim(); ++a) {
      enforce(mesh_rules::axis_name_valid(names_[a]));
      enforce(mesh_rules::axis_size_positive(names_[a], sizes_[a]));
    }
    enforce(mesh_rules::axis_names_unique(name_views()));
  }

  std::vector<std::string> names_;
  std::vector<index_t> sizes_;
};

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
