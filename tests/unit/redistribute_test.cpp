// Redistribution plans, executed on a simulation of every rank's indices: for random
// pairs of layouts, running the planned collectives from the source layout must leave
// every rank holding exactly what the target layout says.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "meshplan/placement/layout_spec.hpp"
#include "meshplan/placement/redistribute.hpp"

namespace mp = meshplan;
using mp::Collective;
using mp::index_t;
using mp::PlacementSpec;

namespace {

using Indices = std::vector<index_t>;

Indices flatten(const mp::IndexRuns& runs) {
  Indices v;
  for (auto run : runs)
    for (index_t i = 0; i < run.size; ++i) v.push_back(run.begin + i);
  return v;
}

Indices sub(const Indices& v, mp::Chunk c) { return Indices(v.begin() + c.offset, v.begin() + c.offset + c.size); }

// What a local split by `p` (axis size k, coordinate r) keeps of `v`.
Indices split(const Indices& v, const PlacementSpec& p, index_t k, index_t r) {
  index_t n = static_cast<index_t>(v.size());
  if (p.kind == mp::PlacementKind::shard) return sub(v, mp::chunk(n, k, r));
  Indices out;
  for (index_t j = 0; j < p.split_factor; ++j) {
    Indices piece = sub(v, mp::chunk(n, p.split_factor, j));
    Indices part = sub(piece, mp::chunk(static_cast<index_t>(piece.size()), k, r));
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

// Inverse of `split` over a whole group: the pieces of members 0..k-1 put back in order.
Indices unsplit(const std::vector<Indices>& pieces, const PlacementSpec& p) {
  index_t k = static_cast<index_t>(pieces.size());
  Indices all;
  if (p.kind == mp::PlacementKind::shard) {
    for (const auto& piece : pieces) all.insert(all.end(), piece.begin(), piece.end());
    return all;
  }
  index_t n = 0;
  for (const auto& piece : pieces) n += static_cast<index_t>(piece.size());
  std::vector<std::size_t> cursor(pieces.size(), 0);
  for (index_t j = 0; j < p.split_factor; ++j) {
    index_t piece_size = mp::chunk(n, p.split_factor, j).size;
    for (index_t r = 0; r < k; ++r) {
      index_t part = mp::chunk(piece_size, k, r).size;
      for (index_t i = 0; i < part; ++i) all.push_back(pieces[r][cursor[r]++]);
    }
  }
  return all;
}

struct RankState {
  std::vector<Indices> dims;
  std::set<std::size_t> partial_axes;
  bool operator==(const RankState&) const = default;
};

// Executes the plan; returns false (with a reason) if a step is not executable.
bool execute(const mp::MeshSpec& mesh, std::vector<RankState>& ranks, const std::vector<mp::RedistributeStep>& steps,
             std::string& why) {
  for (const auto& step : steps) {
    std::vector<RankState> next = ranks;
    std::string axis(mesh.axis_name(step.axis));
    for (index_t r = 0; r < mesh.size(); ++r) {
      auto g = mesh.group(r, {axis});
      index_t k = g.size();
      RankState& me = next[r];
      auto member = [&](index_t i) -> const RankState& { return ranks[g.members[i]]; };
      auto same_except = [&](int skip_dim) {
        for (index_t i = 0; i < k; ++i)
          for (std::size_t d = 0; d < me.dims.size(); ++d)
            if (static_cast<int>(d) != skip_dim && member(i).dims[d] != ranks[r].dims[d]) return false;
        return true;
      };
      switch (step.collective) {
        case Collective::all_gather: {
          if (!same_except(step.from.dim)) return why = "all_gather over unequal other dims", false;
          std::vector<Indices> pieces;
          for (index_t i = 0; i < k; ++i) pieces.push_back(member(i).dims[step.from.dim]);
          me.dims[step.from.dim] = unsplit(pieces, step.from);
          break;
        }
        case Collective::all_reduce:
        case Collective::reduce_scatter:
          if (!same_except(-1)) return why = "reduction over unequal pieces", false;
          if (!me.partial_axes.erase(step.axis)) return why = "reduction of a non-partial axis", false;
          if (step.collective == Collective::reduce_scatter)
            me.dims[step.to.dim] = split(me.dims[step.to.dim], step.to, k, g.rank);
          break;
        case Collective::all_to_all: {
          std::vector<Indices> pieces;
          for (index_t i = 0; i < k; ++i) pieces.push_back(member(i).dims[step.from.dim]);
          for (index_t i = 0; i < k; ++i)
            for (std::size_t d = 0; d < me.dims.size(); ++d)
              if (static_cast<int>(d) != step.from.dim && member(i).dims[d] != ranks[r].dims[d])
                return why = "all_to_all over unequal dims", false;
          me.dims[step.from.dim] = unsplit(pieces, step.from);
          me.dims[step.to.dim] = split(me.dims[step.to.dim], step.to, k, g.rank);
          break;
        }
        case Collective::local_split:
          me.dims[step.to.dim] = split(me.dims[step.to.dim], step.to, k, g.rank);
          break;
        case Collective::local_partition:
          me.partial_axes.insert(step.axis);
          break;
      }
    }
    ranks = next;
  }
  return true;
}

std::vector<RankState> states_of(const mp::LayoutSpec& layout) {
  std::vector<RankState> states;
  for (index_t r = 0; r < layout.mesh().size(); ++r) {
    RankState s;
    for (std::size_t d = 0; d < layout.tensor_rank(); ++d) s.dims.push_back(flatten(layout.held_indices(d, r)));
    for (std::size_t a = 0; a < layout.placements().size(); ++a)
      if (layout.placements()[a].is_partial()) s.partial_axes.insert(a);
    states.push_back(s);
  }
  return states;
}

PlacementSpec random_placement(std::mt19937& rng, int rank) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  switch (pick(0, 4)) {
    case 0: return PlacementSpec::replicate();
    case 1:
    case 2: return PlacementSpec::shard(pick(0, rank - 1));
    case 3: return PlacementSpec::strided_shard(pick(0, rank - 1), pick(2, 3));
    default: return PlacementSpec::partial();
  }
}

bool unsupported(const PlacementSpec& from, const PlacementSpec& to) {
  return from.is_shard() && to.is_partial();
}

}  // namespace

TEST_CASE("planned redistributions, executed, reach the target layout", "[redistribute][property]") {
  std::mt19937 rng(31337);
  static const char* names[] = {"dp", "ep", "tp"};
  int executed = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    std::string text;
    int ndim = pick(1, 3);
    for (int a = 0; a < ndim; ++a) text += std::string(a ? "," : "") + names[a] + "=" + std::to_string(pick(1, 4));
    auto mesh = mp::MeshSpec::parse(text);
    int rank = pick(1, 2);
    std::vector<index_t> extents;
    for (int d = 0; d < rank; ++d) extents.push_back(pick(0, 12));
    std::vector<PlacementSpec> from, to;
    bool refused = false;
    for (int a = 0; a < ndim; ++a) {
      from.push_back(random_placement(rng, rank));
      to.push_back(random_placement(rng, rank));
      refused = refused || unsupported(from.back(), to.back());
    }
    mp::LayoutSpec source(mesh, extents, from), target(mesh, extents, to);
    auto axis_names = mesh.name_views();
    std::string description = mesh.to_string();
    for (std::size_t a = 0; a < from.size(); ++a) description += " " + mp::to_string(from[a]) + "->" + mp::to_string(to[a]);
    INFO(description);
    if (refused) {
      REQUIRE_THROWS_WITH(mp::redistribution_steps(axis_names, source.placements(), target.placements()),
                          Catch::Contains("[redistribution_supported]"));
      continue;
    }
    auto steps = mp::redistribution_steps(axis_names, source.placements(), target.placements());
    auto ranks = states_of(source);
    std::string why;
    REQUIRE(execute(mesh, ranks, steps, why));
    INFO(why);
    REQUIRE(ranks == states_of(target));
    ++executed;
  }
  CHECK(executed > 1500);
}

