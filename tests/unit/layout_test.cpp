// Layouts against a plain reference of DTensor's rules: for random meshes (1 to 4 axes of
// sizes 1 to 8), extents and placements, every rank holds exactly the elements the
// reference gives, and the pieces of all ranks tile the tensor exactly once per replica.
#include <catch2/catch.hpp>

#include <random>
#include <string>
#include <vector>

#include "meshplan/placement/layout.hpp"
#include "meshplan/placement/layout_spec.hpp"

namespace mp = meshplan;
using mp::index_t;
using mp::PlacementSpec;

namespace {

using Indices = std::vector<index_t>;

// torch.chunk(v, k), then DTensor's fill of missing trailing pieces with empty ones.
std::vector<Indices> torch_chunk(const Indices& v, index_t k) {
  std::vector<Indices> pieces;
  index_t n = static_cast<index_t>(v.size());
  if (n > 0) {
    index_t size = (n + k - 1) / k;
    for (index_t start = 0; start < n; start += size)
      pieces.emplace_back(v.begin() + start, v.begin() + std::min(n, start + size));
  }
  while (static_cast<index_t>(pieces.size()) < k) pieces.emplace_back();
  return pieces;
}

// DTensor's _split_tensor for one placement, piece `r` of `k`.
Indices dtensor_split(const Indices& v, const PlacementSpec& p, index_t k, index_t r) {
  if (p.kind == mp::PlacementKind::shard) return torch_chunk(v, k)[r];
  Indices out;  // StridedShard: sf pieces, each chunked into k; rank r takes piece_j[r].
  for (const Indices& piece : torch_chunk(v, p.split_factor)) {
    Indices part = torch_chunk(piece, k)[r];
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

// The global indices of `dim` that rank `coords` holds: placements in mesh order.
Indices reference_held(const std::vector<index_t>& sizes, const std::vector<index_t>& coords,
                       const std::vector<PlacementSpec>& placements, int dim, index_t extent) {
  Indices v(extent);
  for (index_t i = 0; i < extent; ++i) v[i] = i;
  for (std::size_t a = 0; a < placements.size(); ++a)
    if (placements[a].is_shard(dim)) v = dtensor_split(v, placements[a], sizes[a], coords[a]);
  return v;
}

Indices flatten(const mp::IndexRuns& runs) {
  Indices v;
  for (auto run : runs)
    for (index_t i = 0; i < run.size; ++i) v.push_back(run.begin + i);
  return v;
}

struct Case {
  mp::MeshSpec mesh;
  std::vector<index_t> sizes;
  std::vector<index_t> extents;
  std::vector<PlacementSpec> placements;
};

Case random_case(std::mt19937& rng, bool shards_only) {
  static const char* names[] = {"dp", "ep", "tp", "cp"};
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  Case c;
  std::string text;
  int ndim = pick(1, 4);
  for (int a = 0; a < ndim; ++a) {
    c.sizes.push_back(pick(1, 8));
    text += std::string(a ? "," : "") + names[a] + "=" + std::to_string(c.sizes.back());
  }
  c.mesh = mp::MeshSpec::parse(text);
  int rank = pick(1, 3);
  for (int d = 0; d < rank; ++d) c.extents.push_back(pick(0, 13));
  for (int a = 0; a < ndim; ++a) {
    int kind = shards_only ? pick(1, 2) : pick(0, 3);
    int dim = pick(0, rank - 1);
    switch (kind) {
      case 0: c.placements.push_back(PlacementSpec::replicate()); break;
      case 1: c.placements.push_back(PlacementSpec::shard(dim)); break;
      case 2: c.placements.push_back(PlacementSpec::strided_shard(dim, pick(1, 3))); break;
      default: c.placements.push_back(PlacementSpec::partial()); break;
    }
  }
  return c;
}

std::string describe(const Case& c) {
  std::string s = "mesh " + c.mesh.to_string() + ", extents";
  for (auto e : c.extents) s += " " + std::to_string(e);
  s += ", placements";
  for (const auto& p : c.placements) s += " " + mp::to_string(p);
  return s;
}

}  // namespace

TEST_CASE("every rank holds what DTensor's rules give it", "[layout][property]") {
  std::mt19937 rng(20261121);
  for (int trial = 0; trial < 1500; ++trial) {
    Case c = random_case(rng, false);
    INFO(describe(c));
    mp::LayoutSpec layout(c.mesh, c.extents, c.placements);
    for (index_t r = 0; r < c.mesh.size(); ++r) {
      auto coords = c.mesh.coordinates(r);
      auto extents = layout.local_extents(r);
      auto offsets = layout.global_offsets(r);
      for (std::size_t d = 0; d < c.extents.size(); ++d) {
        Indices expected = reference_held(c.sizes, coords, c.placements, static_cast<int>(d), c.extents[d]);
        REQUIRE(flatten(layout.held_indices(d, r)) == expected);
        REQUIRE(extents[d] == static_cast<index_t>(expected.size()));
        REQUIRE(offsets[d] == (expected.empty() ? c.extents[d] : expected.front()));
      }
    }
  }
}

TEST_CASE("the pieces of all ranks tile the tensor exactly once per replica", "[layout][property]") {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 600; ++trial) {
    Case c = random_case(rng, trial % 2 == 0);
    if (c.mesh.size() > 512) continue;
    INFO(describe(c));
    mp::LayoutSpec layout(c.mesh, c.extents, c.placements);
    // Each element is held once by every combination of coordinates on axes that do not
    // shard it; with only Shard/StridedShard axes on all dims, exactly once.
    std::size_t elements = 1;
    for (auto e : c.extents) elements *= static_cast<std::size_t>(e);
    std::vector<int> count(elements, 0);
    for (index_t r = 0; r < c.mesh.size(); ++r) {
      std::vector<Indices> held;
      for (std::size_t d = 0; d < c.extents.size(); ++d) held.push_back(flatten(layout.held_indices(d, r)));
      // Visit the cartesian product of the held indices.
      std::vector<std::size_t> pos(held.size(), 0);
      bool any = true;
      for (auto& h : held) any = any && !h.empty();
      while (any) {
        std::size_t flat = 0;
        for (std::size_t d = 0; d < held.size(); ++d) flat = flat * c.extents[d] + held[d][pos[d]];
        ++count[flat];
        std::size_t d = held.size();
        while (d-- > 0 && ++pos[d] == held[d].size()) pos[d] = 0;
        if (d == static_cast<std::size_t>(-1)) break;
      }
    }
    for (std::size_t flat = 0; flat < elements; ++flat) {
      // The replica count of an element depends only on the placements.
      index_t replicas = 1;
      for (std::size_t a = 0; a < c.placements.size(); ++a)
        if (!c.placements[a].is_shard()) replicas *= c.sizes[a];
      REQUIRE(count[flat] == replicas);
    }
  }
}

TEST_CASE("typed Layout and LayoutSpec agree; static extents stay static", "[layout]") {
  using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep", 4>, mp::Axis<"tp", 2>>;
  using GateUp = mp::Layout<Mesh, mp::Extents<128, 1536, 2048>, mp::Replicate, mp::Shard<0>, mp::StridedShard<1, 2>>;
  Mesh mesh{3};
  GateUp w{mesh, {}};
  mp::LayoutSpec spec(w);
  for (index_t r = 0; r < mesh.size(); ++r) {
    auto e = w.local_extents(r);
    auto o = w.global_offsets(r);
    CHECK(std::vector<index_t>(e.begin(), e.end()) == spec.local_extents(r));
    CHECK(std::vector<index_t>(o.begin(), o.end()) == spec.global_offsets(r));
    CHECK(e[0] == 32);
    CHECK(e[1] == 768);
    // Rank r on tp holds [gate_t | up_t]: rows t*384.. of gate and 768 + t*384.. of up.
    index_t t = mesh.coordinate<"tp">(r);
    CHECK(w.held_indices(1, r) == mp::IndexRuns{{t * 384, 384}, {768 + t * 384, 384}});
  }
  STATIC_REQUIRE(std::is_same_v<decltype(w.local_extent<0>(0)), mp::C<32>>);
  STATIC_REQUIRE(std::is_same_v<decltype(w.local_extent<1>(0)), mp::C<768>>);
  using Uneven = mp::Layout<Mesh, mp::Extents<10>, mp::Shard<0>, mp::Replicate, mp::Replicate>;
  STATIC_REQUIRE(std::is_same_v<decltype(Uneven{mesh, {}}.local_extent<0>(0)), index_t>);
}

TEST_CASE("LayoutSpec applies the layout rules at run time", "[layout]") {
  auto mesh = mp::MeshSpec::parse("ep=4,tp=2");
  CHECK_THROWS_WITH(mp::LayoutSpec(mesh, {8, 8}, {PlacementSpec::shard(0)}),
                    "meshplan [placement_count]: a Layout needs one placement per mesh axis: the mesh has 2 axis(es) "
                    "but 1 placement(s) were given");
  CHECK_THROWS_WITH(mp::LayoutSpec(mesh, {8, 8}, {PlacementSpec::shard(0), PlacementSpec::shard(2)}),
                    "meshplan [shard_dim_in_range]: placement Shard(2) on mesh axis 'tp' shards dim 2 of a tensor "
                    "with 2 dim(s)");
  CHECK_THROWS_WITH(mp::LayoutSpec(mesh, {8, 8}, {PlacementSpec::strided_shard(0, 0), PlacementSpec::replicate()}),
                    Catch::Contains("[split_factor_positive]"));
  CHECK_THROWS_WITH(mp::LayoutSpec(mesh, {8, -1}, {PlacementSpec::replicate(), PlacementSpec::replicate()}),
                    Catch::Contains("[extent_nonnegative]: tensor dim 1 has extent -1"));
  mp::LayoutSpec last(mesh, {8, 6}, {PlacementSpec::shard(-1), PlacementSpec::replicate()});
  CHECK(last.placements()[0] == PlacementSpec::shard(1));
  CHECK(last.local_extents(2) == std::vector<index_t>{8, 2});
  CHECK_THROWS_WITH(last.local_extents(8), Catch::Contains("[rank_in_mesh]"));
}
