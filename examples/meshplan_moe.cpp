// meshplan-moe: run one MoE block from files, sharded over simulated ranks.
//
//   meshplan-moe --config config.json --weights block.safetensors --input in.safetensors
//                --mesh ep=4[,tp=2] --output out.safetensors [--plan NAME] [--backend cpu|cuda]
//
//   config.json   a transformers model config; its model_type picks the family
//                 (qwen3_moe, mixtral, deepseek_v3)
//   weights       one MoE block's tensors under transformers-5 names without the layer prefix:
//                 gate.weight, experts.gate_up_proj, experts.down_proj (or one tensor per
//                 expert: experts.{i}.gate_proj.weight ...), and for DeepSeek-V3
//                 gate.e_score_correction_bias and shared_experts.*; F32, BF16 or F16
//   input         hidden_states [T, H]
//   output        hidden_states [T, H] (F32) and topk_ids [T, k] (I64)
//   --mesh        axes dp, ep and tp; --plan defaults to ep (ep only), tp (tp only) or ep_sp
//
// Every rank is a thread (ThreadComm; with --backend cuda, CudaLocalComm: every rank on the
// one GPU) that reads only its pieces of the weights (shard-on-read). Computation is fp32
// (inputs are converted on reading). Exit status: 0, or 2 with the broken rule's message (an
// invalid mesh, a missing tensor, a wrong shape); 77 for --backend cuda without a GPU.
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/io/config_json.hpp"
#include "meshplan/io/moe_checkpoint.hpp"
#include "meshplan/io/safetensors.hpp"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/moe/token_layout.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#ifdef MESHPLAN_RUNNER_CUDA  // built by nvcc where CUDA is found
#include "meshplan/cuda/comm/cuda_local_comm.cuh"
#include "meshplan/cuda/moe/moe_block.cuh"
#endif

namespace mp = meshplan;
using mp::index_t;