TEST_CASE("redistribution picks DTensor's collectives", "[redistribute]") {
  auto plan = [](std::vector<PlacementSpec> from, std::vector<PlacementSpec> to) {
    std::vector<std::string_view> names = {"dp", "tp"};
    names.resize(from.size());
    std::vector<std::pair<std::size_t, Collective>> out;
    for (auto& s : mp::redistribution_steps(names, from, to)) out.emplace_back(s.axis, s.collective);
    return out;
  };
  using V = std::vector<std::pair<std::size_t, Collective>>;
  auto R = PlacementSpec::replicate();
  auto S0 = PlacementSpec::shard(0), S1 = PlacementSpec::shard(1);
  auto P = PlacementSpec::partial();
  CHECK(plan({S0}, {R}) == V{{0, Collective::all_gather}});
  CHECK(plan({P}, {R}) == V{{0, Collective::all_reduce}});
  CHECK(plan({P}, {S1}) == V{{0, Collective::reduce_scatter}});
  CHECK(plan({S0}, {S1}) == V{{0, Collective::all_to_all}});
  CHECK(plan({R}, {S0}) == V{{0, Collective::local_split}});
  CHECK(plan({R}, {P}) == V{{0, Collective::local_partition}});
  CHECK(plan({S0}, {S0}).empty());
  // DTensor's example: (S0, S0) -> (R, S0) gathers the inner axis first.
  CHECK(plan({S0, S0}, {R, S0}) ==
        V{{1, Collective::all_gather}, {0, Collective::all_gather}, {1, Collective::local_split}});
  // A strided shard has no direct path to a plain one: through Replicate.
  CHECK(plan({PlacementSpec::strided_shard(0, 2)}, {S0}) ==
        V{{0, Collective::all_gather}, {0, Collective::local_split}});
  CHECK_THROWS_WITH(plan({P}, {PlacementSpec::partial(mp::ReduceOp::max)}),
                    "meshplan [redistribution_supported]: cannot redistribute Partial(sum) to Partial(max) on mesh "
                    "axis 'dp': partial values of one reduction cannot become another's");
}
