// Closed at the bottom of every public header (no include guard): restores what the
// matching public_begin.hpp saved.
#pragma pop_macro("MESHPLAN_PUBLIC_INCLUDE")
