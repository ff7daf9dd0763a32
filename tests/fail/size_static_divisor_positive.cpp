// Rule static_divisor_positive: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[static_divisor_positive\]: ceil_div by the static size 0; the divisor must be at least 1
#include "meshplan/core/size.hpp"

namespace mp = meshplan;

#ifdef MESHPLAN_FAIL
constexpr auto blocks = mp::ceil_div(mp::C<10>{}, mp::C<0>{});
#else
constexpr auto blocks = mp::ceil_div(mp::C<10>{}, mp::C<4>{});
static_assert(blocks == 3);
#endif
