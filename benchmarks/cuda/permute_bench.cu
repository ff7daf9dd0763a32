// Bandwidth of the permutation kernels (gather, regroup, combine) and of the routers, next
// to the device-to-device copy bandwidth measured in the same process on the same bytes.
//
//   permute_bench [--quick] [--out results.json]
//
// For tokens 4096, 16384, 65536; hidden 2048, 4096, 7168; experts 8, 128, 256; top-k 2
// and 8 (bfloat16 rows): the median time of 20 runs after 3 warm-ups, the bytes each
// kernel must move (every row read once and written once; the combine reads k rows and
// writes one per token), GB/s, and the ratio to the copy's GB/s. The router: tokens/s and
// GB/s of hidden states read. JSON on stdout (or --out), a table on stderr.
//
// The small cases fit in the L2 (50 MB on an H100: 4096 tokens x 2048 x top-2 moves 32
// MB), where back-to-back runs would read what the last run left there. So every timed
// run, of every case and of the copy baseline alike, follows a write of a scratch buffer
// twice the L2's size, outside the timed region, and is timed alone with events: the
// figures are DRAM bandwidth. Each record says so ("l2_flushed") with the L2's size and
// the case's working set (the bytes it reads and writes).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_support.cuh"
#include "meshplan/cpu/detail/permute.hpp"
#include "meshplan/moe/detail/dispatch_plan.hpp"
#include "meshplan/cuda/core/buffer.cuh"
#include "meshplan/cuda/permute/device_permute.cuh"
#include "meshplan/cuda/router/device_router.cuh"
#include "meshplan/model/presets.hpp"

namespace mp = meshplan;
using mp::index_t;
using bf16 = __nv_bfloat16;

namespace {

/// Times a function on a stream as DRAM sees it: before each run (warm-ups included), a
/// write of twice the L2's size evicts what the last run left there; the write is outside
/// the events, which bracket the run alone.
class FlushedTimer {
 public:
  FlushedTimer() {
    int device = 0, l2 = 0;
    MESHPLAN_CUDA_CHECK(cudaGetDevice(&device));
    MESHPLAN_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
    l2_bytes_ = static_cast<std::size_t>(l2);
    scratch_.resize(std::max<std::size_t>(2 * l2_bytes_, 1));
  }

  std::size_t l2_bytes() const noexcept { return l2_bytes_; }

  /// The median milliseconds of 20 flushed runs after 3 flushed warm-ups.
  double median_ms(const std::function<void()>& f, cudaStream_t s) {
    return bench::median_ms(f, s, 3, 20, [&](int i) {
      MESHPLAN_CUDA_CHECK(cudaMemsetAsync(scratch_.data(), i & 0xff, scratch_.bytes(), s));
    });
  }

