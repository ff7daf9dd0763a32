// The meshplan demo: a whole tiny MoE model with random weights trained for a few SGD steps
// on one rank and on a simulated mesh (one thread per rank, ThreadComm), with the loss of
// every step side by side: the same bits where the plan only moves data (data and expert
// parallel axes), the same to fp32 rounding where tensor parallelism splits sums. `--help`
// prints the usage (kUsage below).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "demo_format.hpp"
#include "meshplan/comm/host_capacity.hpp"
#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/model/presets.hpp"
#include "meshplan/nn/causal_lm.hpp"
#include "meshplan/nn/random_source.hpp"
#include "meshplan/plan/builtin/registry.hpp"

namespace mp = meshplan;
using mp::index_t;

namespace {

constexpr const char* kUsage = R"(usage: model_demo [--model NAME] [--mesh AXES] [--plan NAME] [--steps N] [--batch B] [--length S]
                  [--lr X] [--seed N]

Trains a tiny model with random weights for a few SGD steps on one rank and on simulated
ranks (threads), and prints both losses at every step with the bytes the mesh's collectives
moved.

  --model NAME   tiny-qwen3-moe (default), tiny-mixtral, tiny-deepseek-v3 or tiny-qwen3
  --mesh AXES    axes dp, ep and tp (default dp=2,ep=2); an axis of size > 1 other than
                 dp and ep must be used by the plan
  --plan NAME    the family's built-in plan: tp, tp_sp, ep, ep_tp, ep_sp or etp (tp and
                 tp_sp for tiny-qwen3). Default: ep on a mesh without tp, tp on a mesh
                 without ep, else ep_sp
  --steps N      SGD steps (default 5)
  --batch B      sequences (default 8)
  --length S     tokens per sequence (default 16)
  --lr X         learning rate (default 0.2)
  --seed N       weights and tokens (default 1)
  --help         this text

Examples:
  model_demo --mesh dp=2,ep=2,tp=2 --plan ep_sp
  model_demo --model tiny-deepseek-v3 --mesh ep=2,tp=2 --plan etp

Exit status: 0 if the losses agree, 1 if not (or on another failure), 2 for bad options.
)";

using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep">, mp::Axis<"tp">>;

struct Options {
  std::string model = "tiny-qwen3-moe";
  std::string mesh = "dp=2,ep=2";
  std::string plan;
  index_t steps = 5, batch = 8, length = 16;
  double lr = 0.2;
  std::uint64_t seed = 1;
};

struct Trained {
  std::vector<double> losses;
  mp::CommStats stats;  // rank 0's
  double seconds = 0;
};

/// Token ids with structure to learn: each sequence counts up by a stride from a start.
mp::nn::TokenBatch make_batch(const Options& o, index_t vocab) {
  mp::nn::TokenBatch b{o.batch, o.length, {}, {}};
  for (index_t s = 0; s < o.batch; ++s) {
    const index_t start = static_cast<index_t>(mp::nn::detail::mix(o.seed + static_cast<std::uint64_t>(s)) % vocab);
    const index_t stride = 1 + s % 3;
    for (index_t t = 0; t < o.length; ++t) b.ids.push_back((start + stride * t) % vocab);
  }
  b.labels = b.ids;  // causal LM: the model shifts them
  return b;
}

template <class Plan>
Trained train(const Options& o, const mp::ModelSpec& spec, const Mesh& mesh) {
  const mp::nn::TokenBatch batch = make_batch(o, spec.vocab_size);
  const mp::nn::ModelSource source = mp::nn::random_source(o.seed);
  Trained t;
  t.losses.resize(static_cast<std::size_t>(o.steps));
  const index_t ranks = mp::MeshSpec(mesh).size();
  const int threads = ranks == 1 ? 0 : 1;
  mp::ThreadWorld world(ranks);
  const auto start = std::chrono::steady_clock::now();
  world.run([&](mp::ThreadComm& comm) {
    auto model = mp::nn::CausalLM<Mesh, Plan>::load(comm, spec, mesh, source, threads);
    for (index_t s = 0; s < o.steps; ++s) {
      const auto step = model->forward(comm, batch, mp::nn::Mode::train);
      model->backward(comm);
      model->sgd_step(static_cast<float>(o.lr));
      if (comm.rank() == 0) t.losses[static_cast<std::size_t>(s)] = step.loss;
    }
    if (comm.rank() == 0) t.stats = comm.stats();
  });
  t.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return t;
}

