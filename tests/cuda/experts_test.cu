// The fused expert kernels (FusedExperts: mma.sync, and wgmma where the device runs it)
// against the CPU expert MLP (cpu/experts.hpp) and the cuBLAS per-expert loop
// (CublasExperts), at the tiny shapes of the three families and at odd ones (H and I not
// multiples of the tile, H not a multiple of 8: the element-load path), with uniform, skewed (one expert takes every row) and idle-expert loads, 0 to 1000
// rows. Tolerance against the CPU and cuBLAS: 2^-6 of the output's largest magnitude, as in
// the other bf16 comparisons: the activation is stored in bf16 on both sides, and an fp32
// sum in another order may round it the other way (2^-8 relative) before the down
// projection. Bit for bit: the permutation read in place against materialized rows, and a
// row's result wherever it sits (its expert alone, or behind rows of another expert) — what
// expert parallelism's exactness rests on.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "cuda_support.hpp"
#include "meshplan/cpu/experts.hpp"
#include "meshplan/cpu/permute.hpp"
#include "meshplan/cuda/core/device_types.cuh"
#include "meshplan/cuda/experts/cublas_experts.cuh"
#include "meshplan/cuda/experts/fused_experts.cuh"

namespace mp = meshplan;
using mp::index_t;
using bf16 = __nv_bfloat16;
using namespace cuda_support;

namespace {

enum class Load { uniform, skewed, idle };

struct Shape {
  index_t hidden, inter, experts;
};

mp::Tensor<mp::bfloat16> random_tensor(std::vector<index_t> shape, float scale, std::uint32_t seed) {
  mp::Tensor<mp::bfloat16> t(std::move(shape));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  for (auto& v : t.vector()) v = mp::bfloat16(u(rng));
  return t;
}

std::vector<index_t> expert_counts(index_t rows, index_t experts, Load load, std::uint32_t seed) {
  std::vector<index_t> counts(static_cast<std::size_t>(experts), 0);
  std::mt19937 rng(seed);
  for (index_t r = 0; r < rows; ++r) {
    index_t e = static_cast<index_t>(rng() % static_cast<std::uint32_t>(experts));
    if (load == Load::skewed) e = experts - 1;
    if (load == Load::idle) e = e / 2;  // the upper half never chosen
    ++counts[static_cast<std::size_t>(e)];
  }
  return counts;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, static_cast<double>(std::abs(x)));
  return m;
}

template <class A>
double max_diff(const std::vector<A>& a, const std::vector<float>& b) {
  double m = 0;
  for (std::size_t i = 0; i < b.size(); ++i) m = std::max(m, std::abs(static_cast<double>(mp::to_float(a[i])) - b[i]));
  return m;
}

/// The fused paths this device runs: mma.sync, and wgmma where it can.
std::vector<mp::cuda::ExpertPath> fused_paths() {
  std::vector<mp::cuda::ExpertPath> paths{mp::cuda::ExpertPath::mma_sync};
  if (mp::cuda::wgmma_built()) paths.push_back(mp::cuda::ExpertPath::wgmma);
  return paths;
}

