// The Catch2 runner of the CUDA tests (compiled by g++; the tests themselves are .cu).
//
// Tests named "host: ..." (tag [host]) check the host side of the CUDA layer (sizes refused
// before any launch, launch shapes, messages) and run anywhere. The others need a GPU:
// where none is visible, a run that selects any of them exits 77, which CTest reports as
// skipped. Listing the tests needs no GPU.
#define CATCH_CONFIG_RUNNER
#define CATCH_CONFIG_CONSOLE_WIDTH 120
#include <cuda_runtime_api.h>
#include <catch2/catch.hpp>

#include <cstdio>
#include <string>

namespace {
bool gpu_visible() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return n > 0;
}

bool host_only(const Catch::ConfigData& config) {
  if (config.testsOrTags.empty()) return false;
  for (const std::string& spec : config.testsOrTags)
    if (spec != "[host]" && spec.rfind("host:", 0) != 0) return false;
  return true;
}
}  // namespace

int main(int argc, char** argv) {
  Catch::Session session;
  if (int rc = session.applyCommandLine(argc, argv)) return rc;
  const Catch::ConfigData& config = session.configData();
  const bool listing = config.listTests || config.listTestNamesOnly || config.listTags || config.listReporters;
  if (!listing && !host_only(config) && !gpu_visible()) {
    std::puts("no CUDA device: the GPU tests are skipped");
    return 77;
  }
  return session.run();
}
