// The meshplan demo: a tiny Qwen3-MoE block with random weights, run on a simulated mesh
// (one thread per rank, ThreadComm), checked against the single-rank reference. `--help`
// prints the usage (kUsage below).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "demo_format.hpp"
#include "meshplan/comm/host_capacity.hpp"
#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/model/presets.hpp"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/moe/reference.hpp"
#include "meshplan/moe/token_layout.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/lower.hpp"

namespace mp = meshplan;
using mp::index_t;

namespace {

constexpr const char* kUsage = R"(usage: moe_demo [--mesh AXES] [--plan NAME] [--tokens N] [--chunk N] [--dtype f32|bf16] [--seed N]

Runs a tiny Qwen3-MoE block with random weights on simulated ranks (threads) and checks it
against the single-rank reference. Prints the block's plan table, the rows each rank's
experts computed, the bytes each collective moved, the check and the throughput.

  --mesh AXES    axes dp, ep and tp (default ep=4); an axis of size > 1 other than dp must
                 be used by the plan
  --plan NAME    tp, tp_sp, ep, ep_tp, ep_sp or etp. Default: ep on a mesh without tp, tp
                 on a mesh without ep, else ep_sp
  --tokens N     tokens in the batch (default 4096)
  --chunk N      tokens per micro-batch (default 4096)
  --dtype NAME   storage: f32 (default) or bf16
  --seed N       weights and tokens (default 1)
  --help         this text

Examples:
  moe_demo --mesh dp=2,ep=2,tp=2 --dtype bf16
  moe_demo --mesh tp=4 --plan tp_sp

Exit status: 0 if the check passed, 1 if not (or on another failure), 2 for bad options.
)";

using Model = mp::models::TinyQwen3Moe;
using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep">, mp::Axis<"tp">>;

struct Options {
  std::string mesh = "ep=4";
  std::string plan;
  index_t tokens = 4096;
  index_t chunk = 4096;
  std::string dtype = "f32";
  std::uint64_t seed = 1;
};

