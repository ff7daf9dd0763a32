// A whole model's training step on the CPU, meshplan next to transformers, in the same run:
// a benchmark, never a test.
//
//   cpu_model_train_bench [--quick] [--runs 5] [--python python3] [--dir /tmp/meshplan_model_train_bench]
//                         [--vocab 4096] [--lr 1e-3]
//   cpu_model_train_bench --profile THREADS [--mesh dp|ep|tp] [--runs 5] [--dir ...]
//
// A step is the forward with the loss, the backward and a plain SGD step (lr --lr), from
// the weights the last step left, on the same batch every step. Its figure is tokens per
// second (B * S over the median step after one warm-up step), and tokens per second of CPU
// time (every thread of the process: on a shared machine the figure other jobs move least;
// with several threads it counts their overhead, not their speed), with the medians of the
// step's three parts (forward with the loss, backward, update: rank 0's for a mesh).
//
// Models (Qwen3-MoE, fp32):
//   golden  the tiny golden model (tests/data/golden/models/qwen3_moe: H 64, 2 layers,
//           8 experts top-2, vocab 128) on its 4 x 8 tokens, 10x --runs steps
//   small   H 512, 4 layers, 16 experts top-2, moe_intermediate 256, 8 heads / 4 kv heads of
//           64, vocab --vocab, on 8 x 128 tokens: made by transformers (benchmarks/cpu/
//           model_train_bench.py --make, seeded random init, save_pretrained) into --dir
//           (skipped with --quick, or without torch and transformers)
//
// Runs, each printed on a line: meshplan on one rank (the tp plan on a 1 x 1 x 1 mesh)
// with 1 and 2 threads; simulated meshes of 2 ranks with 1 thread each (ThreadWorld:
// dp = 2 under the ep plan, ep = 2 under ep, tp = 2 under tp); and transformers' own
// training step (model(input_ids, labels=).loss, backward, torch.optim.SGD) with
// torch.set_num_threads 1 and 2 on the same checkpoint and batch (model_train_bench.py
// --model; its default sdpa attention and grouped_mm experts). Each line prints the
// first step's loss (from the checkpoint's weights, so meshplan's and transformers' are the
// same work: their relative difference is printed) and the last step's. The simulated
// ranks share this machine's cores with one another: a mesh's figure measures what the
// plan's communication and splitting cost, not a speedup. A markdown table closes the
// run. --profile runs only meshplan with THREADS threads per rank on the small model
// already made in --dir (by a run without it), on one rank or with --mesh on the 2-rank
// mesh of that axis: the command to put under perf.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/cpu/isa.hpp"
#include "meshplan/io/model_checkpoint.hpp"
#include "meshplan/io/safetensors_file.hpp"
#include "meshplan/nn/causal_lm.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "bench_case.hpp"

namespace mp = meshplan;
using mp::index_t;

