// Included first by every header under a detail/ folder, and deliberately without an include
// guard: it checks each time. An internal header may be reached only through a public one
// (which opens the way with public_begin.hpp and closes it with public_end.hpp), so a user
// who includes one directly gets this one error instead of depending on a file that may
// change. meshplan's own tests and benchmarks, which test the internals, define
// MESHPLAN_INTERNAL_HEADERS. The public headers are listed in docs/api.md.
#if !defined(MESHPLAN_PUBLIC_INCLUDE) && !defined(MESHPLAN_INTERNAL_HEADERS) && \
    !defined(MESHPLAN_INTERNAL_HEADER_REFUSED)
#define MESHPLAN_INTERNAL_HEADER_REFUSED  // one error, not one per internal header it reaches
#error "meshplan: this header is internal (under a detail/ folder); include <meshplan/meshplan.hpp> or a public header listed in docs/api.md"
#endif
