#pragma once
// A model's weights drawn at random, for demos, tests and benchmarks without a checkpoint:
// every tensor is a function of the seed and its checkpoint name only, so every rank cuts
// its piece from the same whole tensor, whatever the mesh.
//
//   auto source = mp::nn::random_source(/*seed=*/1);
//   auto model = mp::nn::CausalLM<Mesh, Plan>::load(comm, spec, mesh, source);
//
// Values: norm weights 1 + U(-0.1, 0.1) (so they matter), DeepSeek-V3's correction bias
// U(-0.05, 0.05), everything else U(-a, a) with a = sqrt(3) * 0.1 (standard deviation 0.1).

#include "meshplan/core/detail/public_begin.hpp"

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

#include "meshplan/core/tensor.hpp"
#include "meshplan/nn/causal_lm.hpp"
#include "meshplan/placement/detail/slice.hpp"

namespace meshplan::nn {

namespace detail {
/// splitmix64: a small, well-mixed generator; the stream depends on the seed and the name.
inline std::uint64_t mix(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

inline Tensor<float> random_tensor(std::uint64_t seed, std::string_view name, const std::vector<index_t>& shape) {
  std::uint64_t state = mix(seed);
  for (char c : name) state = mix(state ^ static_cast<unsigned char>(c));
  float offset = 0.0f, range = std::sqrt(3.0f) * 0.1f;
  if (name.ends_with("norm.weight")) offset = 1.0f, range = 0.1f;
  if (name.ends_with("e_score_correction_bias")) range = 0.05f;
  Tensor<float> t(shape);
  for (index_t i = 0; i < t.numel(); ++i) {
    state = mix(state);
    const float u = static_cast<float>(state >> 40) * 0x1p-24f;  // [0, 1)
    t[i] = offset + range * (2.0f * u - 1.0f);
  }
  return t;
}
}  // namespace detail

inline ModelSource random_source(std::uint64_t seed) {
  auto piece = [seed](const std::string& name, const LayoutSpec& layout, index_t rank) {
    return local_piece(detail::random_tensor(seed, name, layout.global_extents()), layout, rank);
  };
  return {piece, [piece](const std::string& prefix) {
            auto read = [piece, prefix](std::string_view n, const LayoutSpec& l, index_t r) {
              return piece(prefix + std::string(n), l, r);
            };
            return MoEWeightLoader<float>{read, read};
          }};
}

}  // namespace meshplan::nn

#include "meshplan/core/detail/public_end.hpp"
