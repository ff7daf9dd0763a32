// Baseline of the compile-time benchmark: the same headers as validate_deepseek_v3.cpp,
// the same mesh and plan types named, nothing validated.
#include "meshplan/meshplan.hpp"
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/deepseek_v3.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
using Mesh = mp::DeviceMesh<mp::Axis<"dp", 4>, mp::Axis<"ep", 64>, mp::Axis<"tp", 8>>;
using Plan = mp::plans::deepseek_v3::etp<"ep", "tp">;

int main() { return static_cast<int>(Plan::entries.size() == 0); }
