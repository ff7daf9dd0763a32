// Placements as types and as values.
#include "meshplan/placement/placement.hpp"

namespace mp = meshplan;
using mp::PlacementSpec;

static_assert(mp::Placement<mp::Replicate>);
static_assert(mp::Placement<mp::Shard<1>>);
static_assert(mp::Placement<mp::StridedShard<0, 2>>);
static_assert(mp::Placement<mp::Partial<>>);
static_assert(mp::Placement<mp::Partial<mp::ReduceOp::max>>);
static_assert(!mp::Placement<int>);
static_assert(!mp::Placement<mp::PlacementSpec>);

static_assert(mp::Shard<1>::spec == PlacementSpec::shard(1));
static_assert(mp::Partial<>::op == mp::ReduceOp::sum);
static_assert(mp::StridedShard<0, 2>::spec.split_factor == 2);
static_assert(!(PlacementSpec::shard(0) == PlacementSpec::shard(1)));
static_assert(!(PlacementSpec::strided_shard(0, 2) == PlacementSpec::shard(0)));
static_assert(PlacementSpec::shard(2).is_shard(2) && !PlacementSpec::shard(2).is_shard(1));
static_assert(PlacementSpec::strided_shard(0, 3).is_shard(0));
static_assert(!PlacementSpec::partial().is_shard());

// DTensor's spelling, produced at compile time.
constexpr auto spelled(PlacementSpec p) {
  mp::Message m;
  m << p;
  return m;
}
static_assert(spelled(PlacementSpec::strided_shard(1, 2)).view() == "StridedShard(1, sf=2)");
static_assert(spelled(PlacementSpec::partial(mp::ReduceOp::avg)).view() == "Partial(avg)");
static_assert(spelled(PlacementSpec::replicate()).view() == "Replicate()");
