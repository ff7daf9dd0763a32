// Rule style_output_placement: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[style_output_placement\]: rowwise's output placement is 'Shard<-1>'; it writes Replicate or Shard\(1\)
#include "meshplan/plan/plan.hpp"

namespace mp = meshplan;
namespace st = mp::styles;

#ifdef MESHPLAN_FAIL
using Down = mp::Entry<"layers.*.mlp.down_proj", st::rowwise<"tp", mp::Shard<-1>>>;
#else
using Down = mp::Entry<"layers.*.mlp.down_proj", st::rowwise<"tp", mp::Shard<1>>>;
#endif
constexpr auto spec = Down::spec;
