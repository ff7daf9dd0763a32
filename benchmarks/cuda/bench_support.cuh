#pragma once
// What the CUDA benchmarks share: CUDA-event timing (the median of runs after warm-ups),
// their two options, and the JSON document they write (device, date, results).

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "meshplan/cuda/core/error.cuh"

namespace bench {

/// Median milliseconds of `runs` calls of `f` on `stream`, after `warmup` calls; each call
/// is timed alone. `before(i)`, if given, runs before every call (warm-ups included),
/// outside the timing: an L2 flush, say.
inline double median_ms(const std::function<void()>& f, cudaStream_t stream, int warmup, int runs,
                        const std::function<void(int)>& before = {}) {
  cudaEvent_t start, stop;
  MESHPLAN_CUDA_CHECK(cudaEventCreate(&start));
  MESHPLAN_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> ms;
  for (int i = 0; i < warmup + runs; ++i) {
    if (before) before(i);
    MESHPLAN_CUDA_CHECK(cudaEventRecord(start, stream));
    f();
    MESHPLAN_CUDA_CHECK(cudaEventRecord(stop, stream));
    MESHPLAN_CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0;
    MESHPLAN_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    if (i >= warmup) ms.push_back(t);
  }
  MESHPLAN_CUDA_CHECK(cudaEventDestroy(start));
  MESHPLAN_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

struct Options {
  bool quick = false;    // the smallest token count only
  std::string out_path;  // the JSON file; stdout when empty
};

/// --quick and --out FILE; exits with status 2 on anything else, 77 without a GPU.
inline Options parse(int argc, char** argv, const char* name) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick")
      o.quick = true;
    else if (a == "--out" && i + 1 < argc)
      o.out_path = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--quick] [--out results.json]\n", name);
      std::exit(2);
    }
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "%s: no CUDA device\n", name);
    std::exit(77);
  }
  return o;
}

/// Writes {benchmark, device, date, results} where the options say.
inline void write(const Options& o, const char* benchmark, const nlohmann::json& results) {
  cudaDeviceProp prop{};
  MESHPLAN_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  const nlohmann::json doc = {{"benchmark", benchmark}, {"device", prop.name}, {"date", date}, {"results", results}};
  if (o.out_path.empty())
    std::cout << doc.dump(2) << "\n";
  else
    std::ofstream(o.out_path) << doc.dump(2) << "\n";
}

}  // namespace bench
