// DeviceMesh and MeshSpec: rank <-> coordinates and groups against a plain reference of
// torch's DeviceMesh (ranks laid out as torch.arange(n).reshape(sizes)).
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "meshplan/mesh/device_mesh.hpp"
#include "meshplan/mesh/mesh_spec.hpp"

namespace mp = meshplan;
using mp::index_t;

namespace {

// Reference: enumerate the reshaped arange. coords[r] are rank r's coordinates.
std::vector<std::vector<index_t>> reference_coordinates(const std::vector<index_t>& sizes) {
  index_t n = 1;
  for (auto s : sizes) n *= s;
  std::vector<std::vector<index_t>> coords;
  std::vector<index_t> c(sizes.size(), 0);
  for (index_t r = 0; r < n; ++r) {
    coords.push_back(c);
    for (std::size_t a = sizes.size(); a-- > 0;) {  // odometer, last axis fastest
      if (++c[a] < sizes[a]) break;
      c[a] = 0;
    }
  }
  return coords;
}

// Reference group: all ranks equal to `rank` off the group axes, ordered row-major by
// their coordinates on the group axes in the order given.
std::vector<index_t> reference_group(const std::vector<std::vector<index_t>>& coords, index_t rank,
                                     const std::vector<std::size_t>& axes) {
  std::vector<index_t> members;
  for (index_t r = 0; r < static_cast<index_t>(coords.size()); ++r) {
    bool same = true;
    for (std::size_t a = 0; a < coords[r].size(); ++a)
      if (std::find(axes.begin(), axes.end(), a) == axes.end() && coords[r][a] != coords[rank][a]) same = false;
    if (same) members.push_back(r);
  }
  auto key = [&](index_t r) {
    std::vector<index_t> k;
    for (auto a : axes) k.push_back(coords[r][a]);
    return k;
  };
  std::stable_sort(members.begin(), members.end(), [&](index_t x, index_t y) { return key(x) < key(y); });
  return members;
}

mp::MeshSpec random_mesh(std::mt19937& rng, std::vector<index_t>& sizes) {
  std::uniform_int_distribution<int> ndim(1, 4), size(1, 8);
  static const char* names[] = {"dp", "ep", "tp", "cp"};
  std::string text;
  sizes.clear();
  int n = ndim(rng);
  for (int a = 0; a < n; ++a) {
    sizes.push_back(size(rng));
    text += std::string(a ? "," : "") + names[a] + "=" + std::to_string(sizes.back());
  }
  return mp::MeshSpec::parse(text);
}

}  // namespace

TEST_CASE("rank <-> coordinates match torch's row-major layout", "[mesh]") {
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<index_t> sizes;
    auto mesh = random_mesh(rng, sizes);
    auto coords = reference_coordinates(sizes);
    REQUIRE(mesh.size() == static_cast<index_t>(coords.size()));
    for (index_t r = 0; r < mesh.size(); ++r) {
      REQUIRE(mesh.coordinates(r) == coords[r]);
      REQUIRE(mesh.rank_of(coords[r]) == r);
    }
  }
}

TEST_CASE("groups along one or several axes match the reference", "[mesh]") {
  std::mt19937 rng(99);
  static const std::vector<std::string_view> names = {"dp", "ep", "tp", "cp"};
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<index_t> sizes;
    auto mesh = random_mesh(rng, sizes);
    if (mesh.size() > 256) continue;  // The reference is quadratic in the mesh size.
    auto coords = reference_coordinates(sizes);
    // A random non-empty ordered subset of the axes.
    std::vector<std::size_t> axes(sizes.size());
    for (std::size_t a = 0; a < axes.size(); ++a) axes[a] = a;
    std::shuffle(axes.begin(), axes.end(), rng);
    axes.resize(std::uniform_int_distribution<std::size_t>(1, axes.size())(rng));
    std::vector<std::string_view> group_names;
    for (auto a : axes) group_names.push_back(names[a]);
    for (index_t r = 0; r < mesh.size(); ++r) {
      auto g = mesh.group(r, group_names);
      auto expected = reference_group(coords, r, axes);
      REQUIRE(g.members == expected);
      REQUIRE(g.members[static_cast<std::size_t>(g.rank)] == r);
    }
  }
}

