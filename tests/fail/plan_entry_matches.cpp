// Rule entry_matches: the bad line must fail with the message below; its twin must compile.
// Qwen3-MoE's plan on Mixtral: Mixtral has no per-head q/k norms.
// expect-error: meshplan \[entry_matches\]: plan entry 'layers\.\*\.self_attn\.q_norm' matches no parameter of this model
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
namespace st = mp::styles;
using namespace mp::plans;

#ifdef MESHPLAN_FAIL
static_assert(mp::validate<mp::models::TinyMixtral, mp::DeviceMesh<mp::Axis<"ep", 8>>, qwen3_moe::ep<>>());
#else
static_assert(mp::validate<mp::models::TinyMixtral, mp::DeviceMesh<mp::Axis<"ep", 8>>, mixtral::ep<>>());
#endif
