// Rule extent_nonnegative: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[extent_nonnegative\]: tensor dim 1 has extent -3; extents must be 0 or more
#include "meshplan/placement/extents.hpp"

namespace mp = meshplan;

#ifdef MESHPLAN_FAIL
mp::Extents<4, -3> e;
#else
mp::Extents<4, 0> e;
#endif
