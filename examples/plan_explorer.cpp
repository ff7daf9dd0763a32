// The plan explorer: a built-in plan of a model preset on a mesh, as a parameter table and
// a cost model.
//
//   plan_explorer --model Qwen3-30B-A3B --mesh ep=8,tp=4 --plan ep_tp
//                 [--dtype bf16] [--tokens 4096] [--rank 0] [--world N]
//   plan_explorer --config path/to/config.json --mesh ep=8 --plan ep     (a transformers config)
//   plan_explorer --list
//
// An invalid choice prints the broken rule's message and exits with status 2.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "meshplan/io/config_json.hpp"
#include "meshplan/meshplan.hpp"
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/cost_model.hpp"
#include "meshplan/plan/lower.hpp"

namespace mp = meshplan;

namespace {

std::string bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", b, units[u]);
  return buf;
}

std::string shape(const std::vector<mp::index_t>& s) {
  std::string r = "[";
  for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

std::string placements(const std::vector<mp::PlacementSpec>& ps, const mp::MeshSpec& mesh) {
  std::string r;
  for (std::size_t a = 0; a < ps.size(); ++a) {
    std::string p = mp::to_string(ps[a]);
    if (ps[a].is_replicate()) p = "R";
    r += (a ? " " : "") + std::string(mesh.axis_name(a)) + ":" + p;
  }
  return r;
}

void list() {
  std::puts("model presets (--model):");
  for (const auto& p : mp::models::all_presets) {
    std::printf("  %-18s %s\n", std::string(p.name).c_str(), std::string(mp::to_string(p.spec.family)).c_str());
  }
  std::puts("\nbuilt-in plans (--plan), on mesh axes named ep and tp:");
  for (mp::Family f : {mp::Family::qwen3_moe, mp::Family::mixtral, mp::Family::deepseek_v3, mp::Family::qwen3}) {
    std::printf("  %s:\n", std::string(mp::to_string(f)).c_str());
    for (const auto& p : mp::plans::builtin_plans(f))
      std::printf("    %-7s %s\n", std::string(p.name).c_str(), std::string(p.summary).c_str());
  }
}

void print_section(const mp::CostSection& s) {
  if (s.forward.empty() && s.backward.empty()) return;
  std::printf("\n  %s (x%lld):\n", s.name.c_str(), static_cast<long long>(s.count));
  std::printf("    %-9s %-46s %-5s %-15s %6s %12s %12s\n", "pass", "where", "axis", "collective", "ranks", "payload",
              "sent/rank");
  auto rows = [](const char* pass, const std::vector<mp::CollectiveCost>& cs) {
    for (const auto& c : cs)
      std::printf("    %-9s %-46s %-5s %-15s %6lld %12s %12s\n", pass, c.where.c_str(), c.axis.c_str(),
                  std::string(mp::to_string(c.collective)).c_str(), static_cast<long long>(c.group),
                  bytes(c.payload_bytes).c_str(), bytes(c.sent_bytes).c_str());
  };
  rows("forward", s.forward);
  rows("backward", s.backward);
  std::printf("    per layer: forward %s, backward %s sent per rank\n", bytes(mp::CostSection::sent(s.forward)).c_str(),
              bytes(mp::CostSection::sent(s.backward)).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_name, config_path, mesh_text, plan_name, dtype = "bf16";
  mp::index_t tokens = 4096, rank = 0, world = 0;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", argv[i]);
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--list") {
      list();
      return 0;
    } else if (arg == "--model") model_name = value();
    else if (arg == "--config") config_path = value();
    else if (arg == "--mesh") mesh_text = value();
    else if (arg == "--plan") plan_name = value();
    else if (arg == "--dtype") dtype = value();
    else if (arg == "--tokens") tokens = std::atoll(value().c_str());
    else if (arg == "--rank") rank = std::atoll(value().c_str());
    else if (arg == "--world") world = std::atoll(value().c_str());
    else {
      std::fprintf(stderr, "unknown option %s; see --list and the comment at the top of plan_explorer.cpp\n", argv[i]);
      return 2;
    }
  }
  if ((model_name.empty() == config_path.empty()) || mesh_text.empty() || plan_name.empty()) {
    std::fprintf(stderr,
                 "usage: plan_explorer --model <preset> | --config <config.json> --mesh <axis=size,...> --plan <name> [--dtype bf16] "
                 "[--tokens 4096] [--rank 0] [--world N]\n       plan_explorer --list\n");
    return 2;
  }

  try {
    const mp::ModelSpec model =
        config_path.empty() ? mp::models::preset(model_name) : mp::model_from_config_file(config_path);
    if (model_name.empty()) model_name = config_path;
    const mp::MeshSpec mesh = mp::MeshSpec::parse(mesh_text);
    const auto& plan = mp::plans::builtin_plan(model.family, plan_name);
    if (world > 0) mp::validate_world_size(mesh, world);
    mp::CostInputs inputs{mp::parse_dtype(dtype), tokens, 0};
    if (tokens < 1) throw mp::RuleViolation(mp::Message::rule("tokens_positive") << "--tokens must be at least 1");
    const auto params = mp::lower(model, mesh, plan.entries, rank);  // validates
    const auto cost = mp::cost_model(model, mesh, plan.entries, inputs, rank);
    const double b = static_cast<double>(mp::size_of(inputs.dtype));

    std::printf("model  %s (%s): %lld layers, hidden %lld", model_name.c_str(),
                std::string(mp::to_string(model.family)).c_str(), static_cast<long long>(model.num_hidden_layers),
                static_cast<long long>(model.hidden_size));
    if (model.is_moe())
      std::printf(", %lld experts, top-%lld", static_cast<long long>(model.num_experts),
                  static_cast<long long>(model.num_experts_per_tok));
    std::printf("\nmesh   %s (%lld ranks); rank %lld at", mesh.to_string().c_str(), static_cast<long long>(mesh.size()),
                static_cast<long long>(rank));
    auto coords = mesh.coordinates(rank);
    for (std::size_t a = 0; a < coords.size(); ++a)
      std::printf(" %s=%lld", std::string(mesh.axis_name(a)).c_str(), static_cast<long long>(coords[a]));
    std::printf("\nplan   %s: %s\n\n", plan_name.c_str(), std::string(plan.summary).c_str());

    std::printf("%-48s %-18s %-34s %-18s %6s %11s\n", "parameter", "global shape", "placements", "local shape",
                "count", "bytes/rank");
    for (const auto& p : params)
      std::printf("%-48s %-18s %-34s %-18s %6lld %11s\n", std::string(p.info.name).c_str(),
                  shape(p.global_shape).c_str(), placements(p.placements, mesh).c_str(), shape(p.local_shape).c_str(),
                  static_cast<long long>(p.info.count),
                  bytes(static_cast<double>(p.local_elements() * p.info.count) * b).c_str());
    std::printf("\nparameters per rank: %s (%s)\n", bytes(cost.param_bytes).c_str(), std::string(mp::to_string(inputs.dtype)).c_str());

    std::printf("\ncollectives, %s, %lld tokens per tensor-parallel group, top-%lld:\n",
                std::string(mp::to_string(inputs.dtype)).c_str(), static_cast<long long>(tokens),
                static_cast<long long>(cost.top_k));
    for (const auto& s : cost.sections) print_section(s);
    std::printf("\n  all layers, forward + backward: %s sent per rank per micro-batch\n",
                bytes(cost.sent_per_step()).c_str());
    std::printf("  gradient all-reduce of replicated parameters: %s sent per rank per step\n",
                bytes(cost.grad_sync_bytes).c_str());
    for (const auto& e : cost.ep) {
      std::printf("\nexpert parallelism on '%s' (%lld ranks), per MoE layer forward, per rank, same tokens:\n",
                  e.axis.c_str(), static_cast<long long>(e.ep));
      std::printf("  all-to-all-v of routed rows (meshplan):   %12s   (%lld tokens x top-%lld rows out and back)\n",
                  bytes(e.all_to_all_sent).c_str(), static_cast<long long>(e.tokens),
                  static_cast<long long>(cost.top_k));
      std::printf("  all-reduce of full activations (transformers' EP): %s   (the %lld-rank group's %lld tokens on "
                  "every rank, attention repeated %lldx)\n",
                  bytes(e.all_reduce_sent).c_str(), static_cast<long long>(e.ep),
                  static_cast<long long>(e.tokens * e.ep), static_cast<long long>(e.redundant_attention));
      if (e.all_to_all_sent > 0)
        std::printf("  ratio: transformers' EP sends %.2fx the bytes\n", e.all_reduce_sent / e.all_to_all_sent);
    }
  } catch (const mp::RuleViolation& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
  return 0;
}
