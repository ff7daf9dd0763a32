#pragma once
// What the runners (meshplan-moe, meshplan-run) share: the command line read from a table
// of options, the mesh over the axes dp, ep and tp, --threads, the default plan, and
// main()'s error handling with its exit status:
//
//   0   done
//   2   bad input or usage: the broken rule's one-line message (usage errors add the usage)
//   1   any other failure: a message, never an abort
//
// A header of the examples, not of the library: the runners' command lines are theirs.

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <initializer_list>
#include <new>
#include <string>
#include <string_view>
#include <utility>

#include "meshplan/comm/host_capacity.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/cpu/thread_pool.hpp"
#include "meshplan/mesh/mesh_spec.hpp"

namespace meshplan::runner {

[[noreturn]] inline void refuse(const Message& m) { throw RuleViolation(m); }

/// Refused command lines print the usage after the message.
struct UsageError : RuleViolation {
  using RuleViolation::RuleViolation;
};

inline Message options_rule() { return Message::rule("runner_options"); }

/// An option taking a value, and a flag.
struct ValueOption {
  std::string_view name;
  std::string* value;
};
struct FlagOption {
  std::string_view name;
  bool* set;
};

/// Reads argv by the tables; returns whether --help (or -h) was given. An option not in the
/// tables, or one without its value, is a UsageError.
inline bool parse_options(int argc, char** argv, std::initializer_list<ValueOption> values,
                          std::initializer_list<FlagOption> flags = {}) {
  bool help = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help = true;
      continue;
    }
    bool* flag = nullptr;
    for (const FlagOption& f : flags)
      if (f.name == arg) flag = f.set;
    if (flag) {
      *flag = true;
      continue;
    }
    std::string* field = nullptr;
    for (const ValueOption& v : values)
      if (v.name == arg) field = v.value;
    if (!field) throw UsageError(options_rule() << "unknown option '" << arg << "'");
    if (i + 1 >= argc) throw UsageError(options_rule() << arg << " needs a value");
    *field = argv[++i];
  }
  return help;
}

/// Refuses the first of the options that was not given.
inline void require(std::initializer_list<ValueOption> options) {
  for (const ValueOption& o : options)
    if (o.value->empty()) throw UsageError(options_rule() << o.name << " is required");
}

/// A whole number from `min` to `max` given to `option`, or a UsageError naming the range.
inline long long count_option(std::string_view option, const std::string& text, long long min, long long max) {
  char* end = nullptr;
  const long long n = text.empty() ? -1 : std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || n < min || n > max)
    throw UsageError(options_rule() << option << " needs a count from " << min << " to " << max << ", not '" << text
                                    << "'");
  return n;
}

/// --threads, or the hardware threads divided by the ranks on this machine.
inline int threads_per_rank(const std::string& text, index_t ranks) {
  if (text.empty()) return cpu::default_threads(ranks);
  return static_cast<int>(count_option("--threads", text, 1, 1024));
}

/// The mesh of --mesh: axes dp, ep and tp only. `simulated`: its ranks are threads of this
/// process, so a mesh this machine cannot run is refused before any plan is lowered for it.
inline MeshSpec runner_mesh(const std::string& text, bool simulated) {
  const MeshSpec spec = MeshSpec::parse(text);
  for (std::size_t a = 0; a < spec.ndim(); ++a)
    if (spec.axis_name(a) != "dp" && spec.axis_name(a) != "ep" && spec.axis_name(a) != "tp")
      refuse(options_rule() << "the mesh's axes are dp, ep and tp; '" << spec.axis_name(a)
                            << "' is not one of them");
  if (simulated) enforce(comm_rules::simulated_ranks_fit(spec.to_string(), spec.size(), 0, host_capacity()));
  return spec;
}

/// An axis's size, 1 for an axis the mesh does not name.
inline index_t axis_size(const MeshSpec& spec, std::string_view axis) {
  return spec.has_axis(axis) ? spec.size(axis) : index_t{1};
}

/// The plan when --plan is not given: ep on a mesh without tp (tp for a model without
/// experts), tp on a mesh without ep, else ep_sp.
inline std::string default_plan(const MeshSpec& spec, bool has_experts) {
  if (!has_experts) return "tp";
  return axis_size(spec, "tp") == 1 ? "ep" : axis_size(spec, "ep") == 1 ? "tp" : "ep_sp";
}

/// How a runner reports a failure.
struct ErrorReport {
  const char* program;   // "meshplan-moe"
  const char* usage;     // printed after a UsageError
  const char* oom_hint;  // "use a smaller mesh or fewer tokens"
  /// Whether this process prints the failure (under mpirun, one rank speaks for all); and
  /// what goes before the message ("rank 3: ").
  std::function<bool(const std::exception&)> prints = [](const std::exception&) { return true; };
  std::string prefix = {};
};

/// Runs body() and turns what it throws into a message and an exit status.
template <class Body>
int guarded_main(const ErrorReport& r, Body&& body) {
  auto say = [&](const std::exception& e, const char* text) {
    if (!r.prints(e)) return;
    std::fprintf(stderr, "%s%s\n", r.prefix.c_str(), text);
    std::fflush(stderr);
  };
  try {
    return body();
  } catch (const UsageError& e) {
    if (r.prints(e)) std::fprintf(stderr, "%s%s\n\n%s", r.prefix.c_str(), e.what(), r.usage);
    return 2;
  } catch (const RuleViolation& e) {
    say(e, e.what());
    return 2;
  } catch (const std::bad_alloc& e) {
    say(e, (std::string(r.program) + ": out of memory; " + r.oom_hint).c_str());
    return 1;
  } catch (const std::exception& e) {
    say(e, (std::string(r.program) + ": " + e.what()).c_str());
    return 1;
  } catch (...) {
    std::fprintf(stderr, "%s%s: failed with an unknown exception\n", r.prefix.c_str(), r.program);
    return 1;
  }
}

}  // namespace meshplan::runner
