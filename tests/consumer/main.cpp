// Built against an installed meshplan: the umbrella header, a mesh and a layout.
#include <meshplan/meshplan.hpp>

#include <cstdio>

namespace mp = meshplan;

int main() {
  using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep", 4>>;
  Mesh mesh{2};
  using Experts = mp::Layout<Mesh, mp::Extents<8, 16>, mp::Replicate, mp::Shard<0>>;
  Experts experts{mesh, {}};
  auto local = experts.local_extents(5);
  std::printf("rank 5 holds %lld x %lld of the experts\n", static_cast<long long>(local[0]),
              static_cast<long long>(local[1]));
  return local[0] == 2 && local[1] == 16 ? 0 : 1;
}
