#pragma once
// Placements: how a tensor lives along one mesh axis, as in PyTorch DTensor.
//
//   Replicate             every rank of the axis holds the whole (local) tensor
//   Shard<D>              dim D is split with torch.chunk semantics: ceil-sized pieces,
//                         trailing ranks short or empty
//   StridedShard<D, SF>   dim D is cut into SF pieces and each piece is sharded; rank r
//                         holds piece_0[r] | piece_1[r] | ... (a fused gate||up weight
//                         sharded so that rank r holds [gate_r | up_r] is StridedShard<0, 2>)
//   Partial<Op>           every rank holds a partial value; the tensor is their reduction
//
// The types are empty tags; PlacementSpec is the same information as a value, for code
// that works at run time and for the constexpr rules.

#include "meshplan/core/detail/public_begin.hpp"

#include <cstdint>
#include <string>
#include <string_view>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"

namespace meshplan {

enum class ReduceOp : std::uint8_t { sum, avg, max, min };

constexpr std::string_view to_string(ReduceOp op) noexcept {
  switch (op) {
    case ReduceOp::sum: return "sum";
    case ReduceOp::avg: return "avg";
    case ReduceOp::max: return "max";
    case ReduceOp::min: return "min";
  }
  return "?";
}

enum class PlacementKind : std::uint8_t { replicate, shard, strided_shard, partial };

struct PlacementSpec {
  PlacementKind kind = PlacementKind::replicate;
  int dim = 0;           // shard and strided_shard
  int split_factor = 1;  // strided_shard
  ReduceOp op = ReduceOp::sum;  // partial

  static constexpr PlacementSpec replicate() noexcept { return {}; }
  static constexpr PlacementSpec shard(int dim) noexcept { return {PlacementKind::shard, dim, 1, ReduceOp::sum}; }
  static constexpr PlacementSpec strided_shard(int dim, int split_factor) noexcept {
    return {PlacementKind::strided_shard, dim, split_factor, ReduceOp::sum};
  }
  static constexpr PlacementSpec partial(ReduceOp op = ReduceOp::sum) noexcept {
    return {PlacementKind::partial, 0, 1, op};
  }

  constexpr bool is_replicate() const noexcept { return kind == PlacementKind::replicate; }
  constexpr bool is_partial() const noexcept { return kind == PlacementKind::partial; }
  /// Shard or StridedShard.
  constexpr bool is_shard() const noexcept {
    return kind == PlacementKind::shard || kind == PlacementKind::strided_shard;
  }
  constexpr bool is_shard(int d) const noexcept { return is_shard() && dim == d; }

  friend constexpr bool operator==(const PlacementSpec& a, const PlacementSpec& b) noexcept {
    if (a.kind != b.kind) return false;
    switch (a.kind) {
      case PlacementKind::replicate: return true;
      case PlacementKind::shard: return a.dim == b.dim;
      case PlacementKind::strided_shard: return a.dim == b.dim && a.split_factor == b.split_factor;
      case PlacementKind::partial: return a.op == b.op;
    }
    return false;
  }
};

/// "Replicate()", "Shard(0)", "StridedShard(0, sf=2)", "Partial(sum)"; DTensor's spelling.
constexpr Message& operator<<(Message& m, const PlacementSpec& p) noexcept {
  switch (p.kind) {
    case PlacementKind::replicate: return m << "Replicate()";
    case PlacementKind::shard: return m << "Shard(" << p.dim << ")";
    case PlacementKind::strided_shard: return m << "StridedShard(" << p.dim << ", sf=" << p.split_factor << ")";
    case PlacementKind::partial: return m << "Partial(" << to_string(p.op) << ")";
  }
  return m;
}

inline std::string to_string(const PlacementSpec& p) {
  Message m;
  m << p;
  return std::string(m.view());
}

namespace placement_rules {
constexpr Message split_factor_positive(int split_factor) noexcept {
  if (split_factor >= 1) return {};
  return Message::rule("split_factor_positive")
         << "StridedShard has split factor " << split_factor << "; it needs a split factor of at least 1";
}
}  // namespace placement_rules

struct Replicate {
  static constexpr PlacementSpec spec = PlacementSpec::replicate();
};

template <int D>
struct Shard {
  static constexpr int dim = D;
  static constexpr PlacementSpec spec = PlacementSpec::shard(D);
};

template <int D, int SF>
struct StridedShard {
  static_assert(rule_check<placement_rules::split_factor_positive(SF)>::passed);
  static constexpr int dim = D;
  static constexpr int split_factor = SF;
  static constexpr PlacementSpec spec = PlacementSpec::strided_shard(D, SF);
};

template <ReduceOp Op = ReduceOp::sum>
struct Partial {
  static constexpr ReduceOp op = Op;
  static constexpr PlacementSpec spec = PlacementSpec::partial(Op);
};

template <class T>
inline constexpr bool is_placement_v = false;
template <>
inline constexpr bool is_placement_v<Replicate> = true;
template <int D>
inline constexpr bool is_placement_v<Shard<D>> = true;
template <int D, int SF>
inline constexpr bool is_placement_v<StridedShard<D, SF>> = SF >= 1;
template <ReduceOp Op>
inline constexpr bool is_placement_v<Partial<Op>> = true;

/// Replicate, Shard<D>, StridedShard<D, SF> or Partial<Op>.
template <class T>
concept Placement = is_placement_v<T>;

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
