// Rule pattern_syntax: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[pattern_syntax\]: plan pattern 'layers\.\*\.\.mlp' is not a dotted path
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
namespace st = mp::styles;
using namespace mp::plans;

#ifdef MESHPLAN_FAIL
static_assert(mp::validate<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"ep", 8>>, mp::plan_cat_t<qwen3_moe::ep<>, mp::Plan<mp::Entry<"layers.*..mlp", st::gather_input<"ep">>>>>());
#else
static_assert(mp::validate<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"ep", 8>>, qwen3_moe::ep<>>());
#endif