namespace {

using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep">, mp::Axis<"tp">>;

struct Options {
  std::string config, weights, input, mesh, output, plan, backend = "cpu";
};

[[noreturn]] void refuse(mp::Message m) { throw mp::RuleViolation(m); }

template <class Block>
mp::Tensor<float> forward(Block& block, mp::ThreadComm& comm, const mp::Tensor<float>& x) {
  return block.forward(comm, x);
}

#ifdef MESHPLAN_RUNNER_CUDA
template <class Block>
mp::Tensor<float> forward(Block& block, mp::cuda::CudaLocalComm& comm, const mp::Tensor<float>& x) {
  return mp::cuda::to_host(block.forward(comm, mp::cuda::to_device(x, comm.stream())), comm.stream());
}
#endif

/// Runs the block on every rank of `World` (ThreadWorld, or CudaLocalWorld for --backend
/// cuda) and puts the ranks' rows and the routing's expert ids together.
template <class Block, class World>
void run_ranks(World& world, const mp::ModelSpec& model, const Mesh& mesh, const mp::SafetensorsFile& weights,
               const mp::Tensor<float>& x, const mp::LayoutSpec& tokens, mp::Tensor<float>& y,
               mp::Tensor<std::int64_t>& ids) {
  const index_t H = model.hidden_size, k = model.num_experts_per_tok;
  world.run([&](auto& comm) {
    const index_t r = comm.rank();
    Block block(model, mesh, r, mp::moe_weights_from<float>(weights.view()));
    std::vector<index_t> rows;  // the global token of each local row
    for (const auto& run : tokens.held_indices(0, r))
      for (index_t t = run.begin; t < run.begin + run.size; ++t) rows.push_back(t);
    std::vector<float> mine;
    for (index_t t : rows) mine.insert(mine.end(), x.data() + t * H, x.data() + (t + 1) * H);
    const mp::Tensor<float> out =
        forward(block, comm, mp::Tensor<float>({static_cast<index_t>(rows.size()), H}, std::move(mine)));
    // Ranks holding the same tokens write the same values.
    for (std::size_t i = 0; i < rows.size(); ++i) std::copy_n(out.data() + i * H, H, y.data() + rows[i] * H);
    const auto& routed = block.routed_input_rows();
    const mp::Routing routing = block.last_routing();
    for (index_t i = 0; i < routed.count; ++i)
      for (index_t s = 0; s < k; ++s)
        ids[rows[static_cast<std::size_t>(routed.input_row + i)] * k + s] = routing.expert(routed.routing_row + i, s);
  });
}

template <class Plan>
void run(const Options& o, const mp::ModelSpec& model, const Mesh& mesh) {
  const mp::MeshSpec spec(mesh);
  mp::validate(model, spec, Plan::entries);
  const mp::SafetensorsFile weights(o.weights), input(o.input);
  const mp::Tensor<float> x = input.read<float>("hidden_states");
  x.require_shape("hidden_states of '" + o.input + "'", {x.rank() == 2 ? x.dim(0) : 0, model.hidden_size});
  const index_t T = x.dim(0), H = model.hidden_size, k = model.num_experts_per_tok;
  const mp::LayoutSpec tokens = mp::moe_token_layout(model, spec, Plan::entries, T);

  mp::Tensor<float> y({T, H});
  mp::Tensor<std::int64_t> ids({T, k});
#ifdef MESHPLAN_RUNNER_CUDA
  if (o.backend == "cuda") {
    mp::cuda::CudaLocalWorld world(spec.size());
    run_ranks<mp::MoEBlock<mp::RuntimeModel, Mesh, Plan, mp::cuda::CudaBackend<float>>>(world, model, mesh, weights, x,
                                                                                        tokens, y, ids);
  }
#endif
  if (o.backend == "cpu") {
    mp::ThreadWorld world(spec.size());
    run_ranks<mp::MoEBlock<mp::RuntimeModel, Mesh, Plan>>(world, model, mesh, weights, x, tokens, y, ids);
  }

  mp::SafetensorsWriter out;
  out.add("hidden_states", y);
  out.add("topk_ids", ids);
  out.metadata("made_by", "meshplan-moe");
  out.metadata("mesh", spec.to_string());
  out.metadata("backend", o.backend);
  out.write(o.output);
  std::printf("meshplan-moe: %s block, %lld tokens, mesh %s (%lld ranks), plan %s, backend %s -> %s\n",
              std::string(mp::to_string(model.family)).c_str(), static_cast<long long>(T), spec.to_string().c_str(),
              static_cast<long long>(spec.size()), o.plan.c_str(), o.backend.c_str(), o.output.c_str());
}

/// The plan named by --plan among a family's built-in plans (given as types: nvcc cannot take
/// the plan templates as template template arguments).
template <class EP, class EPTP, class EPSP, class ETP, class TP, class TPSP>
void dispatch(const Options& o, const mp::ModelSpec& model, const Mesh& mesh) {
  if (o.plan == "ep") return run<EP>(o, model, mesh);
  if (o.plan == "ep_tp") return run<EPTP>(o, model, mesh);
  if (o.plan == "ep_sp") return run<EPSP>(o, model, mesh);
  if (o.plan == "etp") return run<ETP>(o, model, mesh);
  if (o.plan == "tp") return run<TP>(o, model, mesh);
  if (o.plan == "tp_sp") return run<TPSP>(o, model, mesh);
  (void)mp::plans::builtin_plan(model.family, o.plan);  // throws plan_known, naming the plans
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "meshplan-moe: %s needs a value (see the comment at the top of meshplan_moe.cpp)\n",
                   argv[i]);
      return 2;
    }
    std::string* field = arg == "--config"    ? &o.config
                         : arg == "--weights" ? &o.weights
                         : arg == "--input"   ? &o.input
                         : arg == "--mesh"    ? &o.mesh
                         : arg == "--output"  ? &o.output
                         : arg == "--plan"    ? &o.plan
                         : arg == "--backend" ? &o.backend
                                              : nullptr;
    if (!field) {
      std::fprintf(stderr, "meshplan-moe: unknown option %s\n", argv[i]);
      return 2;
    }
    *field = argv[++i];
  }
  try {
    for (auto [value, name] : {std::pair{&o.config, "--config"},
                               {&o.weights, "--weights"},
                               {&o.input, "--input"},
                               {&o.mesh, "--mesh"},
                               {&o.output, "--output"}})
      if (value->empty()) refuse(mp::Message::rule("runner_options") << name << " is required");
#ifdef MESHPLAN_RUNNER_CUDA
    if (o.backend == "cuda" && mp::cuda::device_count() == 0) {
      std::fprintf(stderr, "meshplan-moe: --backend cuda: no CUDA device\n");
      return 77;
    }
#else
    if (o.backend == "cuda")
      refuse(mp::Message::rule("backend_available")
             << "this meshplan-moe was built without CUDA (nvcc was not found); run with --backend cpu");
#endif
    if (o.backend != "cpu" && o.backend != "cuda")
      refuse(mp::Message::rule("backend_available") << "unknown backend '" << o.backend << "' (cpu or cuda)");

    const mp::ModelSpec model = mp::model_from_config_file(o.config);
    if (!model.is_moe())
      refuse(mp::Message::rule("model_has_experts") << "'" << o.config << "' describes a model without experts");
    const mp::MeshSpec spec = mp::MeshSpec::parse(o.mesh);
    for (std::size_t a = 0; a < spec.ndim(); ++a)
      if (spec.axis_name(a) != "dp" && spec.axis_name(a) != "ep" && spec.axis_name(a) != "tp")
        refuse(mp::Message::rule("runner_options")
               << "the mesh's axes are dp, ep and tp; '" << spec.axis_name(a) << "' is not one of them");
    auto size = [&](std::string_view axis) { return spec.has_axis(axis) ? spec.size(axis) : index_t{1}; };
    const Mesh mesh{size("dp"), size("ep"), size("tp")};
    if (o.plan.empty()) o.plan = !spec.has_axis("tp") ? "ep" : !spec.has_axis("ep") ? "tp" : "ep_sp";

    switch (model.family) {
      case mp::Family::qwen3_moe: {
        namespace p = mp::plans::qwen3_moe;
        dispatch<p::ep<"ep">, p::ep_tp<"ep", "tp">, p::ep_sp<"ep", "tp">, p::etp<"ep", "tp">, p::tp<"tp">,
                 p::tp_sp<"tp">>(o, model, mesh);
        break;
      }
      case mp::Family::mixtral: {
        namespace p = mp::plans::mixtral;
        dispatch<p::ep<"ep">, p::ep_tp<"ep", "tp">, p::ep_sp<"ep", "tp">, p::etp<"ep", "tp">, p::tp<"tp">,
                 p::tp_sp<"tp">>(o, model, mesh);
        break;
      }
      case mp::Family::deepseek_v3: {
        namespace p = mp::plans::deepseek_v3;
        dispatch<p::ep<"ep">, p::ep_tp<"ep", "tp">, p::ep_sp<"ep", "tp">, p::etp<"ep", "tp">, p::tp<"tp">,
                 p::tp_sp<"tp">>(o, model, mesh);
        break;
      }
      case mp::Family::qwen3:
        break;  // refused above: no experts
    }
  } catch (const mp::RuleViolation& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
  return 0;
}
