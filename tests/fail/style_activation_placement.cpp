// Rule activation_placement: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[activation_placement\]: prepare_input's input placement is 'Shard<0>'; an activation \(\[batch, sequence, hidden\]\) is placed Replicate, Shard<1>
#include "meshplan/plan/plan.hpp"

namespace mp = meshplan;
namespace st = mp::styles;

#ifdef MESHPLAN_FAIL
using Hook = mp::Entry<"layers.*.mlp", st::prepare_input<"tp", mp::Shard<0>, mp::Replicate>>;
#else
using Hook = mp::Entry<"layers.*.mlp", st::prepare_input<"tp", mp::Shard<1>, mp::Replicate>>;
#endif
constexpr auto spec = Hook::spec;
