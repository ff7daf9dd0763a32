// meshplan-moe: run one MoE block from files, sharded over simulated ranks. `--help` prints
// the usage (kUsage below); docs/checkpoints.md has the details.
//
// Every rank is a thread (ThreadComm; with --backend cuda, CudaLocalComm: every rank on the
// one GPU) that reads only its pieces of the weights (shard-on-read); the ranks' outputs are
// put together by run_moe_batch, which also checks that ranks holding the same tokens agree.
// Exit status: 0; 2 for bad input or usage (the broken rule's message); 1 for any other
// failure (a message, never an abort); 77 for --backend cuda without a GPU.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include "meshplan/comm/host_capacity.hpp"
#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/io/config_json.hpp"
#include "meshplan/io/moe_checkpoint.hpp"
#include "meshplan/io/safetensors_file.hpp"
#include "meshplan/io/safetensors_writer.hpp"
#include "meshplan/io/shard_read.hpp"
#include "meshplan/moe/batch.hpp"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/moe/token_layout.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/lower.hpp"
#include "runner_options.hpp"
#ifdef MESHPLAN_RUNNER_CUDA  // built by nvcc where CUDA is found
#include "meshplan/cuda/comm/cuda_local_comm.cuh"
#include "meshplan/cuda/moe/cuda_backend.cuh"
#include "meshplan/moe/moe_block.hpp"
#endif

namespace mp = meshplan;
using mp::index_t;

namespace {

constexpr const char* kUsage = R"(usage: meshplan-moe --config FILE --weights FILE --input FILE --output FILE --mesh AXES
                    [--plan NAME] [--prefix TEXT] [--backend cpu|cuda] [--threads N]
                    [--grad-output FILE --gradients FILE]

Runs one MoE block of a transformers model (Qwen3-MoE, Mixtral, DeepSeek-V3) on simulated
ranks, each reading only its pieces of the weights, and writes the block's output.

