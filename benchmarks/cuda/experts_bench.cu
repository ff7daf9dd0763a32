// The fused expert kernels against their cuBLAS baselines, measured in the same process on
// the same data:
//   dense     one cuBLAS GEMM pair of the same FLOPs (all rows through one expert's
//             shapes: [rows, H] x [H, 2I], then [rows, I] x [I, H]) — the ceiling
//   per-expert the cuBLAS loop (CublasExperts(0): one GEMM pair per expert, exact rows)
//   fused     FusedExperts on materialized rows, and reading the tokens through the
//             permutation (+perm); each fused path the device runs (wgmma on sm_90,
//             mma.sync)
//
//   experts_bench [--quick] [--out results.json]
//
// Shapes: Qwen3-30B-A3B (H 2048, I 768, E 128, k 8), Mixtral-8x7B (H 4096, I 14336, E 8,
// k 2), DeepSeek-V3 (H 7168, I 2048, E 256, k 8); 4096, 16384 and 65536 tokens; uniform
// routing and a skewed one (expert e drawn with weight 1 / (e + 1)). bf16, outputs bf16.
// Median of 10 runs after 2 warm-ups; TFLOP/s = 2 * rows * 3 * H * I / time. Each record
// also names the fused kernels' tile class (large or small, from the load) and, for
// wgmma, its pipeline stages and shared memory per block, so that a measurement says
// which pipeline it measured.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_support.cuh"
#include "meshplan/cuda/core/buffer.cuh"
#include "meshplan/cuda/experts/cublas_experts.cuh"
#include "meshplan/cuda/experts/fused_experts.cuh"
#include "meshplan/cuda/permute/device_permute.cuh"

namespace mp = meshplan;
using mp::index_t;
using bf16 = __nv_bfloat16;

namespace {

double median_ms(const std::function<void()>& f, cudaStream_t stream) { return bench::median_ms(f, stream, 2, 10); }

struct Shape {
  const char* model;
  index_t hidden, inter, experts, top_k;
};

/// Random bf16 values in [-scale, scale] filled on the device (no host round trip).
__global__ void fill(bf16* p, long long n, float scale, unsigned seed) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    unsigned h = static_cast<unsigned>(i) * 2654435761u ^ seed;
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    h ^= h >> 15;
    p[i] = __float2bfloat16_rn(scale * (static_cast<float>(h & 0xffff) / 32768.0f - 1.0f));
  }
}

mp::cuda::DeviceBuffer<bf16> random_buffer(std::size_t n, float scale, unsigned seed, cudaStream_t s) {
  mp::cuda::DeviceBuffer<bf16> b(n);
  fill<<<1024, 256, 0, s>>>(b.data(), static_cast<long long>(n), scale, seed);
  MESHPLAN_CUDA_CHECK(cudaGetLastError());
  return b;
}

