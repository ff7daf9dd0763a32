// The compile-time benchmark: DeepSeek-V3's full expert-tensor-parallel plan validated by
// the compiler on a 3-axis mesh (dp 4 x ep 64 x tp 8).
#include "meshplan/meshplan.hpp"
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/deepseek_v3.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
using Mesh = mp::DeviceMesh<mp::Axis<"dp", 4>, mp::Axis<"ep", 64>, mp::Axis<"tp", 8>>;
using Plan = mp::plans::deepseek_v3::etp<"ep", "tp">;

static_assert(mp::validate<mp::models::DeepSeek_V3, Mesh, Plan>());

int main() { return static_cast<int>(Plan::entries.size() == 0); }