void check_shape(Shape s, index_t tokens, index_t top_k, Load load, mp::cuda::ExpertPath path) {
  const index_t H = s.hidden, I = s.inter, E = s.experts, pairs = tokens * top_k;
  INFO(mp::cuda::to_string(path) << ": hidden " << H << ", inter " << I << ", " << E << " experts, " << tokens
                                 << " tokens, top-" << top_k << ", load " << static_cast<int>(load));
  const auto x = random_tensor({tokens, H}, 1.0f, static_cast<std::uint32_t>(H + tokens));
  const auto gate_up = random_tensor({E, 2 * I, H}, 1.0f / std::sqrt(static_cast<float>(H)), 5);
  const auto down = random_tensor({E, H, I}, 1.0f / std::sqrt(static_cast<float>(I)), 6);

  // A permutation of the pairs grouped by expert (what sort_by_expert gives).
  const auto counts = expert_counts(pairs, E, load, static_cast<std::uint32_t>(pairs + E));
  std::vector<index_t> offsets(static_cast<std::size_t>(E + 1), 0);
  for (index_t e = 0; e < E; ++e) offsets[e + 1] = offsets[e] + counts[e];
  std::vector<index_t> order(static_cast<std::size_t>(pairs));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(7));
  std::vector<index_t> token_of(order.size());
  for (std::size_t i = 0; i < order.size(); ++i) token_of[i] = order[i] / top_k;

  // The CPU: rows gathered, then the grouped MLP.
  std::vector<mp::bfloat16> rows(static_cast<std::size_t>(pairs * H));
  mp::cpu::gather_rows<mp::bfloat16>(x.span(), token_of, H, rows);
  std::vector<float> expected(static_cast<std::size_t>(pairs * H));
  mp::cpu::grouped_expert_mlp<mp::bfloat16>(rows, offsets, gate_up, down, expected);
  const double tolerance = 1.6e-2 * std::max(max_abs(expected), 1e-30);

  auto d_x = upload(x.vector());
  auto d_rows = upload(rows);
  auto d_gate_up = upload(gate_up.vector());
  auto d_down = upload(down.vector());
  auto d_order = upload(std::vector<std::int32_t>(order.begin(), order.end()));
  auto cast = [](const auto& b) { return reinterpret_cast<const bf16*>(b.data()); };

  mp::cuda::FusedExperts fused(path);
  mp::cuda::DeviceBuffer<float> y_gather(expected.size()), y_rows(expected.size());
  mp::cuda::DeviceBuffer<bf16> y16(expected.size());
  fused.grouped(cast(d_x), d_order.data(), top_k, offsets, cast(d_gate_up), cast(d_down), H, I, y_gather.data(),
                nullptr);
  fused.grouped(cast(d_rows), nullptr, 1, offsets, cast(d_gate_up), cast(d_down), H, I, y_rows.data(), nullptr);
  fused.grouped(cast(d_rows), nullptr, 1, offsets, cast(d_gate_up), cast(d_down), H, I, y16.data(), nullptr);
  const auto got = download(y_gather);
  CHECK(max_diff(got, expected) <= tolerance);
  CHECK(same_bits(download(y_rows), got));  // the permutation read in place = materialized rows
  std::vector<float> got16;
  for (bf16 v : download(y16)) got16.push_back(__bfloat162float(v));
  std::vector<float> rounded;
  for (float v : got) rounded.push_back(mp::to_float(mp::bfloat16(v)));
  CHECK(got16 == rounded);  // bf16 outputs are the fp32 ones rounded once

  // The cuBLAS per-expert loop agrees within the same tolerance.
  mp::cuda::CublasExperts cublas;
  mp::cuda::DeviceBuffer<float> y_cublas(expected.size());
  cublas.grouped(cast(d_rows), offsets, cast(d_gate_up), cast(d_down), H, I, y_cublas.data(), nullptr);
  CHECK(max_diff(download(y_cublas), expected) <= tolerance);

  // A row's bits do not depend on where it sits: the busiest expert's rows behind 5 other
  // rows of the same expert (every row moves to another place in its tile and in the mma
  // fragments, as under expert parallelism, where an expert's rows arrive from several
  // ranks), and behind 3 rows of another expert (another row tile start).
  const auto busiest = static_cast<index_t>(std::max_element(counts.begin(), counts.end()) - counts.begin());
  const index_t n = counts[static_cast<std::size_t>(busiest)], first = offsets[static_cast<std::size_t>(busiest)];
  if (n == 0) return;
  auto weights_of = [&](const std::vector<index_t>& experts) {
    std::vector<mp::bfloat16> gu, dn;
    for (index_t e : experts) {
      gu.insert(gu.end(), gate_up.data() + e * 2 * I * H, gate_up.data() + (e + 1) * 2 * I * H);
      dn.insert(dn.end(), down.data() + e * H * I, down.data() + (e + 1) * H * I);
    }
    return std::pair{upload(gu), upload(dn)};
  };
  auto moved_outputs = [&](index_t lead, const std::vector<index_t>& local_offsets, const auto& weights) {
    std::vector<mp::bfloat16> shifted(static_cast<std::size_t>((lead + n) * H));
    for (index_t r = 0; r < lead; ++r)  // any rows will do: the grouped rows, round and round
      std::copy_n(rows.begin() + (r % pairs) * H, H, shifted.begin() + r * H);
    std::copy_n(rows.begin() + first * H, n * H, shifted.begin() + lead * H);
    auto d_shifted = upload(shifted);
    mp::cuda::DeviceBuffer<float> y(shifted.size());
    fused.grouped(cast(d_shifted), nullptr, 1, local_offsets, cast(weights.first), cast(weights.second), H, I, y.data(),
                  nullptr);
    const auto all = download(y);
    return std::vector<float>(all.begin() + lead * H, all.end());
  };
  const std::vector<float> mine(got.begin() + first * H, got.begin() + (first + n) * H);
  CHECK(same_bits(moved_outputs(5, {0, 5 + n}, weights_of({busiest})), mine));
  if (E > 1) CHECK(same_bits(moved_outputs(3, {0, 3, 3 + n}, weights_of({(busiest + 1) % E, busiest})), mine));
}

}  // namespace

