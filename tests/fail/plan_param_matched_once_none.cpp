// Rule param_matched_once: the bad line must fail with the message below; its twin must compile.
// Mixtral's plan on Qwen3-MoE leaves its q/k norms unplaced.
// expect-error: meshplan \[param_matched_once\]: parameter 'layers\.\*\.self_attn\.q_norm\.weight' is matched by no plan entry
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
namespace st = mp::styles;
using namespace mp::plans;

#ifdef MESHPLAN_FAIL
static_assert(mp::validate<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"ep", 8>>, mixtral::ep<>>());
#else
static_assert(mp::validate<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"ep", 8>>, qwen3_moe::ep<>>());
#endif
