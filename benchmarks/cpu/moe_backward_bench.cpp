// The CPU MoE block's backward next to its forward and to torch autograd on transformers'
// block, in the same run: a benchmark, never a test.
//
//   cpu_moe_backward_bench [--large] [--runs 3] [--python python3]
//
// Case: the Qwen3-MoE block at EP = 1 with hidden 1024, 32 experts, top-4, moe_intermediate
// 512 at 2048 tokens (--large adds the Qwen3-30B-A3B expert shape, H 2048, I 768, E 128,
// top-8, at 4096 tokens), fp32, 1 and 2 threads. Prints the median forward (inference), the
// median backward after a forward that kept its activations (into gradients kept from one
// step to the next, as a training loop keeps them, and into fresh ones), the backward with
// the experts' activations recomputed, their ratios to the forward (target: backward <= 2.2x forward),
// the bytes the forward keeps per token both ways, and torch autograd's backward of
// transformers' Qwen3MoeSparseMoeBlock on the same weights, tokens and output gradient
// with the same threads (benchmarks/cpu/transformers_block.py --backward; skipped without
// torch and transformers).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "meshplan/comm/thread_comm.hpp"
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
  bool large = false;
  int runs = 3;
  std::string python = "python3";
  std::string script = MESHPLAN_BENCH_DIR "/transformers_block.py";
};

double median(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void run_case(const Options& o, const Case& c, int threads) {
  const mp::ModelSpec model = model_of(c);
  const auto full = mp::random_moe_weights<float>(model, 7);
  mp::Tensor<float> x({c.tokens, c.hidden}), dy({c.tokens, c.hidden});
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  for (auto& v : x.vector()) v = normal(rng);
  for (auto& v : dy.vector()) v = normal(rng);

  std::vector<double> fwd, bwd, bwd_fresh, bwd_recompute;
  double kept = 0, kept_recompute = 0;
  mp::ThreadWorld world(1);
  world.run([&](mp::ThreadComm& comm) {
    using Backend = mp::CpuBackend<float>;
    using Block = mp::MoEBlock<mp::RuntimeModel, Mesh, Plan, Backend>;
    Block block(model, Mesh{1}, 0, full, Backend(threads));
    // The gradients a training loop keeps from step to step; "fresh" allocates them anew.
    Block::Gradients grads;
    for (int r = 0; r <= o.runs; ++r) {  // the first of each is a warm-up
      block.set_training(mp::Training::off);
      auto start = std::chrono::steady_clock::now();
      (void)block.forward(comm, x);
      if (r > 0) fwd.push_back(seconds_since(start));
      for (int variant = 0; variant < 3; ++variant) {
        const mp::Training mode = variant == 2 ? mp::Training::recompute : mp::Training::keep_activations;
        block.set_training(mode);
        auto f = block.forward(comm, x);
        (mode == mp::Training::recompute ? kept_recompute : kept) =
            static_cast<double>(f.state.bytes_kept()) / static_cast<double>(c.tokens);
        start = std::chrono::steady_clock::now();
        if (variant == 1) (void)block.backward(comm, f.state, dy);
        else block.backward(comm, f.state, dy, grads);
        if (r > 0) (variant == 0 ? bwd : variant == 1 ? bwd_fresh : bwd_recompute).push_back(seconds_since(start));
      }
    }
  });
  const double f = median(fwd), b = median(bwd), bf = median(bwd_fresh), br = median(bwd_recompute);
  std::printf("%-14s f32 %d thread(s): forward %8.1f ms | backward %8.1f ms = %.2fx forward (kept %6.0f B/token; "
              "fresh gradients %8.1f ms = %.2fx) | recomputing %8.1f ms = %.2fx (kept %6.0f B/token)",
              c.name, threads, f * 1e3, b * 1e3, b / f, kept, bf * 1e3, bf / f, br * 1e3, br / f, kept_recompute);

  const std::string file = "/tmp/meshplan_cpu_backward_case.safetensors";
  mp::bench::write_case(file, c, full, x, &dy);
  const std::string text =
      mp::bench::command_output(o.python + " " + o.script + " --case " + file + " --threads " + std::to_string(threads) +
                                " --runs " + std::to_string(o.runs) + " --backward 2>/dev/null");
  const double their_f = mp::bench::json_number(text, "ms"), their_b = mp::bench::json_number(text, "backward_ms");
  if (their_b < 0)
    std::printf(" | torch autograd: skipped (%s)\n", text.empty() ? "no output" : text.substr(0, text.find('\n')).c_str());
  else
    std::printf(" | torch: forward %8.1f ms, autograd backward %8.1f ms: meshplan's backward %.2fx as fast\n", their_f,
                their_b, their_b / (b * 1e3));
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--large") o.large = true;
    else if (a == "--runs" && i + 1 < argc) o.runs = std::max(1, std::atoi(argv[++i]));
    else if (a == "--python" && i + 1 < argc) o.python = argv[++i];
    else {
      std::fprintf(stderr, "usage: cpu_moe_backward_bench [--large] [--runs N] [--python python3]\n");
      return 2;
    }
  }
  std::vector<Case> cases{{"H1024 E32 k4", 1024, 512, 32, 4, 2048}};
  if (o.large) cases.push_back({"Qwen3-30B-A3B", 2048, 768, 128, 8, 4096});
  for (const Case& c : cases)
    for (int threads : {1, 2}) run_case(o, c, threads);
  return 0;
}