template <class Plan>
int run(const Options& o, const mp::ModelSpec& spec, const Mesh& mesh, std::string_view plan_name) {
  const mp::MeshSpec mesh_spec(mesh);
  mp::validate(spec, mesh_spec, Plan::entries);
  enforce(mp::comm_rules::simulated_ranks_fit(mesh_spec.to_string(), mesh_spec.size(), 0, mp::host_capacity()));
  std::printf("meshplan demo: %s (%s, hidden %lld, %lld layers", o.model.c_str(),
              std::string(mp::to_string(spec.family)).c_str(), static_cast<long long>(spec.hidden_size),
              static_cast<long long>(spec.num_hidden_layers));
  if (spec.is_moe())
    std::printf(", %lld experts top-%lld", static_cast<long long>(spec.num_experts),
                static_cast<long long>(spec.num_experts_per_tok));
  std::printf("), random weights\nbatch %lld x %lld tokens, SGD lr %g; mesh %s (%lld ranks as threads), plan %s::%s\n\n",
              static_cast<long long>(o.batch), static_cast<long long>(o.length), o.lr, mesh_spec.to_string().c_str(),
              static_cast<long long>(mesh_spec.size()), std::string(mp::to_string(spec.family)).c_str(),
              std::string(plan_name).c_str());

  const Trained one = train<Plan>(o, spec, Mesh{1, 1, 1});
  const Trained many = train<Plan>(o, spec, mesh);
  const bool moves_data_only = mesh_spec.size("tp") == 1;
  std::printf("%-6s %-18s %-18s %s\n", "step", "loss, one rank", "loss, the mesh", "difference");
  bool agree = true;
  for (std::size_t s = 0; s < one.losses.size(); ++s) {
    const double a = one.losses[s], b = many.losses[s];
    const bool same = std::memcmp(&a, &b, sizeof a) == 0;
    const double rel = std::abs(a - b) / std::abs(a);
    agree = agree && (moves_data_only ? same : rel <= 1e-5);
    char diff[64];
    if (same) std::snprintf(diff, sizeof diff, "the same bits");
    else std::snprintf(diff, sizeof diff, "%.1e relative", rel);
    std::printf("%-6zu %-18.9f %-18.9f %s\n", s + 1, a, b, diff);
  }
  std::printf("\nwhat rank 0 of the mesh sent over %lld steps (forward and backward):\n",
              static_cast<long long>(o.steps));
  for (const auto& [label, e] : many.stats.by_label)
    std::printf("  %-28s %6lld calls  %s\n", label.c_str(), static_cast<long long>(e.calls), demo_format::human_bytes(e.bytes).c_str());
  std::printf("\none rank %.3f s, the mesh %.3f s (simulated ranks share this machine's cores)\n", one.seconds,
              many.seconds);
  std::printf("check: %s\n", agree ? (moves_data_only ? "the mesh's losses are one rank's, bit for bit"
                                                       : "the mesh's losses are one rank's within 1e-5")
                                   : "FAILED: the losses differ");
  return agree ? 0 : 1;
}

int usage_error(const std::string& what) {
  std::fprintf(stderr, "meshplan [demo_options]: %s\n\n%s", what.c_str(), kUsage);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= argc) return usage_error(std::string(arg) + " needs a value");
    const std::string value = argv[++i];
    auto count = [&](index_t& out) {
      char* end = nullptr;
      const long long v = std::strtoll(value.c_str(), &end, 10);
      if (*end != '\0' || v < 0 || v > 1 << 20) return false;
      out = v;
      return true;
    };
    if (arg == "--model") o.model = value;
    else if (arg == "--mesh") o.mesh = value;
    else if (arg == "--plan") o.plan = value;
    else if (arg == "--steps" && count(o.steps) && o.steps > 0) continue;
    else if (arg == "--batch" && count(o.batch)) continue;
    else if (arg == "--length" && count(o.length)) continue;
    else if (arg == "--lr") o.lr = std::atof(value.c_str());
    else if (arg == "--seed") o.seed = std::strtoull(value.c_str(), nullptr, 10);
    else return usage_error("bad option or value: " + std::string(arg) + " " + value);
  }
  try {
    const mp::ModelSpec spec = mp::models::preset(o.model);
    const mp::MeshSpec parsed = mp::MeshSpec::parse(o.mesh);
    index_t size[3] = {1, 1, 1};
    const char* names[3] = {"dp", "ep", "tp"};
    for (std::size_t a = 0; a < parsed.ndim(); ++a) {
      bool known = false;
      for (int k = 0; k < 3; ++k)
        if (parsed.axis_name(a) == names[k]) size[k] = parsed.axis_size(a), known = true;
      if (!known) return usage_error("the mesh's axes are dp, ep and tp, not '" + std::string(parsed.axis_name(a)) + "'");
    }
    const Mesh mesh{size[0], size[1], size[2]};
    std::string plan = o.plan;
    if (plan.empty()) plan = spec.family == mp::Family::qwen3 || size[1] == 1 ? "tp" : size[2] == 1 ? "ep" : "ep_sp";
    int status = -1;
    mp::plans::with_family_plans(spec.family, [&]<class Set>() {
      Set::visit(plan, [&]<class Plan>() { status = run<Plan>(o, spec, mesh, plan); });
    });
    if (status < 0) return usage_error("the family has no built-in plan '" + plan + "'");
    return status;
  } catch (const mp::RuleViolation& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "model_demo: %s\n", e.what());
    return 1;
  }
}
