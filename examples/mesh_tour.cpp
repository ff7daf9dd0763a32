// A tour of meshplan's type-level core: a device mesh with named axes, the layout of a
// fused MoE expert weight on it, and the collectives that change one layout into another.
//
//   mesh_tour [--dp N]      (default: dp=2 on an ep=4 x tp=2 mesh)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "meshplan/meshplan.hpp"

namespace mp = meshplan;

using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep", 4>, mp::Axis<"tp", 2>>;
// Qwen3-30B-A3B's fused experts.gate_up_proj [E, 2I, H]: experts on ep, and each tp rank
// holding [gate_t | up_t] of the intermediate dim (DTensor's StridedShard, split factor 2).
using GateUp = mp::Layout<Mesh, mp::Extents<128, 1536, 2048>, mp::Replicate, mp::Shard<0>, mp::StridedShard<1, 2>>;
using Gathered = mp::Layout<Mesh, mp::Extents<128, 1536, 2048>, mp::Replicate, mp::Replicate, mp::Replicate>;

static std::string runs_to_string(const mp::IndexRuns& runs) {
  std::string s;
  for (auto r : runs) s += "[" + std::to_string(r.begin) + "," + std::to_string(r.begin + r.size) + ") ";
  return s;
}

int main(int argc, char** argv) {
  mp::index_t dp = 2;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--dp") == 0) dp = std::atol(argv[i + 1]);
  try {
    Mesh mesh{dp};
    std::printf("mesh %s: %lld ranks\n", mp::MeshSpec(mesh).to_string().c_str(),
                static_cast<long long>(mesh.size()));
    for (mp::index_t rank = 0; rank < mesh.size(); rank += mesh.size() / 4) {
      auto c = mesh.coordinates(rank);
      auto ep = mesh.group<"ep">(rank);
      auto dp_ep = mesh.group<"dp", "ep">(rank);
      std::printf("  rank %2lld at (dp %lld, ep %lld, tp %lld): ep group of %lld, dp x ep group of %lld, its rank %lld\n",
                  static_cast<long long>(rank), static_cast<long long>(c[0]), static_cast<long long>(c[1]),
                  static_cast<long long>(c[2]), static_cast<long long>(ep.size()),
                  static_cast<long long>(dp_ep.size()), static_cast<long long>(dp_ep.rank));
    }

    GateUp w{mesh, {}};
    std::printf("\nexperts.gate_up_proj [128, 1536, 2048] placed (Replicate, Shard(0), StridedShard(1, sf=2)):\n");
    for (mp::index_t rank : {mp::index_t{0}, mp::index_t{1}, mp::index_t{7}}) {
      auto e = w.local_extents(rank);
      std::printf("  rank %lld holds [%lld, %lld, %lld]: experts %s rows %s\n", static_cast<long long>(rank),
                  static_cast<long long>(e[0]), static_cast<long long>(e[1]), static_cast<long long>(e[2]),
                  runs_to_string(w.held_indices(0, rank)).c_str(), runs_to_string(w.held_indices(1, rank)).c_str());
    }
    static_assert(decltype(w.local_extent<1>(0))::value == 768, "exact splits stay static");

    std::printf("\ngathering it back to every rank takes:\n");
    for (const auto& step : mp::redistribution<GateUp, Gathered>::steps)
      std::printf("  %s on axis '%s'\n", mp::to_string(step.collective).data(),
                  std::string(Mesh::axis_name(step.axis)).c_str());
  } catch (const mp::RuleViolation& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
  return 0;
}
