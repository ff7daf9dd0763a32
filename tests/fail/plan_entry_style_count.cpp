// Rule entry_style_count: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[entry_style_count\]: plan entry 'lm_head' has 0 styles; an entry needs 1 to 4
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
namespace st = mp::styles;
using namespace mp::plans;

#ifdef MESHPLAN_FAIL
using E = mp::Entry<"lm_head">;
static_assert(sizeof(E) > 0);
#else
using E = mp::Entry<"lm_head", st::replicate>;
static_assert(sizeof(E) > 0);
#endif
