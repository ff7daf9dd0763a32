// Compares a tensor of one safetensors file with a tensor of another, for tests of tools.
//
//   safetensors_compare A.safetensors name_a B.safetensors name_b rtol [rows-as-sets]
//
// Floating tensors: passes when max |a - b| <= rtol * max |b|. With rows-as-sets, each row
// (the last dim) is compared as a set of integers (expert ids in any order). Exit status 0
// when they agree, 1 when not (with what differs), 2 on bad files.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "meshplan/io/safetensors_file.hpp"

namespace mp = meshplan;

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: safetensors_compare A name_a B name_b rtol [rows-as-sets]\n");
    return 2;
  }
  try {
    const mp::SafetensorsFile a(argv[1]), b(argv[3]);
    const double rtol = std::atof(argv[5]);
    const bool sets = argc > 6 && std::string(argv[6]) == "rows-as-sets";
    const auto& ia = a.info(argv[2]);
    const auto& ib = b.info(argv[4]);
    if (ia.shape != ib.shape) {
      std::printf("shapes differ\n");
      return 1;
    }
    if (sets) {
      auto x = a.read<mp::index_t>(argv[2]), y = b.read<mp::index_t>(argv[4]);
      const mp::index_t width = ia.shape.empty() ? 1 : ia.shape.back();
      for (mp::index_t r = 0; r * width < x.numel(); ++r) {
        std::vector<mp::index_t> u(x.data() + r * width, x.data() + (r + 1) * width),
            v(y.data() + r * width, y.data() + (r + 1) * width);
        std::sort(u.begin(), u.end());
        std::sort(v.begin(), v.end());
        if (u != v) {
          std::printf("row %lld differs\n", static_cast<long long>(r));
          return 1;
        }
      }
      std::printf("%s == %s (as sets per row)\n", argv[2], argv[4]);
      return 0;
    }
    auto x = a.read<float>(argv[2]), y = b.read<float>(argv[4]);
    double diff = 0, scale = 0;
    for (mp::index_t i = 0; i < x.numel(); ++i) {
      diff = std::max(diff, static_cast<double>(std::abs(x[i] - y[i])));
      scale = std::max(scale, static_cast<double>(std::abs(y[i])));
    }
    std::printf("%s vs %s: max |difference| %.3g, %.3g relative (allowed %.3g)\n", argv[2], argv[4], diff,
                scale > 0 ? diff / scale : 0.0, rtol);
    return diff <= rtol * scale ? 0 : 1;
  } catch (const mp::RuleViolation& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
}