TEST_CASE("The fused experts compute the CPU's expert MLP, at family and odd shapes, for every load", "[experts]") {
  const Shape shapes[] = {
      {64, 32, 16},  // tiny Qwen3-MoE and DeepSeek-V3
      {64, 64, 8},   // tiny Mixtral
      {72, 40, 5},   // H and I not multiples of the tiles (multiples of 8: the cp.async path)
      {100, 50, 3},  // H not a multiple of 8: the element-load path
      {8, 8, 2},     // smaller than every tile
      {7, 3, 1},     // odd everywhere, one expert
  };
  for (mp::cuda::ExpertPath path : fused_paths()) {
    for (const Shape& s : shapes)
      for (index_t tokens : {0, 1, 7, 300})
        for (Load load : {Load::uniform, Load::skewed, Load::idle}) check_shape(s, tokens, 2, load, path);
    // Many rows per expert: the large tiles; K over several stages of every path.
    check_shape({128, 96, 4}, 1000, 2, Load::uniform, path);
    check_shape({128, 96, 4}, 1000, 8, Load::skewed, path);
    check_shape({320, 200, 3}, 700, 2, Load::uniform, path);
    check_shape({300, 260, 2}, 200, 2, Load::uniform, path);  // element loads over more k stages than in flight
  }
}

#ifdef MESHPLAN_EXPECT_WGMMA
TEST_CASE("On an sm_90 device this build runs the wgmma kernels", "[experts]") {
  // The build holds sm_90a code (CMAKE_CUDA_ARCHITECTURES 90a): an H100 or H200 must get it.
  if (mp::cuda::current_sm() != 90) return;
  CHECK(mp::cuda::wgmma_built());
  CHECK(mp::cuda::device_expert_path(true) == mp::cuda::ExpertPath::wgmma);
}
#endif

TEST_CASE("The fused dense MLP (shared experts) computes the CPU's", "[experts]") {
  for (index_t tokens : {1, 33, 500}) {
    const index_t H = 64, I = 48;
    const auto x = random_tensor({tokens, H}, 1.0f, 11);
    const auto gate = random_tensor({I, H}, 0.125f, 12), up = random_tensor({I, H}, 0.125f, 13);
    const auto down = random_tensor({H, I}, 0.15f, 14);
    std::vector<float> expected(static_cast<std::size_t>(tokens * H));
    mp::cpu::dense_mlp(x, gate, up, down, expected);
    auto d_x = upload(x.vector());
    auto d_gate = upload(gate.vector()), d_up = upload(up.vector()), d_down = upload(down.vector());
    auto cast = [](const auto& b) { return reinterpret_cast<const bf16*>(b.data()); };
    for (mp::cuda::ExpertPath path : fused_paths()) {
      INFO(mp::cuda::to_string(path) << ", " << tokens << " tokens");
      mp::cuda::FusedExperts fused(path);
      mp::cuda::DeviceBuffer<float> y(expected.size());
      fused.dense(cast(d_x), tokens, cast(d_gate), cast(d_up), cast(d_down), H, I, y.data(), nullptr);
      CHECK(max_diff(download(y), expected) <= 1.6e-2 * max_abs(expected));
    }
  }
}
