#pragma once
// A tensor's layout as text, for the metadata of per-rank checkpoint files:
//
//   "[8, 64, 64] Shard(0) Replicate() StridedShard(1, sf=2)"
//
// the global extents, then one placement per mesh axis in DTensor's spelling (the mesh
// itself is stored once per file). parse_layout_text is the inverse; anything else is a
// RuleViolation naming the text.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <string>
#include <string_view>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/placement/layout_spec.hpp"
#include "meshplan/placement/placement.hpp"

namespace meshplan {

inline std::string layout_text(const LayoutSpec& layout) {
  Message m;
  m << layout.global_extents();
  for (const PlacementSpec& p : layout.placements()) m << " " << p;
  return std::string(m.view());
}

namespace detail {
[[noreturn]] inline void bad_layout_text(std::string_view text) {
  throw RuleViolation(Message::rule("layout_text") << "'" << text << "' is not a layout ([extents] placements...)");
}

inline index_t parse_count(std::string_view s, std::string_view whole) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  if (s.empty() || s.size() > 12) bad_layout_text(whole);
  index_t n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') bad_layout_text(whole);
    n = n * 10 + (c - '0');
  }
  return n;
}
}  // namespace detail

inline LayoutSpec parse_layout_text(std::string_view text, const MeshSpec& mesh) {
  const auto close = text.find(']');
  if (text.empty() || text.front() != '[' || close == std::string_view::npos) detail::bad_layout_text(text);
  std::vector<index_t> extents;
  std::string_view dims = text.substr(1, close - 1);
  while (!dims.empty()) {
    const auto comma = dims.find(',');
    extents.push_back(detail::parse_count(dims.substr(0, comma), text));
    dims = comma == std::string_view::npos ? std::string_view{} : dims.substr(comma + 1);
  }
  std::vector<PlacementSpec> placements;
  std::string_view rest = text.substr(close + 1);
  while (!rest.empty()) {
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    if (rest.empty()) break;
    const auto end = rest.find(')');
    if (end == std::string_view::npos) detail::bad_layout_text(text);
    const std::string_view item = rest.substr(0, end + 1);
    rest.remove_prefix(end + 1);
    const auto open = item.find('(');
    const std::string_view kind = item.substr(0, open), args = item.substr(open + 1, item.size() - open - 2);
    if (kind == "Replicate" && args.empty()) {
      placements.push_back(PlacementSpec::replicate());
    } else if (kind == "Shard") {
      placements.push_back(PlacementSpec::shard(static_cast<int>(detail::parse_count(args, text))));
    } else if (kind == "StridedShard") {
      const auto comma = args.find(", sf=");
      if (comma == std::string_view::npos) detail::bad_layout_text(text);
      placements.push_back(PlacementSpec::strided_shard(static_cast<int>(detail::parse_count(args.substr(0, comma), text)),
                                                        static_cast<int>(detail::parse_count(args.substr(comma + 5), text))));
    } else {
      detail::bad_layout_text(text);
    }
  }
  if (placements.size() != mesh.ndim()) detail::bad_layout_text(text);
  return LayoutSpec(mesh, std::move(extents), std::move(placements));
}

}  // namespace meshplan
