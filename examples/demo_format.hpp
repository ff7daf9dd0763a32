#pragma once
// Printing helpers shared by the demos.

#include <cstdio>
#include <string>

namespace demo_format {

/// "512 B", "1.50 KiB", "3.25 MiB": bytes for a person.
inline std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB"};
  int u = 0;
  while (bytes >= 1024 && u < 3) bytes /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.2f %s" : "%.0f %s", bytes, units[u]);
  return buf;
}

}  // namespace demo_format
