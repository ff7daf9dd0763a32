#pragma once
// Checks for the tests that run as processes under mpirun (no test framework: a framework
// aborting a test on one rank would leave the others waiting in a collective). Every
// process counts its own failures; the program sums them over all ranks at the end.

#include <cstdio>
#include <string>

#include "meshplan/core/diagnostic.hpp"

namespace rank_checks {

inline int failures = 0;
inline int rank = 0;

inline void expect(bool ok, const std::string& what) {
  if (ok) return;
  ++failures;
  std::fprintf(stderr, "rank %d: FAILED: %s\n", rank, what.c_str());
}

/// f() must throw RuleViolation for `rule` (or, on the other ranks, the peer-error rules).
template <class F>
void expect_throws(F&& f, const std::string& rule, const std::string& what) {
  try {
    f();
    expect(false, what + ": no exception");
  } catch (const meshplan::RuleViolation& e) {
    expect(e.rule() == rule || e.rule() == "collective_peer_error" || e.rule() == "peer_input_error",
           what + ": unexpected rule " + e.rule() + " (" + e.what() + ")");
  }
}

}  // namespace rank_checks
