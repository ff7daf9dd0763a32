// Redistribution plans computed by the compiler.
#include "meshplan/placement/redistribute.hpp"

namespace mp = meshplan;
using mp::Collective;
using Mesh = mp::DeviceMesh<mp::Axis<"ep", 4>, mp::Axis<"tp", 2>>;
using E = mp::Extents<64, 32>;
template <class... Ps>
using L = mp::Layout<Mesh, E, Ps...>;

using Sharded = L<mp::Shard<0>, mp::Shard<1>>;
using RowsOnEp = L<mp::Shard<0>, mp::Replicate>;
using PartialTp = L<mp::Shard<0>, mp::Partial<>>;
using ColsOnTp = L<mp::Replicate, mp::Shard<1>>;

// Rowwise TP output: partial sums over tp, all-reduced...
static_assert(mp::redistribution<PartialTp, RowsOnEp>::size == 1);
static_assert(mp::redistribution<PartialTp, RowsOnEp>::steps[0].collective == Collective::all_reduce);
static_assert(mp::redistribution<PartialTp, RowsOnEp>::steps[0].axis == 1);
// ...or reduce-scattered (sequence parallelism).
static_assert(mp::redistribution<PartialTp, Sharded>::steps[0].collective == Collective::reduce_scatter);
static_assert(mp::redistribution<Sharded, RowsOnEp>::uses(Collective::all_gather));
static_assert(mp::redistribution<RowsOnEp, Sharded>::steps[0].collective == Collective::local_split);
static_assert(mp::redistribution<Sharded, Sharded>::is_noop);
static_assert(mp::redistribution<RowsOnEp, ColsOnTp>::size == 2);
static_assert(!mp::communicates(Collective::local_split) && mp::communicates(Collective::all_to_all));
