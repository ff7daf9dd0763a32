// The CPU MoE block next to transformers', in the same run: a benchmark, never a test.
//
//   cpu_moe_block_bench [--quick] [--runs 5] [--python python3]
//
// Cases: the Qwen3-MoE block at EP = 1 with hidden 1024, 32 experts, top-4,
// moe_intermediate 512 at 2048 tokens; and the Qwen3-30B-A3B expert shape (H 2048, I 768,
// E 128, top-8) at 4096 tokens. Each in fp32 and bf16 storage, with 1 and 2 threads. For
// each it prints the forward's median time and GFLOP/s, the expert MLP's alone and its
// fraction of this CPU's fp32 FMA peak (measured by a peak loop in the same run, per
// thread count), and transformers' Qwen3MoeSparseMoeBlock on the same weights and inputs
// with the same threads (benchmarks/cpu/transformers_block.py, run by `--python`; skipped
// when torch or transformers is not importable), with the largest difference of the two
// outputs. --quick runs the first case only.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/cpu/detail/fma_peak.hpp"
#include "meshplan/cpu/isa.hpp"
#include "meshplan/io/safetensors_file.hpp"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "bench_case.hpp"

namespace mp = meshplan;
using mp::index_t;

namespace {

using mp::bench::Case;
using mp::bench::Mesh;
using mp::bench::model_of;
using mp::bench::Plan;

struct Options {
  bool quick = false;
  int runs = 5;
  std::string python = "python3";
  std::string script = MESHPLAN_BENCH_DIR "/transformers_block.py";
};

template <class F>
double median_seconds(int runs, F&& f) {
  f();  // warm-up
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) {
    const auto start = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

/// transformers' block on the same case: its median time in ms (negative: skipped, with why).
double transformers_ms(const Options& o, const std::string& file, int threads, bool bf16, const std::string& out,
                       std::string& note) {
  const std::string cmd = o.python + " " + o.script + " --case " + file + " --threads " + std::to_string(threads) +
                          " --runs " + std::to_string(o.runs) + (bf16 ? " --dtype bf16" : "") + " --out " + out +
                          " 2>/dev/null";
  const std::string text = mp::bench::command_output(cmd);
  const double ms = mp::bench::json_number(text, "ms");
  if (ms < 0) note = text.empty() ? "no output from " + o.script : text.substr(0, text.find('\n'));
  return ms;
}

template <class T>
void run_case(const Options& o, const Case& c, int threads, double peak_gflops) {
  const mp::ModelSpec model = model_of(c);
  const char* dtype = std::is_same_v<T, float> ? "f32" : "bf16";
  const auto full = mp::random_moe_weights<T>(model, 7);
  mp::Tensor<T> x({c.tokens, c.hidden});
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  for (auto& v : x.vector()) v = mp::from_float<T>(normal(rng));

  mp::ThreadWorld world(1);
  double block_s = 0, experts_s = 0;
  mp::Tensor<T> y;
  mp::Routing routing;
  world.run([&](mp::ThreadComm& comm) {
    using Backend = mp::CpuBackend<T>;
    mp::MoEBlock<mp::RuntimeModel, Mesh, Plan, Backend> block(model, Mesh{1}, 0, full, Backend(threads));
    block_s = median_seconds(o.runs, [&] {
      auto f = block.forward(comm, x);
      y = std::move(f.hidden_states);
      routing = f.state.routing();
    });
    // The expert MLP alone, on the same routing.
    auto ctx = block.backend().context(comm);
    const auto routed = block.backend().route(ctx, x, block.local_weights(), model);
    std::vector<index_t> offsets(routed.counts.size() + 1, 0);
    for (std::size_t e = 0; e < routed.counts.size(); ++e) offsets[e + 1] = offsets[e] + routed.counts[e];
    experts_s = median_seconds(o.runs, [&] {
      (void)block.backend().template expert_mlp<T>(ctx, x, &routed, offsets, block.local_weights());
    });
  });

  const double pairs = static_cast<double>(c.tokens * c.top_k);
  const double expert_flop = 2.0 * pairs * 3.0 * static_cast<double>(c.inter * c.hidden);
  const double router_flop = 2.0 * static_cast<double>(c.tokens * c.experts * c.hidden);
  const double gflop = (expert_flop + router_flop) / 1e9;
  std::printf("%-14s %-4s %d thread(s): block %8.1f ms %6.1f GFLOP/s | experts %8.1f ms %6.1f GFLOP/s = %4.0f%% of "
              "the %.0f GFLOP/s FMA peak",
              c.name, dtype, threads, block_s * 1e3, gflop / block_s, experts_s * 1e3, expert_flop / 1e9 / experts_s,
              100.0 * expert_flop / 1e9 / experts_s / peak_gflops, peak_gflops);

  // transformers on the same weights and tokens.
  const std::string file = "/tmp/meshplan_cpu_bench_case.safetensors", out = "/tmp/meshplan_cpu_bench_out.safetensors";
  mp::bench::write_case(file, c, full, x);
  std::string note;
  const double ms = transformers_ms(o, file, threads, !std::is_same_v<T, float>, out, note);
  if (ms < 0) {
    std::printf(" | transformers: skipped (%s)\n", note.c_str());
    return;
  }
  // Compared token by token where both routers chose the same experts: fp32 logits summed
  // in another order can swap two experts whose probabilities differ in the last bits.
  const mp::SafetensorsFile theirs(out);
  const mp::Tensor<float> ref = theirs.read<float>("hidden_states");
  const mp::Tensor<std::int32_t> their_ids = theirs.read<std::int32_t>("topk_ids");
  double diff = 0, scale = 0;
  index_t other_choice = 0;
  for (index_t t = 0; t < c.tokens; ++t) {
    std::vector<std::int32_t> a(routing.experts.begin() + t * c.top_k, routing.experts.begin() + (t + 1) * c.top_k);
    std::vector<std::int32_t> b(their_ids.data() + t * c.top_k, their_ids.data() + (t + 1) * c.top_k);
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    if (a != b) {
      ++other_choice;
      continue;
    }
    for (index_t h = 0; h < c.hidden; ++h) {
      const index_t i = t * c.hidden + h;
      diff = std::max(diff, static_cast<double>(std::abs(mp::to_float(y[i]) - ref[i])));
      scale = std::max(scale, static_cast<double>(std::abs(ref[i])));
    }
  }
  std::printf(" | transformers %8.1f ms %6.1f GFLOP/s: meshplan %.2fx as fast (same experts: outputs within %.1e "
              "relative; %lld of %lld tokens chose other experts at a near-tie)\n",
              ms, gflop / (ms / 1e3), ms / 1e3 / block_s, scale > 0 ? diff / scale : 0.0,
              static_cast<long long>(other_choice), static_cast<long long>(c.tokens));
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") o.quick = true;
    else if (a == "--runs" && i + 1 < argc) o.runs = std::max(1, std::atoi(argv[++i]));
    else if (a == "--python" && i + 1 < argc) o.python = argv[++i];
    else {
      std::fprintf(stderr, "usage: cpu_moe_block_bench [--quick] [--runs N] [--python python3]\n");
      return 2;
    }
  }
  const Case cases[] = {{"qwen3-moe-1024", 1024, 512, 32, 4, 2048}, {"qwen3-30b-a3b", 2048, 768, 128, 8, 4096}};
  const mp::cpu::Isa isa = mp::cpu::active_isa();
  std::printf("meshplan CPU MoE block, isa %s, %u hardware threads\n", std::string(mp::cpu::to_string(isa)).c_str(),
              std::thread::hardware_concurrency());
  for (const Case& c : cases) {
    for (int threads : {1, 2}) {
      const double peak = mp::cpu::measure_fma_peak_gflops(isa, threads);
      run_case<float>(o, c, threads, peak);
      run_case<mp::bfloat16>(o, c, threads, peak);
    }
    if (o.quick) break;
  }
  return 0;
}
