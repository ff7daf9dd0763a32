// Rule plan_holds_entries: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[plan_holds_entries\]: Plan argument 1 is 'int', which is not an entry
#include "meshplan/plan/plan.hpp"

namespace mp = meshplan;
namespace st = mp::styles;

#ifdef MESHPLAN_FAIL
using Bad = mp::Plan<mp::Entry<"embed_tokens", st::replicate>, int>;
constexpr auto entries = Bad::entries;
#else
using Good = mp::Plan<mp::Entry<"embed_tokens", st::replicate>>;
constexpr auto entries = Good::entries;
#endif
