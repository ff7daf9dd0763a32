#pragma once
// How many simulated ranks this machine can hold. ThreadWorld runs each rank as a thread of
// one process with its own copy of its weights, so a mesh that is fine for the plan explorer
// (dp=60000) can be far too big to simulate. Tools check up front and refuse with a message,
// instead of failing to start threads or running out of memory halfway.
//
//   enforce(mp::comm_rules::simulated_ranks_fit(mesh.to_string(), ranks, bytes, mp::host_capacity()));

#include "meshplan/core/detail/public_begin.hpp"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <string>
#include <string_view>

#if defined(__unix__)
#include <sys/resource.h>
#endif

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"

namespace meshplan {

/// The most ranks one process simulates: beyond that a mesh is a job for real processes
/// (MpiComm under mpirun), whatever the machine.
inline constexpr index_t max_simulated_ranks = 4096;

struct HostCapacity {
  index_t threads = max_simulated_ranks;  // rank threads this process may start
  std::uint64_t memory_bytes = 0;          // memory available to allocate; 0 when unknown
};

namespace detail {
inline std::uint64_t read_number(const char* path) {
  std::ifstream in(path);
  std::uint64_t v = 0;
  return (in >> v) ? v : 0;
}

/// MemAvailable from /proc/meminfo, in bytes (0 where there is no such file).
inline std::uint64_t available_memory() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  std::uint64_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit)
    if (key == "MemAvailable:") return kib * 1024;
  return 0;
}
}  // namespace detail

/// What this machine gives a ThreadWorld now: the thread limits of the system and of the
/// user (each thread also costs two memory maps), and the available memory.
inline HostCapacity host_capacity() {
  HostCapacity c;
  auto limit = [&](std::uint64_t n) {
    if (n > 0) c.threads = static_cast<index_t>(std::min<std::uint64_t>(static_cast<std::uint64_t>(c.threads), n));
  };
  limit(detail::read_number("/proc/sys/kernel/threads-max") / 2);
  limit(detail::read_number("/proc/sys/vm/max_map_count") / 4);
#if defined(__unix__)
  rlimit r{};
  if (getrlimit(RLIMIT_NPROC, &r) == 0 && r.rlim_cur != RLIM_INFINITY) limit(static_cast<std::uint64_t>(r.rlim_cur) / 2);
#endif
  c.memory_bytes = detail::available_memory();
  return c;
}

namespace comm_rules {
/// `ranks` simulated ranks needing `bytes` in all fit the machine.
inline Message simulated_ranks_fit(std::string_view mesh, index_t ranks, double bytes, const HostCapacity& cap) {
  constexpr double gib = 1024.0 * 1024.0 * 1024.0;
  auto tenths = [](double v) { return static_cast<long long>(v * 10 + 0.5); };
  auto print_gib = [&](Message& m, double b) {
    const long long t = tenths(b / gib);
    m << t / 10 << "." << t % 10 << " GiB";
  };
  if (ranks > cap.threads)
    return Message::rule("simulated_ranks_fit")
           << "mesh " << mesh << " has " << ranks << " ranks, but this machine runs at most " << cap.threads
           << " simulated ranks (threads of one process); use a smaller mesh, or real processes under mpirun";
  if (cap.memory_bytes > 0 && bytes > static_cast<double>(cap.memory_bytes)) {
    Message m = Message::rule("simulated_ranks_fit");
    m << "the " << ranks << " simulated ranks of mesh " << mesh << " need about ";
    print_gib(m, bytes);
    m << " for their weights and activations, but ";
    print_gib(m, static_cast<double>(cap.memory_bytes));
    m << " of memory is available; use a smaller mesh or fewer tokens, or real processes under mpirun";
    return m;
  }
  return {};
}
}  // namespace comm_rules

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
