// Rule param_matched_once: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[param_matched_once\]: parameter 'layers\.\*\.mlp\.experts\.gate_up_proj' is matched by two plan entries, 'layers\.\*\.mlp\.experts' and 'layers\.\*\.mlp\.experts\.gate_up_proj'
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
namespace st = mp::styles;
using namespace mp::plans;

#ifdef MESHPLAN_FAIL
static_assert(mp::validate<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"ep", 8>>, mp::plan_cat_t<qwen3_moe::ep<>, mp::Plan<mp::Entry<"layers.*.mlp.experts.gate_up_proj", st::moe_experts<"ep">>>>>());
#else
static_assert(mp::validate<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"ep", 8>>, qwen3_moe::ep<>>());
#endif