namespace {

using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep">, mp::Axis<"tp">>;

struct Options {
  bool quick = false;
  int profile = 0;   // > 0: only meshplan with this many threads per rank, on the small model
  std::string mesh;  // with --profile: "" (one rank), dp, ep or tp (2 ranks)
  int runs = 5;
  int vocab = 4096;
  float lr = 1e-3f;
  std::string python = "python3";
  std::string dir = "/tmp/meshplan_model_train_bench";
  std::string script = MESHPLAN_BENCH_DIR "/model_train_bench.py";
};

struct Result {
  std::string model, what;
  double tokens_per_s = -1, first_loss = 0, last_loss = 0;
  double tokens_per_cpu_s = -1;  // tokens per second of CPU time (every thread of the process)
  double forward_ms = -1, backward_ms = -1, update_ms = -1;  // medians of the step's parts
  double reference = -1, reference_cpu = -1;  // transformers' at the same total threads (meshplan's runs)
  std::string note;  // why it was skipped
};

mp::nn::TokenBatch read_batch(const std::string& file) {
  mp::SafetensorsFile input(file);
  const auto ids = input.read<std::int64_t>("input_ids");
  const auto labels = input.read<std::int64_t>("labels");
  return {ids.dim(0), ids.dim(1), ids.vector(), labels.vector()};
}

/// CPU time of the whole process (every thread, every simulated rank), in seconds.
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double median(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

/// meshplan's step on `mesh` (one rank per mesh position, `threads` each): tokens/s and the
/// losses of the first and last steps (rank 0's, which is the whole batch's).
template <class Plan>
Result meshplan_steps(const std::string& dir, const mp::nn::TokenBatch& batch, const Mesh& mesh, int threads,
                      int runs, float lr) {
  const mp::ModelCheckpoint ckpt(dir);
  const mp::MeshSpec spec(mesh);
  std::vector<double> seconds, cpu_seconds, losses, fwd, bwd, upd;
  mp::ThreadWorld world(spec.size());
  world.run([&](mp::ThreadComm& comm) {
    auto model = mp::nn::CausalLM<Mesh, Plan>::load(comm, ckpt.spec(), mesh, ckpt.source(), threads);
    for (int r = 0; r <= runs; ++r) {  // the first is a warm-up
      comm.barrier(comm.world_group());
      const auto start = std::chrono::steady_clock::now();
      const double start_cpu = process_cpu_seconds();
      const auto step = model->forward(comm, batch, mp::nn::Mode::train);
      const auto forward_end = std::chrono::steady_clock::now();
      model->backward(comm);
      const auto backward_end = std::chrono::steady_clock::now();
      model->sgd_step(lr);
      const auto update_end = std::chrono::steady_clock::now();
      comm.barrier(comm.world_group());
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double cpu = process_cpu_seconds() - start_cpu;
      if (comm.rank() == 0) {
        if (r > 0) {
          seconds.push_back(s);
          cpu_seconds.push_back(cpu);
          fwd.push_back(std::chrono::duration<double>(forward_end - start).count());
          bwd.push_back(std::chrono::duration<double>(backward_end - forward_end).count());
          upd.push_back(std::chrono::duration<double>(update_end - backward_end).count());
        }
        losses.push_back(step.loss);
      }
    }
  });
  Result res;
  res.tokens_per_s = static_cast<double>(batch.sequences * batch.length) / median(seconds);
  res.tokens_per_cpu_s = static_cast<double>(batch.sequences * batch.length) / median(cpu_seconds);
  res.forward_ms = median(fwd) * 1e3;
  res.backward_ms = median(bwd) * 1e3;
  res.update_ms = median(upd) * 1e3;
  res.first_loss = losses.front();
  res.last_loss = losses.back();
  return res;
}

/// transformers' step, run by model_train_bench.py on the same checkpoint and batch.
Result transformers_steps(const Options& o, const std::string& dir, const mp::nn::TokenBatch& batch, int threads,
                          int runs) {
  const std::string text = mp::bench::command_output(
      o.python + " " + o.script + " --model " + dir + " --batch-file " + dir + "/input.safetensors --threads " +
      std::to_string(threads) + " --runs " + std::to_string(runs) + " --lr " + std::to_string(o.lr) + " 2>/dev/null");
  Result res;
  const double ms = mp::bench::json_number(text, "ms");
  if (ms < 0) {
    res.note = text.empty() ? "no output from " + o.script : text.substr(0, text.find('\n'));
    return res;
  }
  res.tokens_per_s = static_cast<double>(batch.sequences * batch.length) / (ms / 1e3);
  res.forward_ms = mp::bench::json_number(text, "forward_ms");
  res.backward_ms = mp::bench::json_number(text, "backward_ms");
  res.update_ms = mp::bench::json_number(text, "optimizer_ms");
  if (const double cpu_ms = mp::bench::json_number(text, "cpu_ms"); cpu_ms > 0)
    res.tokens_per_cpu_s = static_cast<double>(batch.sequences * batch.length) / (cpu_ms / 1e3);
  // "losses": [first, ..., last]
  const auto at = text.find("\"losses\": [");
  if (at != std::string::npos) {
    const auto end = text.find(']', at);
    res.first_loss = std::atof(text.c_str() + at + 11);
    const auto comma = text.rfind(", ", end);
    res.last_loss = comma != std::string::npos && comma > at ? std::atof(text.c_str() + comma + 2) : res.first_loss;
  }
  const auto impl = [&](const char* key) {
    const std::string k = std::string("\"") + key + "\": \"";
    const auto p = text.find(k);
    return p == std::string::npos ? std::string("?") : text.substr(p + k.size(), text.find('"', p + k.size()) - p - k.size());
  };
  res.note = "attention " + impl("attn") + ", experts " + impl("experts") + ", torch " + impl("torch") +
             ", transformers " + impl("transformers");
  return res;
}

void print(const Result& r, const Result* reference) {
  if (r.tokens_per_s < 0) {
    std::printf("%-7s %-34s skipped (%s)\n", r.model.c_str(), r.what.c_str(), r.note.c_str());
  } else {
    std::printf("%-7s %-36s %8.0f tokens/s, %8.0f per CPU-second | loss first step %.7f, last %.7f",
                r.model.c_str(), r.what.c_str(), r.tokens_per_s, r.tokens_per_cpu_s, r.first_loss, r.last_loss);
    std::printf(" | forward %.2f ms, backward %.2f ms, update %.2f ms", r.forward_ms, r.backward_ms, r.update_ms);
    if (reference && reference->tokens_per_s > 0)
      std::printf(" | vs transformers: %.2fx the tokens/s (%.2fx per CPU-second), first loss differs by %.1e relative",
                  r.tokens_per_s / reference->tokens_per_s, r.tokens_per_cpu_s / reference->tokens_per_cpu_s,
                  std::abs(r.first_loss - reference->first_loss) / std::abs(reference->first_loss));
    if (!r.note.empty()) std::printf(" (%s)", r.note.c_str());
    std::printf("\n");
  }
  std::fflush(stdout);
}

void run_model(const Options& o, const std::string& name, const std::string& dir, int runs, std::vector<Result>& all) {
  const mp::nn::TokenBatch batch = read_batch(dir + "/input.safetensors");
  const mp::ModelSpec m = mp::ModelCheckpoint(dir).spec();
  std::printf("\n%s: %s, H %lld, %lld layers, %lld experts top-%lld, moe_intermediate %lld, heads %lld / kv %lld of "
              "%lld, vocab %lld; batch %lld x %lld tokens; %d timed steps after 1 warm-up, SGD lr %g\n",
              name.c_str(), dir.c_str(), static_cast<long long>(m.hidden_size),
              static_cast<long long>(m.num_hidden_layers), static_cast<long long>(m.num_experts),
              static_cast<long long>(m.num_experts_per_tok), static_cast<long long>(m.moe_intermediate_size),
              static_cast<long long>(m.num_attention_heads), static_cast<long long>(m.num_key_value_heads),
              static_cast<long long>(m.head_dim), static_cast<long long>(m.vocab_size),
              static_cast<long long>(batch.sequences), static_cast<long long>(batch.length), runs,
              static_cast<double>(o.lr));
  std::fflush(stdout);
  Result torch_at[3];
  for (int threads : {1, 2}) {
    Result t = transformers_steps(o, dir, batch, threads, runs);
    t.model = name;
    t.what = "transformers, " + std::to_string(threads) + " thread(s)";
    print(t, nullptr);
    torch_at[threads] = t;
    all.push_back(t);
  }
  auto add = [&](Result r, std::string what, const Result* ref) {
    r.model = name;
    r.what = std::move(what);
    r.reference = ref->tokens_per_s;
    r.reference_cpu = ref->tokens_per_cpu_s;
    print(r, ref);
    all.push_back(r);
  };
  for (int threads : {1, 2})
    add(meshplan_steps<mp::plans::qwen3_moe::tp<>>(dir, batch, Mesh{1, 1, 1}, threads, runs, o.lr),
        "meshplan, 1 rank, " + std::to_string(threads) + " thread(s)", &torch_at[threads]);
  // Two simulated ranks of one thread each, on the same two cores: the plan's overhead.
  add(meshplan_steps<mp::plans::qwen3_moe::ep<>>(dir, batch, Mesh{2, 1, 1}, 1, runs, o.lr),
      "meshplan, dp=2 (ep plan), 2x1 thread", &torch_at[2]);
  add(meshplan_steps<mp::plans::qwen3_moe::ep<>>(dir, batch, Mesh{1, 2, 1}, 1, runs, o.lr),
      "meshplan, ep=2 (ep plan), 2x1 thread", &torch_at[2]);
  add(meshplan_steps<mp::plans::qwen3_moe::tp<>>(dir, batch, Mesh{1, 1, 2}, 1, runs, o.lr),
      "meshplan, tp=2 (tp plan), 2x1 thread", &torch_at[2]);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") o.quick = true;
    else if (a == "--profile" && i + 1 < argc) o.profile = std::max(1, std::atoi(argv[++i]));
    else if (a == "--mesh" && i + 1 < argc && (std::string(argv[i + 1]) == "dp" || std::string(argv[i + 1]) == "ep" ||
                                                std::string(argv[i + 1]) == "tp"))
      o.mesh = argv[++i];
    else if (a == "--runs" && i + 1 < argc) o.runs = std::max(1, std::atoi(argv[++i]));
    else if (a == "--vocab" && i + 1 < argc) o.vocab = std::max(2, std::atoi(argv[++i]));
    else if (a == "--lr" && i + 1 < argc) o.lr = static_cast<float>(std::atof(argv[++i]));
    else if (a == "--python" && i + 1 < argc) o.python = argv[++i];
    else if (a == "--dir" && i + 1 < argc) o.dir = argv[++i];
    else {
      std::fprintf(stderr, "usage: cpu_model_train_bench [--quick | --profile THREADS [--mesh dp|ep|tp]] [--runs N] "
                           "[--python python3] "
                           "[--dir DIR] [--vocab V] [--lr LR]\n");
      return 2;
    }
  }
  std::printf("meshplan CPU training step (forward with the loss, backward, SGD), isa %s, %u hardware threads\n",
              std::string(mp::cpu::to_string(mp::cpu::active_isa())).c_str(), std::thread::hardware_concurrency());
  std::vector<Result> all;
  if (o.profile > 0) {  // for perf: the small model made beforehand (a run without --profile)
    const mp::nn::TokenBatch batch = read_batch(o.dir + "/input.safetensors");
    Result r;
    if (o.mesh == "dp") r = meshplan_steps<mp::plans::qwen3_moe::ep<>>(o.dir, batch, Mesh{2, 1, 1}, o.profile, o.runs, o.lr);
    else if (o.mesh == "ep") r = meshplan_steps<mp::plans::qwen3_moe::ep<>>(o.dir, batch, Mesh{1, 2, 1}, o.profile, o.runs, o.lr);
    else if (o.mesh == "tp") r = meshplan_steps<mp::plans::qwen3_moe::tp<>>(o.dir, batch, Mesh{1, 1, 2}, o.profile, o.runs, o.lr);
    else r = meshplan_steps<mp::plans::qwen3_moe::tp<>>(o.dir, batch, Mesh{1, 1, 1}, o.profile, o.runs, o.lr);
    r.model = "small";
    r.what = "meshplan, " + (o.mesh.empty() ? std::string("1 rank") : o.mesh + "=2") + ", " + std::to_string(o.profile) +
             " thread(s)" + (o.mesh.empty() ? "" : " each");
    print(r, nullptr);
    return 0;
  }
  run_model(o, "golden", MESHPLAN_SOURCE_DIR "/tests/data/golden/models/qwen3_moe", 10 * o.runs, all);
  if (!o.quick) {
    const std::string text = mp::bench::command_output(o.python + " " + o.script + " --make " + o.dir + " --vocab " +
                                                       std::to_string(o.vocab) + " 2>/dev/null");
    if (text.find("\"dir\"") == std::string::npos || !std::filesystem::exists(o.dir + "/model.safetensors"))
      std::printf("\nsmall: skipped (%s)\n", text.empty() ? ("no output from " + o.script).c_str()
                                                          : text.substr(0, text.find('\n')).c_str());
    else
      run_model(o, "small", o.dir, o.runs, all);
  }

  std::printf("\n| model | run | tokens/s | vs transformers (same threads) | tokens per CPU-second | vs transformers | "
              "first-step loss |\n|---|---|---:|---:|---:|---:|---:|\n");
  for (const Result& r : all) {
    if (r.tokens_per_s < 0) continue;
    char ratio[32] = "", ratio_cpu[32] = "";
    if (r.reference > 0) std::snprintf(ratio, sizeof ratio, "%.2fx", r.tokens_per_s / r.reference);
    if (r.reference_cpu > 0) std::snprintf(ratio_cpu, sizeof ratio_cpu, "%.2fx", r.tokens_per_cpu_s / r.reference_cpu);
    std::printf("| %s | %s | %.0f | %s | %.0f | %s | %.6f |\n", r.model.c_str(), r.what.c_str(), r.tokens_per_s, ratio,
                r.tokens_per_cpu_s, ratio_cpu, r.first_loss);
  }
  return 0;
}
