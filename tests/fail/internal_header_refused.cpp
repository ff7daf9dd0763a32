// An internal header (under a detail/ folder) refuses a direct include: a user reaches it
// only through the public headers (docs/api.md). The bad line must fail with the message
// below; its twin, which includes the public header that uses it, must compile.
// expect-error: meshplan: this header is internal \(under a detail/ folder\); include <meshplan/meshplan\.hpp> or a public header listed in docs/api\.md
#ifdef MESHPLAN_FAIL
#include "meshplan/cpu/detail/gemm.hpp"
#else
#include "meshplan/cpu/moe_backend.hpp"
#endif
