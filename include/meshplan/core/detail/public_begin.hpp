// Opened at the top of every public header (no include guard: it runs each time): from here
// to the matching public_end.hpp, internal headers may be included. push_macro keeps the
// state of an enclosing public header, so nesting works.
#pragma push_macro("MESHPLAN_PUBLIC_INCLUDE")
#undef MESHPLAN_PUBLIC_INCLUDE
#define MESHPLAN_PUBLIC_INCLUDE 1
