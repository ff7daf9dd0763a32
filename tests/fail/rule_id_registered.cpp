// Rule ids are registered (core/rules.hpp): a message naming an unregistered id does not
// compile. The bad line must fail with the message below; its twin must compile.
// expect-error: unregistered_rule_id
#include "meshplan/core/diagnostic.hpp"

namespace mp = meshplan;

#ifdef MESHPLAN_FAIL
const mp::Message message = mp::Message::rule("axis_know") << "a misspelt id";
#else
const mp::Message message = mp::Message::rule("axis_known") << "a registered id";
#endif