 private:
  std::size_t l2_bytes_ = 0;
  mp::cuda::DeviceBuffer<unsigned char> scratch_;
};

/// What a record says about its timing: every run flushed, the L2's size, the case's
/// working set (whether it would have fit).
void note_flush(nlohmann::json& r, const FlushedTimer& timer, double working_set) {
  r["l2_flushed"] = true;
  r["l2_bytes"] = timer.l2_bytes();
  r["working_set_bytes"] = working_set;
  r["fits_in_l2"] = working_set <= static_cast<double>(timer.l2_bytes());
}

double gbps(double bytes, double ms) { return bytes / (ms * 1e-3) / 1e9; }

struct Case {
  index_t tokens, hidden, experts, top_k;
};

nlohmann::json record(const char* kernel, const Case& c, double bytes, double ms, double copy_gbps) {
  const double g = gbps(bytes, ms);
  std::fprintf(
      stderr, "%-8s tokens %6lld hidden %5lld experts %3lld top-%lld  %8.3f ms  %7.1f GB/s  copy %7.1f GB/s  %5.1f%%\n",
      kernel, static_cast<long long>(c.tokens), static_cast<long long>(c.hidden), static_cast<long long>(c.experts),
      static_cast<long long>(c.top_k), ms, g, copy_gbps, 100.0 * g / copy_gbps);
  return {{"kernel", kernel},
          {"tokens", c.tokens},
          {"hidden", c.hidden},
          {"experts", c.experts},
          {"top_k", c.top_k},
          {"dtype", "bf16"},
          {"ms", ms},
          {"bytes", bytes},
          {"gbps", g},
          {"copy_gbps", copy_gbps},
          {"ratio_to_copy", g / copy_gbps}};
}

/// The permutation kernels on one case.
void permutation(const Case& c, FlushedTimer& timer, cudaStream_t s, nlohmann::json& out) {
  auto median_ms = [&](const std::function<void()>& f, cudaStream_t stream) { return timer.median_ms(f, stream); };
  const index_t T = c.tokens, H = c.hidden, E = c.experts, k = c.top_k, pairs = T * k;
  const double row_bytes = static_cast<double>(H) * sizeof(bf16);
  mp::cuda::DeviceBuffer<bf16> x(static_cast<std::size_t>(T * H)), rows(static_cast<std::size_t>(pairs * H)),
      moved(static_cast<std::size_t>(pairs * H)), out_rows(static_cast<std::size_t>(T * H));
  MESHPLAN_CUDA_CHECK(cudaMemsetAsync(x.data(), 0, x.bytes(), s));
  MESHPLAN_CUDA_CHECK(cudaMemsetAsync(rows.data(), 0, rows.bytes(), s));

  // A uniform routing, sorted on the host: the order the gather reads in.
  std::mt19937 rng(static_cast<unsigned>(T + H + E + k));
  std::vector<std::int32_t> ids(static_cast<std::size_t>(pairs));
  for (auto& id : ids) id = static_cast<std::int32_t>(rng() % static_cast<unsigned>(E));
  const mp::ExpertOrder order = mp::cpu::sort_by_expert(mp::Routing{T, k, ids, std::vector<float>(ids.size())}, E);
  std::vector<std::int32_t> order32(order.order.begin(), order.order.end());
  mp::cuda::DeviceBuffer<std::int32_t> d_order, inverse(static_cast<std::size_t>(pairs));
  d_order.upload(order32, s);
  mp::cuda::DevicePermute::inverse(d_order.data(), pairs, inverse.data(), s);
  std::vector<float> w(static_cast<std::size_t>(pairs), 1.0f / static_cast<float>(k));
  mp::cuda::DeviceBuffer<float> weights;
  weights.upload(w, s);

  // The copy baseline: the same bytes the gather writes, device to device.
  const double moved_bytes = static_cast<double>(pairs) * row_bytes;
  const double copy_ms = median_ms(
      [&] {
        MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(moved.data(), rows.data(), rows.bytes(), cudaMemcpyDeviceToDevice, s));
      },
      s);
  const double copy = gbps(2 * moved_bytes, copy_ms);  // read + write
  // The copy's figure goes in every record of the case; the copy itself, one record.
  {
    nlohmann::json r = record("copy", c, 2 * moved_bytes, copy_ms, copy);
    note_flush(r, timer, 2 * moved_bytes);
    out.push_back(r);
  }

  const double index_bytes = static_cast<double>(pairs) * sizeof(std::int32_t);
  auto add = [&](const char* kernel, double bytes, double ms) {
    nlohmann::json r = record(kernel, c, bytes, ms, copy);
    note_flush(r, timer, bytes);
    out.push_back(r);
  };
  add("gather", 2 * moved_bytes + index_bytes,
      median_ms([&] { mp::cuda::DevicePermute::gather_rows(x.data(), d_order.data(), k, pairs, H, rows.data(), s); },
                s));

  // Regroup as after an all-to-all from 8 sources to E/8 (at least 1) local experts.
  const index_t sources = 8, local = std::max<index_t>(E / 8, 1);
  std::vector<index_t> counts(static_cast<std::size_t>(sources * local), pairs / (sources * local));
  counts.back() += pairs - std::accumulate(counts.begin(), counts.end(), index_t{0});
  const auto blocks = mp::regroup_blocks(counts, sources, local);
  mp::cuda::DeviceBuffer<mp::cuda::kernels::RowBlock> table;
  add("regroup", 2 * moved_bytes,
      median_ms([&] { mp::cuda::DevicePermute::regroup(rows.data(), moved.data(), blocks, H, false, table, s); }, s));

