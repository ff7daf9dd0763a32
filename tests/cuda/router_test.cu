// DeviceRouter against the CPU router (cpu/router.hpp), for the three router families and
// for real expert counts: logits bit for bit (both sum over the hidden dim in order, with
// separate fp32 multiplies and adds), the chosen experts exactly, the weights within 1e-5
// relative. The weights pass through exp: CUDA's expf is within 2 ulp, glibc's exp within
// 1; a softmax weight is one exp divided by a sum of E of them (E <= 256 here), so they may
// differ by some tens of ulp, and 1e-5 is about 80 ulp. Exp is monotonic in both, so the
// ranking of the softmax routers' experts, and with it their choice, is the same.
// DeepSeek-V3 ranks sigmoid(logit) + bias, and two experts' values within a few ulp may
// swap: tokens with such a near-tie (cuda_support::near_tie) are counted, not compared, and
// must stay rare.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "cuda_support.hpp"
#include "meshplan/cpu/router.hpp"
#include "meshplan/cuda/router/device_router.cuh"
#include "meshplan/model/presets.hpp"

namespace mp = meshplan;
using mp::index_t;
using namespace cuda_support;

namespace {

struct DeviceRouting {
  std::vector<std::int32_t> ids;
  std::vector<float> weights;
  std::vector<float> logits;
  unsigned long long first_bad = mp::cuda::no_bad_logit;
};

template <class T>
DeviceRouting device_route(const mp::ModelSpec& m, const mp::Tensor<T>& x, const mp::Tensor<T>& gate,
                           const std::vector<float>& bias) {
  using D = mp::cuda::device_type_t<T>;
  const index_t tokens = x.dim(0), k = m.num_experts_per_tok, E = m.num_experts;
  auto d_x = upload(x.vector());
  auto d_gate = upload(gate.vector());
  auto d_bias = upload(bias);
  mp::cuda::DeviceBuffer<std::int32_t> ids(static_cast<std::size_t>(tokens * k));
  mp::cuda::DeviceBuffer<float> weights(static_cast<std::size_t>(tokens * k)),
      logits(static_cast<std::size_t>(tokens * E));
  mp::cuda::DeviceBuffer<unsigned long long> first_bad(1);
  MESHPLAN_CUDA_CHECK(cudaMemset(first_bad.data(), 0xff, sizeof(unsigned long long)));
  mp::cuda::DeviceRouter::route(reinterpret_cast<const D*>(d_x.data()), reinterpret_cast<const D*>(d_gate.data()),
                                bias.empty() ? nullptr : d_bias.data(), mp::cuda::RouterParams::of(m), tokens,
                                ids.data(), weights.data(), logits.data(), first_bad.data(), nullptr);
  return {download(ids), download(weights), download(logits), download(first_bad)[0]};
}

template <class T>
mp::Tensor<T> normal_tensor(std::vector<index_t> shape, float scale, std::uint32_t seed) {
  mp::Tensor<T> t(std::move(shape));
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  for (auto& v : t.vector()) v = mp::from_float<T>(scale * normal(rng));
  return t;
}

template <class T>
void check_family(mp::ModelSpec m, index_t tokens) {
  INFO(mp::to_string(m.family) << ": " << m.num_experts << " experts, top-" << m.num_experts_per_tok << ", hidden "
                               << m.hidden_size << ", " << tokens << " tokens");
  const index_t H = m.hidden_size, E = m.num_experts;
  const auto x = normal_tensor<T>({tokens, H}, 1.0f, static_cast<std::uint32_t>(E + tokens));
  const auto gate = normal_tensor<T>({E, H}, 1.0f / std::sqrt(static_cast<float>(H)), static_cast<std::uint32_t>(E));
  std::vector<float> bias;
  if (m.router() == mp::RouterKind::sigmoid_group_topk) {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-0.1f, 0.1f);
    for (index_t e = 0; e < E; ++e) bias.push_back(u(rng));
  }
  const mp::Tensor<float> logits = mp::cpu::router_logits(x, gate);
  const mp::Routing cpu = mp::cpu::route(m, logits, bias);
  const DeviceRouting gpu = device_route(m, x, gate, bias);

  CHECK(same_bits(gpu.logits, logits.vector()));
  REQUIRE(gpu.ids.size() == cpu.experts.size());
  REQUIRE(gpu.weights.size() == cpu.weights.size());
  const index_t k = m.num_experts_per_tok;
  index_t ties = 0, different = 0;
  double worst = 0;
  for (index_t t = 0; t < tokens; ++t) {
    if (near_tie(m, logits.row(t), bias)) {
      ++ties;
      continue;
    }
    for (index_t s = 0; s < k; ++s) {
      const auto i = static_cast<std::size_t>(t * k + s);
      different += gpu.ids[i] != cpu.experts[i];
      worst = std::max(worst, std::abs(static_cast<double>(gpu.weights[i]) - cpu.weights[i]) /
                                  std::max(1e-30, std::abs(static_cast<double>(cpu.weights[i]))));
    }
  }
  CHECK(different == 0);
  CHECK(ties <= tokens / 100);
  CHECK(worst <= 1e-5);
  CHECK(gpu.first_bad == mp::cuda::no_bad_logit);
}

}  // namespace

TEMPLATE_TEST_CASE("DeviceRouter chooses the CPU router's experts, for every family", "[router]", float, mp::bfloat16) {
  for (index_t tokens : {0, 1, 37, 1000}) {
    check_family<TestType>(mp::models::TinyQwen3Moe::spec, tokens);
    check_family<TestType>(mp::models::TinyMixtral::spec, tokens);
    check_family<TestType>(mp::models::TinyDeepSeekV3::spec, tokens);
  }
  // The real routers' expert counts and groups, on a small hidden size.
  for (mp::ModelSpec m :
       {mp::models::Qwen3_30B_A3B::spec, mp::models::Mixtral_8x7B::spec, mp::models::DeepSeek_V3::spec}) {
    m.hidden_size = 128;
    check_family<TestType>(m, 300);
  }
}

TEST_CASE("DeviceRouter reports the first non-finite logit as the CPU router does", "[router]") {
  const mp::ModelSpec m = mp::models::TinyQwen3Moe::spec;
  const index_t H = m.hidden_size, E = m.num_experts;
  for (float poison : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    auto x = normal_tensor<float>({5, H}, 1.0f, 3);
    const auto gate = normal_tensor<float>({E, H}, 0.1f, 4);
    x[3 * H + 10] = poison;  // token 3: every logit of it is poisoned; expert 0 comes first
    x[4 * H + 1] = poison;
    const DeviceRouting gpu = device_route(m, x, gate, {});
    const mp::Message expected = mp::cpu::check_logits(mp::cpu::router_logits(x, gate));
    const mp::Message got = mp::cuda::bad_logit(gpu.first_bad, static_cast<int>(E));
    REQUIRE(!got.ok());
    CHECK(got.view() == expected.view());
  }
}