  --config FILE    the model's transformers config.json; model_type picks the family
  --weights FILE   safetensors with the block's tensors under transformers-5 names:
                   gate.weight, experts.gate_up_proj, experts.down_proj (or one tensor per
                   expert, experts.{i}.gate_proj.weight ...), for DeepSeek-V3 also
                   gate.e_score_correction_bias and shared_experts.*; F32, BF16 or F16
  --prefix TEXT    the block's name prefix in --weights (default: none), e.g.
                   model.layers.3.mlp. to read a block out of a model checkpoint
  --input FILE     safetensors with hidden_states [tokens, H] or [batch, tokens, H]
  --output FILE    written: hidden_states (F32, the input's shape) and topk_ids (I64,
                   [batch * tokens, top_k]: each token's experts, best first, as
                   transformers' routers return them)
  --mesh AXES      the mesh, axes dp, ep and tp: e.g. ep=4 or dp=2,ep=2,tp=2. An axis of
                   size > 1 must be used by the plan, except dp (data parallelism)
  --plan NAME      tp, tp_sp, ep, ep_tp, ep_sp or etp (docs/plans.md). Default: ep on a
                   mesh without tp, tp on a mesh without ep, else ep_sp
  --backend NAME   cpu (default), or cuda: every rank on one GPU
  --grad-output FILE  safetensors with grad_output [tokens, H] or [batch, tokens, H]: the
                   gradient of a loss with respect to the block's output; runs the
                   backward too (CPU backend) and writes the gradients to --gradients
  --gradients FILE written with --grad-output: hidden_states (the input's gradient, the
                   input's shape) and every parameter's gradient under its transformers
                   name with --prefix (gate.weight, experts.gate_up_proj, ...), F32
  --threads N      CPU threads per rank (default: the hardware threads divided by the
                   ranks, at least 1)
  --help           this text

Examples:
  meshplan-moe --config config.json --weights block.safetensors --input in.safetensors \
               --output out.safetensors --mesh ep=4
  meshplan-moe --config config.json --weights model.safetensors --prefix model.layers.1.mlp. \
               --input in.safetensors --output out.safetensors --mesh ep=2,tp=2 --plan etp

Exit status: 0; 2 for bad input (the broken rule is named); 1 for other failures;
77 for --backend cuda without a GPU.
)";

using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep">, mp::Axis<"tp">>;

struct Options {
  std::string config, weights, prefix, input, mesh, output, plan, backend = "cpu", threads, grad_output, gradients;
  bool help = false;
};

using mp::runner::refuse;
using mp::runner::UsageError;

Options parse(int argc, char** argv) {
  Options o;
  o.help = mp::runner::parse_options(argc, argv,
                                     {{"--config", &o.config},
                                      {"--weights", &o.weights},
                                      {"--prefix", &o.prefix},
                                      {"--input", &o.input},
                                      {"--mesh", &o.mesh},
                                      {"--output", &o.output},
                                      {"--plan", &o.plan},
                                      {"--backend", &o.backend},
                                      {"--threads", &o.threads},
                                      {"--grad-output", &o.grad_output},
                                      {"--gradients", &o.gradients}});
  if (o.help) return o;
  mp::runner::require({{"--config", &o.config},
                       {"--weights", &o.weights},
                       {"--input", &o.input},
                       {"--mesh", &o.mesh},
                       {"--output", &o.output}});
  if (o.grad_output.empty() != o.gradients.empty())
    throw UsageError(mp::runner::options_rule() << "--grad-output and --gradients go together: one is the "
                                                   "output's gradient read, the other the gradients written");
  return o;
}

/// The block's view of the config: a DeepSeek-V3 config whose layers are all dense still
/// describes the MoE block transformers builds from it (DeepseekV3MoE(config)).
mp::ModelSpec block_model(mp::ModelSpec model, const Options& o) {
  if (!model.is_moe())
    refuse(mp::Message::rule("model_has_experts") << "'" << o.config << "' describes a model without experts");
  if (model.moe_layers() == 0) {
    std::fprintf(stderr,
                 "meshplan-moe: note: every layer of '%s' is dense (first_k_dense_replace %lld, num_hidden_layers "
                 "%lld); running the MoE block its expert settings describe\n",
                 o.config.c_str(), static_cast<long long>(model.first_k_dense_replace),
                 static_cast<long long>(model.num_hidden_layers));
    model.first_k_dense_replace = model.num_hidden_layers - 1;
  }
  return model;
}

/// The hidden states as rows [tokens, H], and the shape they came in: [batch, tokens, H] is
/// flattened, and the output takes the input's shape again.
struct Rows {
  mp::Tensor<float> x;
  std::vector<index_t> shape;
};

Rows read_rows(const mp::SafetensorsFile& input, const std::string& path, index_t H,
               const char* name = "hidden_states") {
  mp::Tensor<float> x = input.read<float>(name);
  std::vector<index_t> shape = x.shape();
  if (!((shape.size() == 2 || shape.size() == 3) && shape.back() == H)) {
    mp::Message m = mp::Message::rule("shape_matches");
    m << name << " in '" << path << "' has shape " << shape << "; expected [tokens, " << H
      << "] or [batch, tokens, " << H << "] (hidden_size " << H << " from the config)";
    refuse(m);
  }
  const index_t rows = x.numel() / H;
  return {mp::Tensor<float>({rows, H}, std::move(x.vector())), std::move(shape)};
}

/// Refuses, before any thread starts, a mesh this machine cannot simulate: its ranks each
/// hold their pieces of the block's weights (fp32) and a few copies of their rows.
void check_capacity(const mp::ModelSpec& model, const mp::MeshSpec& spec, std::span<const mp::EntrySpec> plan,
                    const mp::LayoutSpec& tokens) {
  const mp::HostCapacity cap = mp::host_capacity();
  enforce(mp::comm_rules::simulated_ranks_fit(spec.to_string(), spec.size(), 0, cap));
  const index_t H = model.hidden_size, k = model.num_experts_per_tok;
  double bytes = 0;
  for (index_t r = 0; r < spec.size(); ++r) {
    for (const mp::LoweredParam& p : mp::lower(model, spec, plan, r)) {
      const std::string_view name = p.info.name;
      if (name.starts_with("layers.*.mlp.gate.") || name.starts_with("layers.*.mlp.experts.") ||
          name.starts_with("layers.*.mlp.shared_experts."))
        bytes += 4.0 * static_cast<double>(mp::element_count(p.local_shape));
    }
    // Input, gathered and returned expert rows, partial sums, output.
    bytes += 4.0 * static_cast<double>(tokens.local_extent(0, r) * H) * static_cast<double>(2 * k + 4);
  }
  enforce(mp::comm_rules::simulated_ranks_fit(spec.to_string(), spec.size(), bytes, cap));
}

/// The forward with training on, then the backward with this rank's rows of dy; the
/// rank's gradients go to grads[rank].
struct TrainingStep {
  const mp::LayoutSpec& tokens;
  const mp::Tensor<float>& dy;
  std::vector<mp::MoEGradients>& grads;

  template <class Block>
  auto operator()(Block& block, mp::ThreadComm& comm, const mp::Tensor<float>& x) const {
    block.set_training(mp::Training::keep_activations);
    auto f = block.forward(comm, x);
    grads[static_cast<std::size_t>(comm.rank())] = block.backward(comm, f.state, mp::held_rows(tokens, dy, comm.rank()));
    return f;
  }
};

/// Puts the ranks' gradients together (each piece where the plan puts it; replicas hold the
/// same bits) and writes them under transformers' names.
void write_gradients(const Options& o, const mp::ModelSpec& model, const mp::MeshSpec& spec,
                     std::span<const mp::EntrySpec> plan, const mp::LayoutSpec& tokens,
                     const std::vector<index_t>& in_shape, const std::vector<mp::MoEGradients>& grads) {
  const index_t H = model.hidden_size;
  mp::SafetensorsWriter out;
  mp::Tensor<float> dx({tokens.global_extents()[0], H});
  for (index_t r = 0; r < spec.size(); ++r) {
    index_t row = 0;
    const mp::MoEGradients& g = grads[static_cast<std::size_t>(r)];
    for (index_t t : mp::held_tokens(tokens, r)) std::copy_n(g.hidden_states.data() + (row++) * H, H, dx.data() + t * H);
  }
  out.add("hidden_states", mp::Tensor<float>(in_shape, std::move(dx.vector())));
  for (const mp::LoweredParam& p : mp::lower(model, spec, plan, 0)) {
    const std::string_view name = p.info.name;
    if (!name.starts_with("layers.*.mlp.")) continue;
    const std::string local(name.substr(std::string_view("layers.*.mlp.").size()));
    mp::Tensor<float> whole(p.global_shape);
    bool found = false;
    for (index_t r = 0; r < spec.size(); ++r)
      for (const auto& [n, piece] : grads[static_cast<std::size_t>(r)].named())
        if (n == local) {
          mp::place_piece(p.layout(spec), r, *piece, whole);
          found = true;
        }
    if (found) out.add(o.prefix + local, whole);
  }
  out.metadata("made_by", "meshplan-moe");
  out.metadata("mesh", spec.to_string());
  out.write(o.gradients);
}

#ifdef MESHPLAN_RUNNER_CUDA
/// Host rows in, host rows out, the state as the block returns it.
struct DeviceForward {
  template <class Block>
  auto operator()(Block& block, mp::cuda::CudaLocalComm& comm, const mp::Tensor<float>& x) const {
    auto y = block.forward(comm, mp::cuda::to_device(x, comm.stream()));
    struct {
      mp::Tensor<float> hidden_states;
      typename Block::State state;
    } host{mp::cuda::to_host(y.hidden_states, comm.stream()), std::move(y.state)};
    return host;
  }
};
#endif

template <class Plan>
void run(const Options& o, const mp::ModelSpec& model, const mp::MeshSpec& spec) {
  const Mesh mesh{spec.has_axis("dp") ? spec.size("dp") : 1, spec.has_axis("ep") ? spec.size("ep") : 1,
                  spec.has_axis("tp") ? spec.size("tp") : 1};
  // The block sees the mesh in dp, ep, tp order, an axis not given having size 1.
  const mp::MeshSpec block_spec(mesh);
  mp::validate(model, block_spec, Plan::entries);
  const mp::SafetensorsFile weights(o.weights), input(o.input);
  const index_t H = model.hidden_size;
  const auto [x, in_shape] = read_rows(input, o.input, H);
  const index_t T = x.dim(0);
  const mp::LayoutSpec tokens = mp::moe_token_layout(model, block_spec, Plan::entries, T);
  check_capacity(model, block_spec, Plan::entries, tokens);

  const mp::MoEWeightLoader<float> load = mp::moe_weights_from<float>(weights.view(), o.prefix);
  if (!o.grad_output.empty() && o.backend != "cpu")
    throw UsageError(mp::runner::options_rule()
                     << "--grad-output runs the backward, which the " << o.backend << " backend does not have yet; use --backend cpu");
  mp::MoEBatchResult<float> result;
#ifdef MESHPLAN_RUNNER_CUDA
  if (o.backend == "cuda") {
    using Block = mp::MoEBlock<mp::RuntimeModel, Mesh, Plan, mp::cuda::CudaBackend<float>>;
    mp::cuda::CudaLocalWorld world(block_spec.size());
    result = mp::run_moe_batch(world, tokens, x, [&](index_t r) { return Block(model, mesh, r, load); },
                               DeviceForward{});
  }
#endif
  std::vector<mp::MoEGradients> grads;  // per rank, with --grad-output
  if (o.backend == "cpu") {
    using Backend = mp::CpuBackend<float>;
    using Block = mp::MoEBlock<mp::RuntimeModel, Mesh, Plan, Backend>;
    const int threads = mp::runner::threads_per_rank(o.threads, block_spec.size());
    mp::ThreadWorld world(block_spec.size());
    auto make = [&](index_t r) { return Block(model, mesh, r, load, Backend(threads)); };
    if (o.grad_output.empty()) {
      result = mp::run_moe_batch(world, tokens, x, make);
    } else {
      const mp::SafetensorsFile dy_file(o.grad_output);
      const auto [dy, dy_shape] = read_rows(dy_file, o.grad_output, H, "grad_output");
      if (dy_shape != in_shape)
        refuse(mp::Message::rule("shape_matches") << "grad_output in '" << o.grad_output << "' has shape " << dy_shape
                                                  << "; the output's gradient has the input's shape " << in_shape);
      grads.resize(static_cast<std::size_t>(block_spec.size()));
      result = mp::run_moe_batch(world, tokens, x, make, TrainingStep{tokens, dy, grads});
    }
  }
  if (result.disagreements() != 0)
    throw std::runtime_error("meshplan-moe: internal error: ranks holding the same tokens disagree (" +
                             std::to_string(result.output_mismatches) + " output values, " +
                             std::to_string(result.routing_mismatches) + " expert ids, " +
                             std::to_string(result.unrouted_tokens) + " tokens routed by no rank)");

  // The output keeps the input's shape, [tokens, H] or [batch, tokens, H]; the expert ids
  // are [batch * tokens, top_k], as transformers' routers return them.
  mp::SafetensorsWriter out;
  out.add("hidden_states", mp::Tensor<float>(in_shape, std::move(result.hidden_states.vector())));
  out.add("topk_ids", result.topk_ids);
  out.metadata("made_by", "meshplan-moe");
  out.metadata("mesh", spec.to_string());
  out.metadata("plan", o.plan);
  out.metadata("backend", o.backend);
  out.write(o.output);
  if (!grads.empty()) write_gradients(o, model, block_spec, Plan::entries, tokens, in_shape, grads);
  const double s = result.forward_seconds;
  std::printf(
      "meshplan-moe: %s block, %lld tokens, mesh %s (%lld ranks), plan %s, backend %s -> %s\n"
      "meshplan-moe: forward %.3f ms (slowest rank), %.0f tokens/s\n",
      std::string(mp::to_string(model.family)).c_str(), static_cast<long long>(T), spec.to_string().c_str(),
      static_cast<long long>(spec.size()), o.plan.c_str(), o.backend.c_str(), o.output.c_str(), s * 1e3,
      s > 0 ? static_cast<double>(T) / s : 0.0);
}

int run_main(int argc, char** argv) {
  Options o = parse(argc, argv);
  if (o.help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
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

  const mp::ModelSpec model = block_model(mp::model_from_config_file(o.config), o);
  const mp::MeshSpec spec = mp::runner::runner_mesh(o.mesh, true);
  if (o.plan.empty()) o.plan = mp::runner::default_plan(spec, true);

  mp::plans::with_moe_builtin_plan(model.family, o.plan, [&]<class Plan>() { run<Plan>(o, model, spec); });
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return mp::runner::guarded_main({"meshplan-moe", kUsage, "use a smaller mesh or fewer tokens"},
                                  [&] { return run_main(argc, argv); });
}
