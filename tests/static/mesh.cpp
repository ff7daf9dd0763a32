// DeviceMesh at compile time: sizes, coordinates, and detection of illegal meshes.
#include <array>
#include <type_traits>

#include "meshplan/mesh/device_mesh.hpp"

namespace mp = meshplan;
using mp::Axis;
using mp::DeviceMesh;

using Static = DeviceMesh<Axis<"dp", 2>, Axis<"ep", 4>, Axis<"tp", 2>>;
using Mixed = DeviceMesh<Axis<"dp">, Axis<"ep", 4>>;

// A fully static mesh is an empty object and its sizes are types.
static_assert(std::is_empty_v<Static>);
static_assert(Static::ndim() == 3);
static_assert(Static::is_static && !Mixed::is_static);
static_assert(Mixed::dynamic_count == 1);
static_assert(std::is_same_v<decltype(Static{}.size()), mp::C<16>>);
static_assert(std::is_same_v<decltype(Static{}.size<"ep">()), mp::C<4>>);
static_assert(std::is_same_v<decltype(Mixed{3}.size()), mp::index_t>);
static_assert(std::is_same_v<decltype(Mixed{3}.size<"ep">()), mp::C<4>>);
static_assert(Mixed{3}.size() == 12);
static_assert(Static::index_of<"tp">() == 2);

// Row-major, last axis fastest (torch.arange(16).reshape(2, 4, 2)).
static_assert(Static{}.coordinates(13) == std::array<mp::index_t, 3>{1, 2, 1});
static_assert(Static{}.rank_of({1, 2, 1}) == 13);
static_assert(Static{}.coordinate<"ep">(5) == 2);
static_assert(mp::group_member(Static{}, 13, std::array<std::size_t, 1>{1}, 0) == 9);
static_assert(mp::group_rank(Static{}, 13, std::array<std::size_t, 2>{0, 1}) == 6);

// Negatives by detection: these would not compile.
static_assert(mp::valid_axis_v<"ep", 8> && mp::valid_axis_v<"dp">);
static_assert(!mp::valid_axis_v<"ep", 0>);
static_assert(!mp::valid_axis_v<"ep", -4>);
static_assert(!mp::valid_axis_v<"">);
static_assert(!mp::valid_axis_v<"e-p">);
static_assert(!mp::valid_axis_v<"2ep">);
static_assert(mp::valid_mesh_v<Axis<"ep", 4>, Axis<"tp">>);
static_assert(!mp::valid_mesh_v<Axis<"ep", 4>, Axis<"ep", 2>>);
static_assert(!mp::valid_mesh_v<Axis<"ep", 4>, int>);
static_assert(!mp::valid_mesh_v<>);

// A mesh with run-time sizes is not default-constructible.
static_assert(std::is_default_constructible_v<Static>);
static_assert(!std::is_default_constructible_v<Mixed>);