  const double combine_bytes = moved_bytes + static_cast<double>(T) * row_bytes + index_bytes + pairs * 4.0;
  add("combine", combine_bytes, median_ms(
                                    [&] {
                                      mp::cuda::DevicePermute::combine(rows.data(), inverse.data(), weights.data(),
                                                                       T, k, H, out_rows.data(), s);
                                    },
                                    s));
}

/// The router of a model on `tokens` tokens (its hidden size, experts and top-k).
void router(const mp::ModelSpec& m, index_t tokens, FlushedTimer& timer, cudaStream_t s, nlohmann::json& out) {
  const index_t H = m.hidden_size, E = m.num_experts, k = m.num_experts_per_tok;
  mp::cuda::DeviceBuffer<bf16> x(static_cast<std::size_t>(tokens * H)), gate(static_cast<std::size_t>(E * H));
  MESHPLAN_CUDA_CHECK(cudaMemsetAsync(x.data(), 0, x.bytes(), s));
  MESHPLAN_CUDA_CHECK(cudaMemsetAsync(gate.data(), 0, gate.bytes(), s));
  mp::cuda::DeviceBuffer<float> bias(static_cast<std::size_t>(E)), weights(static_cast<std::size_t>(tokens * k));
  MESHPLAN_CUDA_CHECK(cudaMemsetAsync(bias.data(), 0, bias.bytes(), s));
  mp::cuda::DeviceBuffer<std::int32_t> ids(static_cast<std::size_t>(tokens * k));
  mp::cuda::DeviceBuffer<unsigned long long> bad(1);
  const auto p = mp::cuda::RouterParams::of(m);
  const double ms = timer.median_ms(
      [&] {
        mp::cuda::DeviceRouter::route(x.data(), gate.data(), bias.data(), p, tokens, ids.data(), weights.data(),
                                      nullptr, bad.data(), s);
      },
      s);
  const double bytes = static_cast<double>(tokens) * H * sizeof(bf16);
  std::fprintf(stderr, "router   %-14s tokens %6lld  %8.3f ms  %7.1f GB/s of hidden states  %.3g tokens/s\n",
               std::string(mp::to_string(m.family)).c_str(), static_cast<long long>(tokens), ms, gbps(bytes, ms),
               static_cast<double>(tokens) / (ms * 1e-3));
  nlohmann::json r = {{"kernel", "router"},
                 {"family", std::string(mp::to_string(m.family))},
                 {"tokens", tokens},
                 {"hidden", H},
                 {"experts", E},
                 {"top_k", k},
                 {"dtype", "bf16"},
                 {"ms", ms},
                 {"bytes", bytes},
                 {"gbps", gbps(bytes, ms)},
                 {"tokens_per_s", static_cast<double>(tokens) / (ms * 1e-3)}};
  note_flush(r, timer, bytes + static_cast<double>(E) * H * sizeof(bf16));
  out.push_back(r);
}

}  // namespace

int main(int argc, char** argv) {
  const bench::Options options = bench::parse(argc, argv, "permute_bench");
  const bool quick = options.quick;
  mp::cuda::Stream stream;
  FlushedTimer timer;
  nlohmann::json results = nlohmann::json::array();
  const std::vector<index_t> tokens = quick ? std::vector<index_t>{4096} : std::vector<index_t>{4096, 16384, 65536};
  const std::vector<index_t> hidden = quick ? std::vector<index_t>{2048} : std::vector<index_t>{2048, 4096, 7168};
  for (index_t t : tokens)
    for (index_t h : hidden)
      for (index_t e : {8, 128, 256})
        for (index_t k : {2, 8}) permutation({t, h, e, k}, timer, stream, results);
  for (const mp::ModelSpec& m :
       {mp::models::Qwen3_30B_A3B::spec, mp::models::Mixtral_8x7B::spec, mp::models::DeepSeek_V3::spec})
    for (index_t t : tokens) router(m, t, timer, stream, results);

  bench::write(options, "permute", results);
  return 0;
}
