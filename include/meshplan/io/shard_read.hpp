#pragma once
// Shard-on-read: a rank reads only the piece of each tensor its layout gives it, straight
// from the mapped file, converting to its storage type on the way.
//
//   auto piece = mp::read_piece<float>(file.view(), "experts.gate_up_proj", layout, rank);
//
// Fused experts can come from hub checkpoints that store every expert on its own
// (experts.{i}.gate_proj.weight [I, H], up_proj, down_proj [H, I]; Mixtral's originals
// w1 = gate, w3 = up, w2 = down): read_block_piece serves "experts.gate_up_proj" [E, 2I, H]
// (gate rows first, then up rows) and "experts.down_proj" [E, H, I] from them, reading
// only the experts and rows the piece needs. StridedShard pieces of the packed gate_up
// (rank r holding [gate_r | up_r]) come out of either form the same way.

#include "meshplan/core/detail/public_begin.hpp"

#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/io/file_dtype.hpp"
#include "meshplan/io/detail/file_dtype_conversion.hpp"
#include "meshplan/io/detail/io_rules.hpp"
#include "meshplan/io/safetensors_header.hpp"
#include "meshplan/placement/layout_spec.hpp"

namespace meshplan {

namespace detail {
/// The global indices a rank holds, per dim, as runs.
inline std::vector<IndexRuns> held_runs(const LayoutSpec& layout, index_t rank) {
  std::vector<IndexRuns> runs;
  for (std::size_t d = 0; d < layout.tensor_rank(); ++d) runs.push_back(layout.held_indices(d, rank));
  return runs;
}

inline std::vector<index_t> flatten(const IndexRuns& runs) {
  std::vector<index_t> v;
  for (const auto& r : runs)
    for (index_t i = 0; i < r.size; ++i) v.push_back(r.begin + i);
  return v;
}

/// Calls row(outer_global_indices) for each combination of held indices of all dims but the
/// last, in local order; the caller copies the last dim's runs.
template <class F>
void for_each_outer(const std::vector<IndexRuns>& runs, F&& row) {
  const std::size_t outer = runs.empty() ? 0 : runs.size() - 1;
  std::vector<std::vector<index_t>> idx;
  for (std::size_t d = 0; d < outer; ++d) {
    idx.push_back(flatten(runs[d]));
    if (idx.back().empty()) return;
  }
  std::vector<std::size_t> pos(outer, 0);
  std::vector<index_t> at(outer);
  while (true) {
    for (std::size_t d = 0; d < outer; ++d) at[d] = idx[d][pos[d]];
    row(at);
    std::size_t d = outer;
    while (d > 0 && ++pos[d - 1] == idx[d - 1].size()) pos[--d] = 0;
    if (d == 0) return;
  }
}

/// A floating-point parameter stored as integers is a wrong checkpoint, not a conversion.
template <class T, class File>
Message dtype_fits(const File& file, std::string_view name, FileDType stored) {
  const bool integer_file = stored == FileDType::i32 || stored == FileDType::i64;
  if (std::is_integral_v<T> || !integer_file) return {};
  return Message::rule("tensor_dtype") << "tensor '" << name << "' of '" << file.source_of(name) << "' is stored as "
                                       << to_string(stored) << "; a parameter needs a floating-point dtype "
                                       << "(F32, BF16 or F16)";
}

inline std::string expert_name(std::string_view pattern, index_t e) {
  std::string s(pattern);
  const auto at = s.find("{}");
  return at == std::string::npos ? s : s.replace(at, 2, std::to_string(e));
}
}  // namespace detail

/// What shard-on-read reads from: one safetensors file (SafetensorsView) or a checkpoint's
/// set of files (SafetensorsSet): tensors by name, their bytes, and the file to name in
/// messages.
template <class F>
concept TensorFile = requires(const F& f, std::string_view name, const TensorInfo& info) {
  { f.contains(name) } -> std::convertible_to<bool>;
  { f.info(name) } -> std::convertible_to<const TensorInfo&>;
  { f.raw(info) } -> std::convertible_to<std::span<const std::byte>>;
  { f.source_of(name) } -> std::convertible_to<const std::string&>;
};

/// The piece of tensor `name` that `rank` holds under `layout`.
template <class T, TensorFile File>
Tensor<T> read_piece(const File& file, std::string_view name, const LayoutSpec& layout, index_t rank) {
  const TensorInfo& info = file.info(name);
  enforce(tensor_rules::shape_matches("tensor '" + std::string(name) + "' of '" + file.source_of(name) + "'", info.shape,
                                   layout.global_extents()));
  enforce(detail::dtype_fits<T>(file, name, info.dtype));
  Tensor<T> piece(layout.local_extents(rank));
  if (piece.numel() == 0) return piece;
  const std::vector<IndexRuns> runs = detail::held_runs(layout, rank);
  const std::byte* data = file.raw(info).data();
  T* out = piece.data();
  if (runs.empty()) {  // a scalar
    detail::convert_elements<T>(data, info.dtype, 0, 1, out);
    return piece;
  }
  detail::for_each_outer(runs, [&](const std::vector<index_t>& at) {
    index_t base = 0;
    for (std::size_t d = 0; d < at.size(); ++d) base = base * info.shape[d] + at[d];
    base *= info.shape.back();
    for (const auto& r : runs.back()) {
      detail::convert_elements<T>(data, info.dtype, static_cast<std::size_t>(base + r.begin),
                                  static_cast<std::size_t>(r.size), out);
      out += r.size;
    }
  });
  return piece;
}

/// How a checkpoint names one expert's own weights ("{}" is the expert index).
struct ExpertNaming {
  std::string_view gate;
  std::string_view up;
  std::string_view down;
};
inline constexpr ExpertNaming hub_expert_naming{"experts.{}.gate_proj.weight", "experts.{}.up_proj.weight",
                                                "experts.{}.down_proj.weight"};
inline constexpr ExpertNaming mixtral_expert_naming{"experts.{}.w1.weight", "experts.{}.w3.weight",
                                                    "experts.{}.w2.weight"};

namespace io_rules {
inline Message block_tensor_missing(std::string_view source, std::string_view prefix, std::string_view name) {
  return Message::rule("safetensors_tensor_missing")
         << "'" << source << "' has no tensor '" << prefix << name
         << "', fused or as one tensor per expert (experts.{i}.gate_proj/up_proj/down_proj.weight, or "
            "experts.{i}.w1/w3/w2.weight)";
}
}  // namespace io_rules

/// The piece of one MoE block parameter (transformers-5 name without the layer prefix, e.g.
/// "experts.gate_up_proj") under `prefix` (e.g. "model.layers.3.mlp."), fused in the file or
/// merged from one tensor per expert.
template <class T, TensorFile File>
Tensor<T> read_block_piece(const File& file, std::string_view prefix, std::string_view name,
                           const LayoutSpec& layout, index_t rank) {
  const std::string full = std::string(prefix) + std::string(name);
  if (file.contains(full)) return read_piece<T>(file, full, layout, rank);
  const bool gate_up = name == "experts.gate_up_proj", down = name == "experts.down_proj";
  if (!gate_up && !down) throw RuleViolation(io_rules::tensor_missing(file.source_of(full), full));

  // One tensor per expert: find which naming the file uses.
  const ExpertNaming* naming = nullptr;
  for (const ExpertNaming* n : {&hub_expert_naming, &mixtral_expert_naming})
    if (file.contains(std::string(prefix) + detail::expert_name(n->gate, 0))) naming = n;
  if (!naming) throw RuleViolation(io_rules::block_tensor_missing(file.source_of(full), prefix, name));

  const std::vector<index_t>& g = layout.global_extents();  // gate_up [E, 2I, H]; down [E, H, I]
  enforce(tensor_rules::shape_matches("the fused experts' layout", {static_cast<index_t>(g.size())}, {3}));
  const index_t inter = gate_up ? g[1] / 2 : g[2];
  Tensor<T> piece(layout.local_extents(rank));
  if (piece.numel() == 0) return piece;
  const std::vector<IndexRuns> runs = detail::held_runs(layout, rank);
  T* out = piece.data();
  detail::for_each_outer(runs, [&](const std::vector<index_t>& at) {
    const index_t e = at[0], row = at[1];
    // The expert's own tensor and its row that this fused row is.
    std::string_view pattern = down ? naming->down : row < inter ? naming->gate : naming->up;
    const std::string source = std::string(prefix) + detail::expert_name(pattern, e);
    const TensorInfo& info = file.info(source);
    const std::vector<index_t> expected = down ? std::vector<index_t>{g[1], inter} : std::vector<index_t>{inter, g[2]};
    enforce(tensor_rules::shape_matches("tensor '" + source + "' of '" + file.source_of(source) + "'", info.shape, expected));
    enforce(detail::dtype_fits<T>(file, source, info.dtype));
    const index_t own_row = down ? row : row % inter;
    for (const auto& r : runs.back()) {
      detail::convert_elements<T>(file.raw(info).data(), info.dtype,
                                  static_cast<std::size_t>(own_row * info.shape[1] + r.begin),
                                  static_cast<std::size_t>(r.size), out);
      out += r.size;
    }
  });
  return piece;
}

/// The inverse of reading a piece: writes `piece`, what `rank` holds of a tensor laid out as
/// `layout`, into the whole tensor `full` at the global indices it holds (used to put
/// per-rank results, such as gradients, back together).
template <class T>
void place_piece(const LayoutSpec& layout, index_t rank, const Tensor<T>& piece, Tensor<T>& full) {
  const std::vector<IndexRuns> runs = detail::held_runs(layout, rank);
  const std::vector<index_t> local = layout.local_extents(rank);
  piece.require_shape("a rank's piece", local);
  full.require_shape("the whole tensor", layout.global_extents());
  if (runs.empty() || piece.numel() == 0) return;
  const std::vector<index_t>& extents = full.shape();
  const IndexRuns& last = runs.back();
  const T* src = piece.data();
  detail::for_each_outer(runs, [&](const std::vector<index_t>& at) {
    index_t offset = 0;
    for (std::size_t d = 0; d < at.size(); ++d) offset = offset * extents[d] + at[d];
    offset *= extents.back();
    for (const auto& r : last) {
      std::copy_n(src, r.size, full.data() + offset + r.begin);
      src += r.size;
    }
  });
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
