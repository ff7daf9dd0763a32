// Rule split_factor_positive: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[split_factor_positive\]: StridedShard has split factor 0; it needs a split factor of at least 1
#include "meshplan/placement/placement.hpp"

namespace mp = meshplan;

#ifdef MESHPLAN_FAIL
mp::StridedShard<0, 0> bad;
#else
mp::StridedShard<0, 2> good;
#endif