std::string shape(const std::vector<index_t>& s) {
  std::string r = "[";
  for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

template <class Plan, class T>
int run(const Options& o, const Mesh& mesh, std::string_view plan_name) {
  constexpr mp::ModelSpec model = Model::spec;
  const mp::MeshSpec spec(mesh);
  const index_t H = model.hidden_size, world_size = spec.size();
  mp::validate(model, spec, Plan::entries);
  enforce(mp::comm_rules::simulated_ranks_fit(spec.to_string(), world_size, 0, mp::host_capacity()));

  std::printf("meshplan demo: a Qwen3-MoE block (%s: hidden %lld, %lld experts, top-%lld), %s storage\n",
              std::string(Model::name).c_str(), static_cast<long long>(H), static_cast<long long>(model.num_experts),
              static_cast<long long>(model.num_experts_per_tok), std::is_same_v<T, float> ? "float" : "bfloat16");
  std::printf("mesh %s: %lld ranks as threads (ThreadComm); plan qwen3_moe::%s\n\n", spec.to_string().c_str(),
              static_cast<long long>(world_size), std::string(plan_name).c_str());

  // The plan table of the block's parameters, and what rank 0 holds.
  std::printf("%-44s %-14s %-30s %s\n", "parameter", "global shape", "placements", "rank 0 holds");
  for (const auto& p : mp::lower(model, spec, Plan::entries, 0)) {
    if (p.info.name.rfind("layers.*.mlp", 0) != 0) continue;
    std::string placements;
    for (std::size_t a = 0; a < p.placements.size(); ++a)
      placements += (a ? " " : "") + std::string(spec.axis_name(a)) + ":" +
                    (p.placements[a].is_replicate() ? std::string("R") : mp::to_string(p.placements[a]));
    std::printf("%-44s %-14s %-30s %s\n", std::string(p.info.name).c_str(), shape(p.global_shape).c_str(),
                placements.c_str(), shape(p.local_shape).c_str());
  }

  // Random weights and tokens; every rank slices the weights it holds.
  const mp::MoEWeights<T> weights = [&] {
    auto w = mp::random_moe_weights<float>(model, o.seed);
    if constexpr (std::is_same_v<T, float>) return w;
    else
      return mp::MoEWeights<T>{mp::convert<T>(w.router), w.correction_bias, mp::convert<T>(w.gate_up),
                               mp::convert<T>(w.down),   {},                {},
                               {}};
  }();
  mp::Tensor<T> x({o.tokens, H});
  {
    std::mt19937 rng(static_cast<unsigned>(o.seed) + 1);
    std::normal_distribution<float> normal;
    for (auto& v : x.vector()) v = mp::from_float<T>(normal(rng));
  }

  // Micro-batches of `chunk` tokens; each rank runs its share of every micro-batch.
  const index_t chunks = o.tokens == 0 ? 1 : (o.tokens + o.chunk - 1) / o.chunk;
  mp::Tensor<T> y({o.tokens, H});
  std::vector<std::vector<index_t>> rows(static_cast<std::size_t>(world_size));
  std::vector<index_t> first_expert(static_cast<std::size_t>(world_size));
  std::vector<mp::CommStats> stats(static_cast<std::size_t>(world_size));
  mp::ThreadWorld world(world_size);
  std::printf("\nrunning %lld tokens in %lld micro-batch(es) of up to %lld\n", static_cast<long long>(o.tokens),
              static_cast<long long>(chunks), static_cast<long long>(o.chunk));
  const auto start = std::chrono::steady_clock::now();
  world.run([&](mp::ThreadComm& comm) {
    const index_t r = comm.rank();
    mp::MoEBlock<Model, Mesh, Plan, mp::CpuBackend<T>> block(mesh, r, weights);
    first_expert[r] = block.first_local_expert();
    for (index_t c = 0; c < chunks; ++c) {
      const index_t begin = c * o.chunk, n = std::min(o.chunk, o.tokens - begin);
      const mp::LayoutSpec layout = mp::moe_token_layout(model, spec, Plan::entries, n);
      std::vector<T> mine;
      for (const auto& run : layout.held_indices(0, r))
        mine.insert(mine.end(), x.data() + (begin + run.begin) * H, x.data() + (begin + run.begin + run.size) * H);
      auto forward = block.forward(comm, mp::Tensor<T>({layout.local_extent(0, r), H}, std::move(mine)));
      const mp::Tensor<T>& out = forward.hidden_states;
      index_t row = 0;  // the ranks write disjoint (or identical) rows of y
      for (const auto& run : layout.held_indices(0, r))
        for (index_t t = run.begin; t < run.begin + run.size; ++t, ++row)
          std::copy_n(out.data() + row * H, H, y.data() + (begin + t) * H);
      auto& mine_rows = rows[r];
      const auto& computed = forward.state.rows_per_local_expert;
      mine_rows.resize(computed.size());
      for (std::size_t e = 0; e < mine_rows.size(); ++e) mine_rows[e] += computed[e];
      if (r == 0 && chunks > 1)
        std::printf("\r  %lld / %lld tokens (%lld%%)", static_cast<long long>(begin + n),
                    static_cast<long long>(o.tokens), static_cast<long long>(100 * (begin + n) / o.tokens)),
            std::fflush(stdout);
    }
    stats[r] = comm.stats();
  });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (chunks > 1) std::printf("\n");

  std::printf("\nrows each rank's experts computed (the tokens routed to them, from all ranks):\n");
  for (index_t r = 0; r < world_size; ++r) {
    index_t total = 0;
    std::printf("  rank %lld:", static_cast<long long>(r));
    for (std::size_t e = 0; e < rows[r].size(); ++e) {
      std::printf(" e%lld=%lld", static_cast<long long>(first_expert[r] + static_cast<index_t>(e)),
                  static_cast<long long>(rows[r][e]));
      total += rows[r][e];
    }
    std::printf("  (total %lld)\n", static_cast<long long>(total));
  }

  std::map<std::string, mp::CommStats::Entry> by_label;
  for (const auto& s : stats)
    for (const auto& [label, e] : s.by_label) {
      by_label[label].calls += e.calls;
      by_label[label].bytes += e.bytes;
    }
  std::printf("\nbytes sent by all ranks, per collective:\n");
  for (const auto& [label, e] : by_label)
    std::printf("  %-12s %6lld calls  %12s\n", label.c_str(), static_cast<long long>(e.calls), demo_format::human_bytes(e.bytes).c_str());

  // The check: the same block on one rank, plainly.
  const mp::Tensor<T> ref = mp::reference_moe_forward(model, weights, x);
  index_t differ = 0;
  double max_diff = 0, max_ref = 0;
  for (index_t i = 0; i < y.numel(); ++i) {
    differ += !(y[i] == ref[i]);
    max_diff = std::max(max_diff, static_cast<double>(std::abs(mp::to_float(y[i]) - mp::to_float(ref[i]))));
    max_ref = std::max(max_ref, static_cast<double>(std::abs(mp::to_float(ref[i]))));
  }
  constexpr bool splits_sums = !mp::moe_block_plan(Plan::entries).expert_tp_axis.empty();
  const double rtol = std::is_same_v<T, float> ? 1e-5 : 1.6e-2;
  const bool ok = splits_sums ? max_diff <= rtol * std::max(max_ref, 1e-30) : differ == 0;
  std::printf("\ncheck against the single-rank reference: ");
  if (!splits_sums)
    std::printf("%s (%lld of %lld values differ)\n", ok ? "bit-identical" : "FAILED", static_cast<long long>(differ),
                static_cast<long long>(y.numel()));
  else
    std::printf("%s (the plan splits each expert's sum over tp: largest difference %.3g, %.2g of the largest value; "
                "tolerance %.1g)\n",
                ok ? "within tolerance" : "FAILED", max_diff, max_ref > 0 ? max_diff / max_ref : 0.0, rtol);
  std::printf("throughput: %.0f tokens/s (%lld tokens in %.3f s, %lld ranks as threads)\n",
              seconds > 0 ? static_cast<double>(o.tokens) / seconds : 0.0, static_cast<long long>(o.tokens), seconds,
              static_cast<long long>(world_size));
  return ok ? 0 : 1;
}

template <class T>
int dispatch(const Options& o, const Mesh& mesh, std::string_view plan) {
  int status = 2;
  if (!mp::plans::Qwen3MoePlans::visit(plan, [&]<class Plan>() { status = run<Plan, T>(o, mesh, plan); }))
    (void)mp::plans::builtin_plan(mp::Family::qwen3_moe, plan);  // throws plan_known with the names
  return status;
}

/// A whole number from an option's value, or a refusal naming the option.
index_t number(std::string_view option, const std::string& value) {
  char* end = nullptr;
  const long long v = std::strtoll(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0')
    throw mp::RuleViolation(mp::Message::rule("demo_options") << option << " needs a whole number, not '" << value << "'");
  return static_cast<index_t>(v);
}

int demo(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (arg != "--mesh" && arg != "--tokens" && arg != "--plan" && arg != "--dtype" && arg != "--chunk" &&
        arg != "--seed")
      throw mp::RuleViolation(mp::Message::rule("demo_options") << "unknown option '" << arg << "'");
    if (i + 1 >= argc) throw mp::RuleViolation(mp::Message::rule("demo_options") << arg << " needs a value");
    std::string value = argv[++i];
    if (arg == "--mesh") o.mesh = value;
    else if (arg == "--tokens") o.tokens = number(arg, value);
    else if (arg == "--plan") o.plan = value;
    else if (arg == "--dtype") o.dtype = value;
    else if (arg == "--chunk") o.chunk = number(arg, value);
    else o.seed = static_cast<std::uint64_t>(number(arg, value));
  }
  if (o.tokens < 0 || o.chunk < 1)
    throw mp::RuleViolation(mp::Message::rule("demo_options") << "--tokens must be 0 or more and --chunk at least 1");
  const mp::MeshSpec spec = mp::MeshSpec::parse(o.mesh);
  for (std::size_t a = 0; a < spec.ndim(); ++a)
    if (spec.axis_name(a) != "dp" && spec.axis_name(a) != "ep" && spec.axis_name(a) != "tp")
      throw mp::RuleViolation(mp::Message::rule("demo_options") << "the demo's mesh has the axes dp, ep and tp; '"
                                                                << spec.axis_name(a) << "' is not one of them");
  auto size = [&](std::string_view axis) { return spec.has_axis(axis) ? spec.size(axis) : index_t{1}; };
  const Mesh mesh{size("dp"), size("ep"), size("tp")};
  std::string plan = o.plan;
  if (plan.empty()) plan = size("tp") > 1 ? (size("ep") > 1 ? "ep_sp" : "tp") : "ep";
  if (o.dtype == "f32" || o.dtype == "float32") return dispatch<float>(o, mesh, plan);
  if (o.dtype == "bf16" || o.dtype == "bfloat16") return dispatch<mp::bfloat16>(o, mesh, plan);
  throw mp::RuleViolation(mp::Message::rule("dtype_known") << "unknown dtype '" << o.dtype << "'; use f32 or bf16");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return demo(argc, argv);
  } catch (const mp::RuleViolation& e) {
    std::fprintf(stderr, "%s\n", e.what());
    if (e.rule() == "demo_options") std::fprintf(stderr, "\n%s", kUsage);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moe_demo: %s\n", e.what());
    return 1;
  }
}
