// Rule axis_used: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[axis_used\]: mesh axis 'ep' \(size 2\) is used by no entry of the plan, whose axes are 'tp'; only 'dp', the data-parallel axis, may go unused: drop 'ep' or give it size 1, or choose a plan that shards over it
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
using namespace mp::plans;

#ifdef MESHPLAN_FAIL
static_assert(mp::validate<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"ep", 2>, mp::Axis<"tp", 2>>, qwen3_moe::tp<>>());
#else
// dp may go unused (replicas are data parallelism), and so may an axis of size 1.
static_assert(mp::validate<mp::models::TinyQwen3Moe,
                           mp::DeviceMesh<mp::Axis<"dp", 2>, mp::Axis<"ep", 1>, mp::Axis<"tp", 2>>, qwen3_moe::tp<>>());
#endif