void run_case(const Shape& shape, index_t tokens, bool skewed, cudaStream_t s, nlohmann::json& out) {
  const index_t H = shape.hidden, I = shape.inter, E = shape.experts, k = shape.top_k, rows = tokens * k;
  // The routing: expert counts, and a permutation of the pairs grouped by expert.
  std::mt19937 rng(static_cast<unsigned>(tokens + E));
  std::vector<double> weight(static_cast<std::size_t>(E));
  for (index_t e = 0; e < E; ++e) weight[static_cast<std::size_t>(e)] = skewed ? 1.0 / static_cast<double>(e + 1) : 1.0;
  std::discrete_distribution<index_t> pick(weight.begin(), weight.end());
  std::vector<index_t> counts(static_cast<std::size_t>(E), 0);
  for (index_t r = 0; r < rows; ++r) ++counts[static_cast<std::size_t>(pick(rng))];
  std::vector<index_t> offsets(static_cast<std::size_t>(E + 1), 0);
  for (index_t e = 0; e < E; ++e) offsets[e + 1] = offsets[e] + counts[e];
  std::vector<std::int32_t> order(static_cast<std::size_t>(rows));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  mp::cuda::DeviceBuffer<std::int32_t> d_order;
  d_order.upload(order, s);

  auto x = random_buffer(static_cast<std::size_t>(tokens * H), 1.0f, 1, s);
  auto grouped = random_buffer(static_cast<std::size_t>(rows * H), 1.0f, 2, s);
  auto gate_up = random_buffer(static_cast<std::size_t>(E * 2 * I * H), 0.02f, 3, s);
  auto down = random_buffer(static_cast<std::size_t>(E * H * I), 0.02f, 4, s);
  mp::cuda::DeviceBuffer<bf16> y(static_cast<std::size_t>(rows * H));

  const double flops = 2.0 * static_cast<double>(rows) * 3.0 * static_cast<double>(H) * static_cast<double>(I);
  const bool large = mp::cuda::large_tiles(offsets);
  auto record = [&](const char* what, double ms, double dense_ms, nlohmann::json extra = nlohmann::json::object()) {
    const double tflops = flops / (ms * 1e-3) / 1e12;
    const double dense = flops / (dense_ms * 1e-3) / 1e12;
    std::fprintf(stderr, "%-14s %-19s tokens %6lld %-7s %9.3f ms %7.1f TFLOP/s  (%5.1f%% of dense)\n", shape.model,
                 what, static_cast<long long>(tokens), skewed ? "skewed" : "uniform", ms, tflops,
                 100.0 * tflops / dense);
    out.push_back({{"model", shape.model},
                   {"kernel", what},
                   {"tokens", tokens},
                   {"routing", skewed ? "skewed" : "uniform"},
                   {"hidden", H},
                   {"inter", I},
                   {"experts", E},
                   {"top_k", k},
                   {"ms", ms},
                   {"tflops", tflops},
                   {"dense_tflops", dense},
                   {"ratio_to_dense", tflops / dense},
                   {"tile_class", large ? "large" : "small"}});
    out.back().update(extra);
  };

  // Dense: the same FLOPs as two plain cuBLAS GEMMs through one expert's weights, bf16 out
  // (the ceiling; no activation, no grouping).
  mp::cuda::CublasHandle handle;
  MESHPLAN_CUBLAS_CHECK(cublasSetStream(handle.get(), s));
  mp::cuda::DeviceBuffer<bf16> h(static_cast<std::size_t>(rows * 2 * I));
  auto gemm = [&](const bf16* a, index_t m, const bf16* w, index_t n, index_t kk, bf16* c) {
    const float one = 1.0f, zero = 0.0f;
    MESHPLAN_CUBLAS_CHECK(cublasGemmEx(handle.get(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                                       static_cast<int>(kk), &one, w, CUDA_R_16BF, static_cast<int>(kk), a, CUDA_R_16BF,
                                       static_cast<int>(kk), &zero, c, CUDA_R_16BF, static_cast<int>(n),
                                       CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  };
  const double dense_ms = median_ms(
      [&] {
        gemm(grouped.data(), rows, gate_up.data(), 2 * I, H, h.data());
        gemm(h.data(), rows, down.data(), H, I, y.data());  // h's first rows * I values stand in for the activation
      },
      s);
  record("dense", dense_ms, dense_ms);

  mp::cuda::CublasExperts loop(0);
  record("per-expert",
         median_ms([&] { loop.grouped(grouped.data(), offsets, gate_up.data(), down.data(), H, I, y.data(), s); }, s),
         dense_ms);

  // Every fused path the device runs: wgmma (sm_90) and mma.sync.
  std::vector<mp::cuda::ExpertPath> paths{mp::cuda::ExpertPath::mma_sync};
  if (mp::cuda::wgmma_built()) paths.insert(paths.begin(), mp::cuda::ExpertPath::wgmma);
  for (mp::cuda::ExpertPath path : paths) {
    mp::cuda::FusedExperts fused(path);
    const std::string name = std::string("fused-") + mp::cuda::to_string(path);
    nlohmann::json pipeline = nlohmann::json::object();
    if (path == mp::cuda::ExpertPath::wgmma) {
      using P = mp::cuda::WgmmaPolicies;
      pipeline = {{"stages", large ? P::large::stages : P::small::stages},
                  {"shared_bytes", large ? P::large::shared_bytes : P::small::shared_bytes}};
    }
    record(name.c_str(), median_ms([&] {
             fused.grouped(grouped.data(), nullptr, 1, offsets, gate_up.data(), down.data(), H, I, y.data(), s);
           }, s),
           dense_ms, pipeline);
    record((name + "+perm").c_str(), median_ms([&] {
             fused.grouped(x.data(), d_order.data(), k, offsets, gate_up.data(), down.data(), H, I, y.data(), s);
           }, s),
           dense_ms, pipeline);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const bench::Options options = bench::parse(argc, argv, "experts_bench");
  const bool quick = options.quick;
  mp::cuda::Stream stream;
  nlohmann::json results = nlohmann::json::array();
  const Shape shapes[] = {
      {"Qwen3-30B-A3B", 2048, 768, 128, 8}, {"Mixtral-8x7B", 4096, 14336, 8, 2}, {"DeepSeek-V3", 7168, 2048, 256, 8}};
  const std::vector<index_t> tokens = quick ? std::vector<index_t>{4096} : std::vector<index_t>{4096, 16384, 65536};
  for (const Shape& shape : shapes)
    for (index_t t : tokens)
      for (bool skewed : {false, true}) try {
          run_case(shape, t, skewed, stream, results);
        } catch (const mp::cuda::CudaError& e) {  // the largest cases may not fit: say so, go on
          std::fprintf(stderr, "%s, %lld tokens: skipped: %s\n", shape.model, static_cast<long long>(t), e.what());
          (void)cudaGetLastError();
          results.push_back({{"model", shape.model},
                             {"tokens", t},
                             {"routing", skewed ? "skewed" : "uniform"},
                             {"skipped", e.what()}});
        }

  bench::write(options, "experts", results);
  return 0;
}
