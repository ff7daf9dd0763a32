// Layouts at compile time: local extents, offsets, static extents, and detection of
// illegal layouts.
#include <array>
#include <type_traits>

#include "meshplan/placement/layout.hpp"

namespace mp = meshplan;
using mp::Axis;
using mp::DeviceMesh;
using mp::Extents;
using mp::index_t;
using mp::Layout;
using mp::Replicate;
using mp::Shard;
using mp::StridedShard;

using Mesh = DeviceMesh<Axis<"ep", 4>, Axis<"tp", 2>>;
using Rows = std::array<index_t, 2>;

// Experts sharded on ep, fused gate||up split on tp as [gate_t | up_t].
using GateUp = Layout<Mesh, Extents<128, 1536, 2048>, Shard<0>, StridedShard<1, 2>>;
static_assert(std::is_empty_v<GateUp>);
static_assert(GateUp{}.local_extents(5) == std::array<index_t, 3>{32, 768, 2048});
static_assert(GateUp{}.global_offsets(5) == std::array<index_t, 3>{64, 384, 0});
static_assert(std::is_same_v<decltype(GateUp{}.local_extent<0>(0)), mp::C<32>>);

// torch.chunk: 10 rows over 4 ranks are 3, 3, 3, 1.
using Uneven = Layout<DeviceMesh<Axis<"tp", 4>>, Extents<10>, Shard<0>>;
static_assert(Uneven{}.local_extent(0, 0) == 3 && Uneven{}.local_extent(0, 3) == 1);
static_assert(Uneven::static_local_extent(0) == mp::dynamic);
// 5 rows over 4 ranks are 2, 2, 1, 0; the empty shard's offset is the extent.
using Empty = Layout<DeviceMesh<Axis<"tp", 4>>, Extents<5>, Shard<0>>;
static_assert(Empty{}.local_extent(0, 3) == 0 && Empty{}.global_offsets(3)[0] == 5);
static_assert(Empty{}.local_extent(0, 2) == 1 && Empty{}.global_offsets(2)[0] == 4);

// Two axes sharding one dim apply in mesh order: rank (i, j) starts at 4i + j.
using Nested = Layout<DeviceMesh<Axis<"dp", 2>, Axis<"tp", 4>>, Extents<8>, Shard<0>, Shard<0>>;
static_assert(Nested{}.global_offsets(6)[0] == 6 && Nested{}.global_offsets(5)[0] == 5);
static_assert(Nested::static_local_extent(0) == 1);

// FSDP2 on TP: StridedShard on dp then Shard on tp is TP's split first, then dp's.
using Fsdp = Layout<DeviceMesh<Axis<"dp", 2>, Axis<"tp", 2>>, Extents<8>, StridedShard<0, 2>, Shard<0>>;
static_assert(Fsdp{}.global_offsets(0)[0] == 0 && Fsdp{}.global_offsets(1)[0] == 4);
static_assert(Fsdp{}.global_offsets(2)[0] == 2 && Fsdp{}.global_offsets(3)[0] == 6);

// Negative shard dims count from the end.
static_assert(Layout<Mesh, Extents<4, 6>, Replicate, Shard<-1>>::placements[1] == mp::PlacementSpec::shard(1));

// A dynamic axis that shards nothing keeps other extents static.
using Dyn = Layout<DeviceMesh<Axis<"dp">, Axis<"tp", 2>>, Extents<mp::dynamic, 8>, Replicate, Shard<1>>;
static_assert(Dyn::static_local_extent(1) == 4 && Dyn::static_local_extent(0) == mp::dynamic);

// Negatives by detection.
static_assert(mp::valid_layout_v<Mesh, Extents<4>, Shard<0>, Replicate>);
static_assert(!mp::valid_layout_v<Mesh, Extents<4>, Shard<0>>);                     // one placement short
static_assert(!mp::valid_layout_v<Mesh, Extents<4>, Shard<0>, Shard<1>>);           // dim 1 of a 1-d tensor
static_assert(!mp::valid_layout_v<Mesh, Extents<4>, Shard<-2>, Replicate>);
static_assert(!mp::valid_layout_v<Mesh, Extents<4>, int, Replicate>);               // not a placement
static_assert(!mp::valid_layout_v<int, Extents<4>, Replicate, Replicate>);          // not a mesh
static_assert(!mp::valid_layout_v<Mesh, int, Replicate, Replicate>);                // not extents
