// Rule dynamic_extents_given: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[dynamic_extents_given\]: the Extents have 1 extent\(s\) given at run time, but 2 were passed
#include "meshplan/placement/extents.hpp"

namespace mp = meshplan;

#ifdef MESHPLAN_FAIL
mp::Extents<mp::dynamic, 4> e{8, 4};
#else
mp::Extents<mp::dynamic, 4> e{8};
#endif
