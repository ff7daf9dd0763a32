// The MoE block on a GPU: a Qwen3-MoE block with random weights on N expert-parallel ranks
// sharing one GPU (CudaLocalComm), checked against the same block on one rank (bit for bit)
// and, for the tiny model, against the CPU reference (within rounding).
//
//   moe_gpu_demo [--ranks 4] [--tokens 4096] [--model tiny|qwen3-30b] [--dtype bf16|f32]
//
// Prints the path the experts take (fused kernels or cuBLAS), the rows per rank, the check
// and the time of a forward on all ranks. Exit status: 0 if the checks passed, 1 if not, 2
// on bad options, 77 without a GPU.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "meshplan/cuda/comm/cuda_local_comm.cuh"
#include "meshplan/cuda/moe/cuda_backend.cuh"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/model/presets.hpp"
#include "meshplan/moe/reference.hpp"
#include "meshplan/moe/token_layout.hpp"
#include "meshplan/plan/builtin/registry.hpp"

namespace mp = meshplan;
using mp::index_t;

namespace {

using Mesh = mp::DeviceMesh<mp::Axis<"ep">>;
using Plan = mp::plans::qwen3_moe::ep<"ep">;

struct Options {
  index_t ranks = 4, tokens = 4096;
  std::string model = "tiny", dtype = "bf16";
};

template <class T>
std::vector<mp::Tensor<T>> forward_all(const mp::ModelSpec& model, index_t ranks, const mp::MoEWeights<T>& w,
                                       const mp::Tensor<T>& x, double* ms) {
  using Block = mp::MoEBlock<mp::RuntimeModel, Mesh, Plan, mp::cuda::CudaBackend<T>>;
  const Mesh mesh{ranks};
  const auto layout = mp::moe_token_layout(model, mp::MeshSpec(mesh), Plan::entries, x.dim(0));
  std::vector<mp::Tensor<T>> outs(static_cast<std::size_t>(ranks));
  std::vector<double> times(static_cast<std::size_t>(ranks));
  mp::cuda::CudaLocalWorld world(ranks);
  world.run([&](mp::cuda::CudaLocalComm& comm) {
    const index_t r = comm.rank();
    Block block(model, mesh, r, w);
    std::vector<T> mine;
    for (const auto& run : layout.held_indices(0, r))
      mine.insert(mine.end(), x.data() + run.begin * x.dim(1), x.data() + (run.begin + run.size) * x.dim(1));
    const auto input = mp::cuda::to_device(mp::Tensor<T>({layout.local_extent(0, r), x.dim(1)}, mine), comm.stream());
    (void)block.forward(comm, input);  // warm-up: workspaces, cuBLAS handles
    comm.barrier(comm.world_group());
    const auto start = std::chrono::steady_clock::now();
    auto y = block.forward(comm, input);
    comm.barrier(comm.world_group());
    times[static_cast<std::size_t>(r)] =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    outs[static_cast<std::size_t>(r)] = mp::cuda::to_host(y.hidden_states, comm.stream());
  });
  *ms = times[0];
  return outs;
}

template <class T>
int run(const Options& o) {
  mp::ModelSpec model = o.model == "tiny" ? mp::models::TinyQwen3Moe::spec : mp::models::Qwen3_30B_A3B::spec;
  const bool bf16 = std::is_same_v<T, mp::bfloat16>;
  const int sm = mp::cuda::current_sm();
  std::printf("model %s (H %lld, I %lld, E %lld, top-%lld), %lld tokens, %s, %lld ranks on one GPU (sm_%d)\n",
              o.model.c_str(), static_cast<long long>(model.hidden_size),
              static_cast<long long>(model.moe_intermediate_size), static_cast<long long>(model.num_experts),
              static_cast<long long>(model.num_experts_per_tok), static_cast<long long>(o.tokens), o.dtype.c_str(),
              static_cast<long long>(o.ranks), sm);
  const mp::cuda::ExpertPath path = mp::cuda::device_expert_path(bf16);
  std::printf("experts: %s (%s)\n", path == mp::cuda::ExpertPath::cublas ? "cuBLAS per expert" : "fused grouped kernels",
              mp::cuda::to_string(path));
  const auto w = [&] {
    auto f = mp::random_moe_weights<float>(model, 1);
    if constexpr (bf16)
      return mp::MoEWeights<T>{
          mp::convert<T>(f.router), f.correction_bias, mp::convert<T>(f.gate_up), mp::convert<T>(f.down), {}, {}, {}};
    else
      return f;
  }();
  mp::Tensor<T> x({o.tokens, model.hidden_size});
  std::srand(7);
  for (auto& v : x.vector()) v = mp::from_float<T>(static_cast<float>(std::rand()) / RAND_MAX * 2.0f - 1.0f);

  double ms_one = 0, ms_all = 0;
  const auto one = forward_all<T>(model, 1, w, x, &ms_one);
  const auto all = forward_all<T>(model, o.ranks, w, x, &ms_all);
  // The ranks' rows, in order, against the single rank's.
  std::vector<T> joined;
  for (const auto& t : all) joined.insert(joined.end(), t.vector().begin(), t.vector().end());
  index_t differ = 0;
  for (std::size_t i = 0; i < joined.size(); ++i) differ += !(joined[i] == one[0].vector()[i]);
  std::printf("%lld ranks against 1 rank: %s (%lld of %lld values differ)\n", static_cast<long long>(o.ranks),
              differ == 0 ? "bit-identical" : "DIFFERENT", static_cast<long long>(differ),
              static_cast<long long>(joined.size()));
  bool ok = differ == 0;
  if (o.model == "tiny") {
    const mp::Tensor<T> ref = mp::reference_moe_forward(model, w, x);
    double diff = 0, scale = 1e-30;
    for (index_t i = 0; i < ref.numel(); ++i) {
      diff = std::max(diff, static_cast<double>(std::abs(mp::to_float(ref[i]) - mp::to_float(one[0][i]))));
      scale = std::max(scale, static_cast<double>(std::abs(mp::to_float(ref[i]))));
    }
    const double tolerance = bf16 ? 1.6e-2 : 1e-4;
    std::printf("1 GPU rank against the CPU reference: largest difference %.3g of %.3g (%s, tolerance %.3g)\n", diff,
                scale, diff <= tolerance * scale ? "within tolerance" : "OUT OF TOLERANCE", tolerance);
    ok = ok && diff <= tolerance * scale;
  }
  std::printf("forward: 1 rank %.3f ms, %lld ranks %.3f ms (%.0f tokens/s)\n", ms_one, static_cast<long long>(o.ranks),
              ms_all, static_cast<double>(o.tokens) / (ms_all * 1e-3));
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--ranks")
      o.ranks = std::atoll(next().c_str());
    else if (a == "--tokens")
      o.tokens = std::atoll(next().c_str());
    else if (a == "--model")
      o.model = next();
    else if (a == "--dtype")
      o.dtype = next();
    else {
      std::fprintf(stderr,
                   "usage: moe_gpu_demo [--ranks 4] [--tokens 4096] [--model tiny|qwen3-30b] [--dtype bf16|f32]\n");
      return 2;
    }
  }
  if ((o.model != "tiny" && o.model != "qwen3-30b") || (o.dtype != "bf16" && o.dtype != "f32") || o.ranks < 1 ||
      o.tokens < 0) {
    std::fprintf(stderr, "moe_gpu_demo: bad options (see --help)\n");
    return 2;
  }
  if (mp::cuda::device_count() == 0) {
    std::fprintf(stderr, "moe_gpu_demo: no CUDA device\n");
    return 77;
  }
  try {
    return o.dtype == "bf16" ? run<mp::bfloat16>(o) : run<float>(o);
  } catch (const mp::RuleViolation& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
}
