// Rule style_axis_known: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[style_axis_known\]: plan entry 'embed_tokens' uses style vocab_parallel on 'tp', but the mesh has no axis 'tp'; its axes are 'ep'
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
namespace st = mp::styles;
using namespace mp::plans;

#ifdef MESHPLAN_FAIL
static_assert(mp::validate<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"ep", 8>>, qwen3_moe::ep_tp<>>());
#else
static_assert(mp::validate<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"ep", 8>>, qwen3_moe::ep<>>());
#endif
