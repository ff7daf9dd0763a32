#pragma once
// Which instruction set the CPU kernels (cpu/detail/gemm.hpp, cpu/detail/fast_math.hpp) use.
//
// Every path gives the same bits: they differ only in how many output columns advance
// together, never in the order of the operations on one output. The choice is made at run
// time so that one binary, built for baseline x86-64 (no -march), uses AVX-512 where the
// CPU has it. MESHPLAN_CPU_ISA=portable|avx2|avx512 forces a path (to compare them, or to
// measure one); forcing a path this CPU cannot run is an error rather than a silent
// fallback, so that a measurement never reports a path it did not take.

#include "meshplan/core/detail/public_begin.hpp"

#include <cstdlib>
#include <string_view>
#include <vector>

#include "meshplan/core/diagnostic.hpp"

namespace meshplan::cpu {

enum class Isa { portable, avx2, avx512 };

constexpr std::string_view to_string(Isa isa) noexcept {
  switch (isa) {
    case Isa::portable:
      return "portable";
    case Isa::avx2:
      return "avx2";
    case Isa::avx512:
      return "avx512";
  }
  return "unknown";
}

/// Whether this CPU can run `isa`: exactly the extensions the kernels' target attributes name.
inline bool isa_runnable(Isa isa) noexcept {
  switch (isa) {
    case Isa::portable:
      return true;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    case Isa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma");
#else
    case Isa::avx2:
    case Isa::avx512:
      return false;
#endif
  }
  return false;
}

/// The fastest path this CPU runs.
inline Isa best_isa() noexcept {
  if (isa_runnable(Isa::avx512)) return Isa::avx512;
  if (isa_runnable(Isa::avx2)) return Isa::avx2;
  return Isa::portable;
}

/// Every path this CPU runs, portable first (for tests that compare them).
inline std::vector<Isa> runnable_isas() {
  std::vector<Isa> isas;
  for (Isa isa : {Isa::portable, Isa::avx2, Isa::avx512})
    if (isa_runnable(isa)) isas.push_back(isa);
  return isas;
}

/// The path named `name`; throws cpu_isa for an unknown name or one this CPU cannot run.
inline Isa parse_isa(std::string_view name) {
  for (Isa isa : {Isa::portable, Isa::avx2, Isa::avx512}) {
    if (name != to_string(isa)) continue;
    if (!isa_runnable(isa))
      throw RuleViolation(Message::rule("cpu_isa")
                          << "MESHPLAN_CPU_ISA=" << name << " asks for a path this CPU cannot run; it runs "
                          << to_string(best_isa()) << " at best");
    return isa;
  }
  throw RuleViolation(Message::rule("cpu_isa")
                      << "MESHPLAN_CPU_ISA='" << name << "' is not a path; use portable, avx2 or avx512");
}

/// MESHPLAN_CPU_ISA if set (and not empty), else best_isa(). Reads the environment on every call.
inline Isa isa_from_environment() {
  const char* forced = std::getenv("MESHPLAN_CPU_ISA");
  if (forced == nullptr || *forced == '\0') return best_isa();
  return parse_isa(forced);
}

/// The path the kernels take by default: isa_from_environment(), read once per process.
/// A bad MESHPLAN_CPU_ISA throws on every call (a throwing initializer is retried).
inline Isa active_isa() {
  static const Isa isa = isa_from_environment();
  return isa;
}

}  // namespace meshplan::cpu

#include "meshplan/core/detail/public_end.hpp"