TEST_CASE("a typed mesh and its MeshSpec agree", "[mesh]") {
  using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep", 4>, mp::Axis<"tp", 2>>;
  Mesh mesh{3};
  mp::MeshSpec spec(mesh);
  CHECK(spec.to_string() == "dp=3,ep=4,tp=2");
  CHECK(mesh.size() == 24);
  for (index_t r = 0; r < mesh.size(); ++r) {
    auto c = mesh.coordinates(r);
    CHECK(std::vector<index_t>(c.begin(), c.end()) == spec.coordinates(r));
    CHECK(mesh.group<"ep">(r) == spec.group(r, {"ep"}));
    CHECK(mesh.group<"dp", "ep">(r) == spec.group(r, {"dp", "ep"}));
    CHECK(mesh.group(r, {"tp", "dp"}) == spec.group(r, {"tp", "dp"}));
    CHECK(mesh.coordinate<"ep">(r) == c[1]);
  }
  CHECK(mesh.size<"dp">() == 3);
  CHECK(mesh.size("tp") == 2);
}

TEST_CASE("run-time mistakes throw the rule's message", "[mesh]") {
  using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep", 4>>;
  CHECK_THROWS_WITH(Mesh{0}, "meshplan [axis_size_positive]: mesh axis 'dp' has size 0; every mesh axis needs a "
                             "size of at least 1");
  CHECK_THROWS_WITH(Mesh{-3}, Catch::Contains("has size -3"));
  Mesh mesh{2};
  CHECK_THROWS_WITH(mesh.size("xp"), "meshplan [axis_known]: the mesh has no axis named 'xp'; its axes are 'dp', 'ep'");
  CHECK_THROWS_WITH(mesh.group(0, {"ep", "ep"}), Catch::Contains("[group_axes_distinct]"));
  CHECK_THROWS_WITH(mesh.group(0, {}), Catch::Contains("at least one mesh axis"));
  CHECK_THROWS_WITH(mesh.coordinates(8), "meshplan [rank_in_mesh]: rank 8 is outside the mesh, whose ranks are 0 to 7");
  CHECK_THROWS_WITH(mesh.coordinates(-1), Catch::Contains("[rank_in_mesh]"));
  CHECK_THROWS_WITH(mesh.rank_of({2, 0}), Catch::Contains("[coordinate_in_axis]: coordinate 2 is outside mesh axis 'dp'"));
  std::vector<index_t> two = {2, 2};
  CHECK_THROWS_WITH(Mesh{std::span<const index_t>(two)}, Catch::Contains("[dynamic_sizes_given]"));
}

TEST_CASE("MeshSpec parses and checks like DeviceMesh", "[mesh]") {
  auto spec = mp::MeshSpec::parse(" dp=2 , ep=16");
  CHECK(spec.ndim() == 2);
  CHECK(spec.size() == 32);
  CHECK(spec.size("ep") == 16);
  CHECK(spec.has_axis("dp"));
  CHECK_FALSE(spec.has_axis("tp"));
  // The same texts as the compile-time path (see tests/fail/mesh_*.cpp).
  CHECK_THROWS_WITH(mp::MeshSpec::parse("ep=4,ep=2"),
                    "meshplan [axis_names_unique]: mesh axis name 'ep' is used twice (axes 0 and 1); every axis "
                    "needs its own name");
  CHECK_THROWS_WITH(mp::MeshSpec::parse("ep=0"), Catch::Contains("[axis_size_positive]"));
  CHECK_THROWS_WITH(mp::MeshSpec::parse("1ep=2"), Catch::Contains("[axis_name_valid]: mesh axis name '1ep'"));
  CHECK_THROWS_WITH(mp::MeshSpec::parse("ep"), Catch::Contains("[mesh_syntax]"));
  CHECK_THROWS_WITH(mp::MeshSpec::parse("ep=x"), Catch::Contains("[mesh_syntax]"));
  CHECK_THROWS_WITH(mp::MeshSpec::parse("ep=-2"), Catch::Contains("[mesh_syntax]"));
  CHECK_THROWS_WITH(mp::MeshSpec::parse(""), Catch::Contains("[mesh_has_axes]"));
  // An empty axis is a typo, never skipped.
  CHECK_THROWS_WITH(mp::MeshSpec::parse("ep=2,"),
                    "meshplan [mesh_syntax]: mesh 'ep=2,' has an empty axis (a comma too many); write axes as "
                    "name=size separated by single commas, e.g. dp=2,ep=4");
  for (const char* text : {",ep=2", "ep=2,,tp=2", "ep=2, ", ","})
    CHECK_THROWS_WITH(mp::MeshSpec::parse(text), Catch::Contains("[mesh_syntax]") && Catch::Contains("empty axis"));
  CHECK_THROWS_WITH((mp::MeshSpec{{"ep", -1}}), Catch::Contains("[axis_size_positive]"));
}
