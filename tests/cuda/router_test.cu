// DeviceRouter against the CPU router (cpu/detail/router.hpp), as device_router.cuh promises it:
// the logits bit for bit (both sum over the hidden dim in order with fused multiply-adds);
// the chosen experts, in slot order, exactly on every token whose deciding margins (the
// CPU's own) are above router_agreement's bounds, while tokens below them are counted and
// must stay rare; the weights within router_agreement::weight_bound, relative. The shapes
// cover the kernel's tiles: hidden sizes that end inside a staged chunk, with and without
// 16-byte rows, token counts that end inside a block's tile, each of the expert tilings
// (8, 60, 128, 256, 384 experts) and top-k from 1 to 8.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "cuda_support.hpp"
#include "meshplan/cpu/detail/router.hpp"
#include "meshplan/cuda/router/device_router.cuh"
#include "meshplan/model/presets.hpp"

namespace mp = meshplan;
using mp::index_t;
using namespace cuda_support;
namespace agreement = mp::cuda::router_agreement;

namespace {

/// The smallest of a token's deciding margins in units of router_agreement's bounds, from
/// the CPU's own values (cpu::router_scores): 1 or more, and the device must choose exactly
/// as the CPU does. A decision is a pair of neighbours in the CPU's descending order over
/// the top k + 1 candidates (of all experts; for DeepSeek-V3 of the kept groups' experts,
/// and the last kept against the first dropped group). Two candidates whose inputs are the
/// same bits decide nothing: both sides compute equal values for them and take the lower
/// index. A softmax score outside fp32's normal range is not covered by the bound: margin 0.
double deciding_margin(const mp::ModelSpec& m, std::span<const float> logits, std::span<const float> bias) {
  const auto p = mp::cuda::RouterParams::of(m);
  const index_t E = m.num_experts, k = m.num_experts_per_tok;
  std::vector<float> scores(static_cast<std::size_t>(E));
  mp::cpu::router_scores(m, logits, scores);
  const bool deepseek = m.router() == mp::RouterKind::sigmoid_group_topk;
  double max_abs_bias = 0;
  for (float b : bias) max_abs_bias = std::max(max_abs_bias, static_cast<double>(std::abs(b)));

  auto same_inputs = [&](index_t a, index_t b) {
    return std::memcmp(&logits[a], &logits[b], sizeof(float)) == 0 &&
           (!deepseek || std::memcmp(&bias[a], &bias[b], sizeof(float)) == 0);
  };
  // Candidates in the CPU's order (descending, ties to the lower index), then the first
  // k + 1 neighbours' margins.
  auto margin_over = [&](std::vector<index_t> ids, auto value, bool relative, double bound) {
    std::stable_sort(ids.begin(), ids.end(), [&](index_t a, index_t b) { return value(a) > value(b); });
    double smallest = std::numeric_limits<double>::infinity();
    for (std::size_t i = 1; i < ids.size() && i <= static_cast<std::size_t>(k); ++i) {
      const index_t a = ids[i - 1], b = ids[i];
      if (same_inputs(a, b)) continue;
      const double hi = value(a), lo = value(b);
      if (relative && lo < FLT_MIN) return 0.0;
      smallest = std::min(smallest, (hi - lo) / (relative ? lo : 1.0) / bound);
    }
    return smallest;
  };
  std::vector<index_t> all(static_cast<std::size_t>(E));
  for (index_t e = 0; e < E; ++e) all[e] = e;
  if (!deepseek)
    return margin_over(all, [&](index_t e) { return static_cast<double>(scores[e]); }, true,
                       agreement::rank_bound(p));

  std::vector<float> choice(static_cast<std::size_t>(E));
  for (index_t e = 0; e < E; ++e) choice[e] = scores[e] + bias[e];  // as cpu::route does
  const index_t groups = m.n_group, per = E / groups;
  std::vector<double> group_score(static_cast<std::size_t>(groups));
  for (index_t g = 0; g < groups; ++g) {
    std::vector<float> in(choice.begin() + g * per, choice.begin() + (g + 1) * per);
    std::sort(in.rbegin(), in.rend());
    group_score[g] = static_cast<double>(in[0] + in[1]);
  }
  std::vector<index_t> order(static_cast<std::size_t>(groups));
  for (index_t g = 0; g < groups; ++g) order[g] = g;
  std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) { return group_score[a] > group_score[b]; });
  double smallest = std::numeric_limits<double>::infinity();
  if (m.topk_group < groups)
    smallest = (group_score[order[m.topk_group - 1]] - group_score[order[m.topk_group]]) /
               agreement::group_bound(max_abs_bias);
  std::vector<index_t> eligible;
  for (index_t i = 0; i < m.topk_group; ++i)
    for (index_t e = order[i] * per; e < (order[i] + 1) * per; ++e) eligible.push_back(e);
  std::sort(eligible.begin(), eligible.end());
  return std::min(smallest, margin_over(eligible, [&](index_t e) { return static_cast<double>(choice[e]); }, false,
                                        agreement::rank_bound(p, max_abs_bias)));
}

mp::ModelSpec with(mp::ModelSpec m, index_t hidden, index_t experts, index_t top_k) {
  m.hidden_size = hidden;
  m.num_experts = experts;
  m.num_experts_per_tok = top_k;
  return m;
}

struct DeviceRouting {
  std::vector<std::int32_t> ids;
  std::vector<float> weights;
  std::vector<float> logits;
  unsigned long long first_bad = mp::cuda::no_bad_logit;
};

/// The device's routing; with `unaligned`, x and gate start 2 bytes past a 16-byte boundary
/// (so the kernel must read them element by element).
template <class T>
DeviceRouting device_route(const mp::ModelSpec& m, const mp::Tensor<T>& x, const mp::Tensor<T>& gate,
                           const std::vector<float>& bias, bool unaligned = false) {
  using D = mp::cuda::device_type_t<T>;
  const index_t tokens = x.dim(0), k = m.num_experts_per_tok, E = m.num_experts;
  const std::size_t skip = unaligned ? 1 : 0;  // one element: 2 or 4 bytes
  std::vector<T> host_x(skip), host_gate(skip);
  host_x.insert(host_x.end(), x.vector().begin(), x.vector().end());
  host_gate.insert(host_gate.end(), gate.vector().begin(), gate.vector().end());
  auto d_x = upload(host_x);
  auto d_gate = upload(host_gate);
  auto d_bias = upload(bias);
  mp::cuda::DeviceBuffer<std::int32_t> ids(static_cast<std::size_t>(tokens * k));
  mp::cuda::DeviceBuffer<float> weights(static_cast<std::size_t>(tokens * k)),
      logits(static_cast<std::size_t>(tokens * E));
  mp::cuda::DeviceBuffer<unsigned long long> first_bad(1);
  MESHPLAN_CUDA_CHECK(cudaMemset(first_bad.data(), 0xff, sizeof(unsigned long long)));
  mp::cuda::DeviceRouter::route(reinterpret_cast<const D*>(d_x.data()) + skip,
                                reinterpret_cast<const D*>(d_gate.data()) + skip,
                                bias.empty() ? nullptr : d_bias.data(), mp::cuda::RouterParams::of(m), tokens,
                                ids.data(), weights.data(), logits.data(), first_bad.data(), nullptr);
  MESHPLAN_CUDA_CHECK(cudaDeviceSynchronize());
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
void check_against_cpu(const mp::ModelSpec& m, index_t tokens, bool unaligned = false) {
  INFO(mp::to_string(m.family) << ": " << m.num_experts << " experts, top-" << m.num_experts_per_tok << ", hidden "
                               << m.hidden_size << ", " << tokens << " tokens" << (unaligned ? ", unaligned" : "")
                               << ", " << (sizeof(T) == 4 ? "fp32" : "bf16"));
  const index_t H = m.hidden_size, E = m.num_experts, k = m.num_experts_per_tok;
  const auto seed = static_cast<std::uint32_t>(E * 131 + tokens * 7 + H);
  const auto x = normal_tensor<T>({tokens, H}, 1.0f, seed);
  const auto gate = normal_tensor<T>({E, H}, 1.0f / std::sqrt(static_cast<float>(H)), seed + 1);
  std::vector<float> bias;
  if (m.router() == mp::RouterKind::sigmoid_group_topk) {
    std::mt19937 rng(seed + 2);
    std::uniform_real_distribution<float> u(-0.1f, 0.1f);
    for (index_t e = 0; e < E; ++e) bias.push_back(u(rng));
  }
  const mp::Tensor<float> logits = mp::cpu::router_logits(x, gate);
  const mp::Routing cpu = mp::cpu::route(m, logits, bias);
  const DeviceRouting gpu = device_route(m, x, gate, bias, unaligned);

  CHECK(same_bits(gpu.logits, logits.vector()));
  CHECK(gpu.first_bad == mp::cuda::no_bad_logit);
  REQUIRE(gpu.ids.size() == cpu.experts.size());
  REQUIRE(gpu.weights.size() == cpu.weights.size());
  const double weight_bound = agreement::weight_bound(mp::cuda::RouterParams::of(m));
  index_t near_ties = 0, near_ties_differing = 0, differing = 0;
  double worst = 0;
  for (index_t t = 0; t < tokens; ++t) {
    const auto first = static_cast<std::ptrdiff_t>(t * k);
    const bool same = std::equal(gpu.ids.begin() + first, gpu.ids.begin() + first + k, cpu.experts.begin() + first);
    if (deciding_margin(m, logits.row(t), bias) < 1) {
      ++near_ties;
      near_ties_differing += !same;
      if (!same) continue;
    } else if (!same) {
      ++differing;
      continue;
    }
    for (index_t s = 0; s < k; ++s) {
      const auto i = static_cast<std::size_t>(t * k + s);
      worst = std::max(worst, std::abs(static_cast<double>(gpu.weights[i]) - cpu.weights[i]) /
                                  std::max(1e-30, std::abs(static_cast<double>(cpu.weights[i]))));
    }
  }
  INFO(near_ties << " tokens below the bound (" << near_ties_differing << " chosen differently); worst weight "
                 << worst << " relative, bound " << weight_bound);
  CHECK(differing == 0);
  CHECK(near_ties <= std::max<index_t>(1, tokens / 100));
  CHECK(worst <= weight_bound);
}

}  // namespace

TEST_CASE("host: the router's tiles fit the shared memory every device gives a block", "[host]") {
  using mp::cuda::RouterTiles;
  for (mp::ModelSpec m : {mp::models::Qwen3_30B_A3B::spec, mp::models::DeepSeek_V3::spec}) {
    for (int experts = 2; experts <= 579; ++experts) {
      m.num_experts = experts;
      m.num_experts_per_tok = 1;
      m.n_group = m.router() == mp::RouterKind::sigmoid_group_topk && experts % 2 == 0 ? experts / 2 : 1;
      m.topk_group = 1;
      const auto p = mp::cuda::RouterParams::of(m);
      const RouterTiles t = RouterTiles::of(p);
      INFO(experts << " experts, " << p.groups << " groups");
      REQUIRE(mp::cuda::router_rules::params_valid(p, 1).ok());
      CHECK(t.shared_bytes <= RouterTiles::shared_limit);
      CHECK(t.threads % 32 == 0);
      CHECK(t.experts_tile % RouterTiles::micro == 0);
      CHECK(t.tokens_tile * (t.experts_tile / RouterTiles::micro) == RouterTiles::micro * t.threads);
      // The logits of the tile, the bias, and the larger of the staged chunks and the warps' group scores.
      const long long staging = RouterTiles::chunk * (t.tokens_tile + t.experts_tile + 2 * RouterTiles::pad);
      CHECK(t.shared_bytes >= sizeof(float) * (static_cast<std::size_t>(t.tokens_tile) * experts + experts +
                                               static_cast<std::size_t>(std::max<long long>(
                                                   staging, t.threads / 32 * static_cast<long long>(p.groups)))));
      CHECK(RouterTiles::staging_offset(t.tokens_tile, experts) % 4 == 0);  // float4 reads of the staged chunks
    }
  }
  // The tilings the kernel has, by expert count: narrow and tall for few experts.
  auto tiles = [](int experts) {
    mp::cuda::RouterParams p = mp::cuda::RouterParams::of(mp::models::Qwen3_30B_A3B::spec);
    p.experts = experts;
    const RouterTiles t = RouterTiles::of(p);
    return std::vector<long long>{t.experts_tile, t.threads, t.tokens_tile, static_cast<long long>(t.shared_bytes)};
  };
  // 8 experts: 256 tokens' logits (8 KiB), the bias (32 B), chunks of 16 x (260 + 20) floats.
  CHECK(tiles(8) == std::vector<long long>{16, 256, 256, 4 * (256 * 8 + 8 + 16 * 280)});
  CHECK(tiles(60) == std::vector<long long>{64, 256, 64, 4 * (64 * 60 + 60 + 16 * 136)});
  CHECK(tiles(128) == std::vector<long long>{128, 256, 32, 4 * (32 * 128 + 128 + 16 * 168)});
  CHECK(tiles(256) == std::vector<long long>{128, 256, 32, 4 * (32 * 256 + 256 + 16 * 168)});
  CHECK(tiles(384) == std::vector<long long>{128, 128, 16, 4 * (16 * 384 + 384 + 16 * 152)});
  CHECK(tiles(255)[3] == 4 * (32 * 255 + 256 + 16 * 168));  // each part starts 16-byte aligned
}

TEST_CASE("host: the router reads rows 16 bytes at a time only where every row allows it", "[host]") {
  using mp::cuda::RouterTiles;
  alignas(16) static const float rows[8] = {};
  const void* aligned = rows;
  const void* off = reinterpret_cast<const char*>(rows) + 2;
  CHECK(RouterTiles::vector_rows(2048, 2, aligned, aligned));
  CHECK(RouterTiles::vector_rows(136, 2, aligned, aligned));
  CHECK(!RouterTiles::vector_rows(100, 2, aligned, aligned));  // 200-byte rows: every other row is off
  CHECK(RouterTiles::vector_rows(100, 4, aligned, aligned));
  CHECK(!RouterTiles::vector_rows(13, 4, aligned, aligned));
  CHECK(!RouterTiles::vector_rows(2048, 2, off, aligned));
  CHECK(!RouterTiles::vector_rows(2048, 2, aligned, off));
}

TEST_CASE("host: the router refuses more experts than its tiles hold, and routes no tokens without a launch",
          "[host]") {
  mp::cuda::RouterParams p = mp::cuda::RouterParams::of(mp::models::Qwen3_30B_A3B::spec);
  p.experts = 579;
  CHECK(mp::cuda::router_rules::params_valid(p, 1).ok());
  p.experts = 580;
  const mp::Message refused = mp::cuda::router_rules::params_valid(p, 1);
  CHECK(refused.view() ==
        "meshplan [router_shared_memory]: the fused router keeps the logits of 16 tokens over all 580 experts in shared memory: "
        "49168 bytes, more than the 49152 a block gets on every device (at most 579 experts fit)");
  // No tokens: checked, then nothing launched (here, without a GPU, a launch would fail).
  p.experts = 128;
  const mp::bfloat16* none = nullptr;
  using D = mp::cuda::device_type_t<mp::bfloat16>;
  CHECK_NOTHROW(mp::cuda::DeviceRouter::route(reinterpret_cast<const D*>(none), reinterpret_cast<const D*>(none),
                                              nullptr, p, 0, nullptr, nullptr, nullptr, nullptr, nullptr));
  CHECK_THROWS_WITH(mp::cuda::DeviceRouter::route(reinterpret_cast<const D*>(none), reinterpret_cast<const D*>(none),
                                                  nullptr, p, -1, nullptr, nullptr, nullptr, nullptr, nullptr),
                    Catch::Contains("the token count -1"));
}

TEST_CASE("host: the router's agreement bounds", "[host]") {
  const auto qwen = mp::cuda::RouterParams::of(mp::models::Qwen3_30B_A3B::spec);  // renormalized, k = 8
  const auto mixtral = mp::cuda::RouterParams::of(mp::models::Mixtral_8x7B::spec);
  const auto deepseek = mp::cuda::RouterParams::of(mp::models::DeepSeek_V3::spec);
  const double u = 0x1p-24;
  CHECK(agreement::rank_bound(qwen) == 18 * u);  // 2 x 3 ulp of exp + 4 roundings + 2 u
  CHECK(agreement::rank_bound(mixtral) == agreement::rank_bound(qwen));
  CHECK(agreement::rank_bound(deepseek) == 2 * (6 + 4 + 2 + 1) * u);
  CHECK(agreement::rank_bound(deepseek, 1.0) > agreement::rank_bound(deepseek));
  CHECK(agreement::group_bound() == 2 * (2 * 13 + 4) * u);
  CHECK(agreement::weight_bound(qwen) == (12 + 20 + 4) * u);
  CHECK(agreement::weight_bound(mixtral) == (12 + 8 + 4) * u);
  auto unnormalized = qwen;
  unnormalized.normalize = false;  // the total of 128 exps keeps both sides' roundings
  CHECK(agreement::weight_bound(unnormalized) == (12 + 256 + 4) * u);
  CHECK(agreement::weight_bound(deepseek) == (12 + 16 + 18 + 4) * u);
  // Every bound is far below what a real difference of choice or a wrong weight would be.
  for (const auto& p : {qwen, mixtral, deepseek, unnormalized}) {
    CHECK(agreement::rank_bound(p) < 1e-5);
    CHECK(agreement::weight_bound(p) < 2e-5);
  }
}

TEST_CASE("host: a token's deciding margin", "[host]") {
  SECTION("softmax: the top k + 1 scores' neighbours, relative") {
    const mp::ModelSpec m = with(mp::models::Qwen3_30B_A3B::spec, 4, 8, 2);
    std::vector<float> l = {0.0f, -1.0f, -2.0f, -3.0f, -4.0f, -5.0f, -6.0f, -7.0f};
    CHECK(deciding_margin(m, l, {}) > 1e4);
    CHECK(deciding_margin(with(m, 4, 8, 1), l, {}) > 1e4);
    // Experts 6 and 7 tie, but they decide nothing for the top 2.
    l[7] = l[6];
    CHECK(deciding_margin(m, l, {}) > 1e4);
    // Expert 2 one ulp below expert 1: the third place against the second, below the bound.
    l[2] = std::nextafter(l[1], -10.0f);
    CHECK(deciding_margin(m, l, {}) < 1);
    // Same bits decide nothing: both sides take the lower index.
    l[2] = l[1];
    CHECK(deciding_margin(m, l, {}) > 1e4);
    // Scores 0.5 and 4 bounds apart in relative terms: logit gaps of about that.
    const double gap = agreement::rank_bound(mp::cuda::RouterParams::of(m));
    l = {0.0f, static_cast<float>(-0.5 * gap), -5.0f, -6.0f, -7.0f, -8.0f, -9.0f, -10.0f};
    CHECK(deciding_margin(m, l, {}) < 1);
    l[1] = static_cast<float>(-4 * gap);
    CHECK(deciding_margin(m, l, {}) > 2);
    CHECK(deciding_margin(m, l, {}) < 6);
    // A score that underflows is outside the bound's range.
    l = {0.0f, -200.0f, -300.0f, -400.0f, -500.0f, -600.0f, -700.0f, -800.0f};
    CHECK(deciding_margin(m, l, {}) == 0);
  }
  SECTION("DeepSeek-V3: the kept groups' boundary and the kept experts' top k + 1, absolute") {
    mp::ModelSpec m = with(mp::models::DeepSeek_V3::spec, 4, 8, 2);
    m.n_group = 4;  // groups of 2: {0, 1} {2, 3} {4, 5} {6, 7}
    m.topk_group = 2;
    const std::vector<float> bias = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    std::vector<float> l = {4.0f, 3.0f, 2.0f, 1.0f, -1.0f, -2.0f, -3.0f, -4.0f};
    CHECK(deciding_margin(m, l, bias) > 1e3);
    // Groups {4, 5} and {6, 7} tie (within an ulp), but only the two best are kept: no decision.
    l[6] = -1.0f;
    l[7] = std::nextafter(-2.0f, 0.0f);
    CHECK(deciding_margin(m, l, bias) > 1e3);
    // The second and the third group nearly tie: the kept set is in question.
    l = {4.0f, 3.0f, 2.0f, 1.0f, 2.0f, std::nextafter(1.0f, 2.0f), -3.0f, -4.0f};
    CHECK(deciding_margin(m, l, bias) < 1);
    // Within the kept experts, the second place against the third.
    l = {4.0f, 0.5f, std::nextafter(0.5f, 0.0f), -4.0f, -5.0f, -6.0f, -7.0f, -8.0f};
    CHECK(deciding_margin(m, l, bias) < 1);
    // The same logits but different biases: still a decision, here a wide one.
    std::vector<float> biased = bias;
    biased[2] = -0.05f;
    l = {4.0f, 0.5f, 0.5f, -4.0f, -5.0f, -6.0f, -7.0f, -8.0f};
    CHECK(deciding_margin(m, l, biased) > 1e3);
  }
}

TEMPLATE_TEST_CASE("DeviceRouter chooses the CPU router's experts, for every family", "[router]", float, mp::bfloat16) {
  for (index_t tokens : {0, 1, 37, 1000}) {
    check_against_cpu<TestType>(mp::models::TinyQwen3Moe::spec, tokens);
    check_against_cpu<TestType>(mp::models::TinyMixtral::spec, tokens);
    check_against_cpu<TestType>(mp::models::TinyDeepSeekV3::spec, tokens);
  }
  // The real routers' expert counts and groups, on a small hidden size.
  for (mp::ModelSpec m :
       {mp::models::Qwen3_30B_A3B::spec, mp::models::Mixtral_8x7B::spec, mp::models::DeepSeek_V3::spec}) {
    m.hidden_size = 128;
    check_against_cpu<TestType>(m, 300);
  }
}

TEMPLATE_TEST_CASE("DeviceRouter at the edges of its tiles", "[router]", float, mp::bfloat16) {
  // Hidden sizes: one element; ends inside the first chunk of 16; 100 (fp32 rows of 16
  // bytes, bf16 rows not); 136 (16-byte rows in both, the last chunk half full); a real one.
  // Token counts end inside each tiling's token tile (256 for 8 experts, 64 for 60, 32 for
  // 128 and 256, 16 for 384).
  const mp::ModelSpec qwen = mp::models::Qwen3_30B_A3B::spec, mixtral = mp::models::Mixtral_8x7B::spec;
  for (index_t hidden : {1, 13, 100, 136})
    for (index_t k = 1; k <= 8; ++k) check_against_cpu<TestType>(with(k % 2 ? mixtral : qwen, hidden, 8, k), 257);
  for (index_t hidden : {1, 100, 136}) {
    check_against_cpu<TestType>(with(qwen, hidden, 60, 4), 65);
    check_against_cpu<TestType>(with(qwen, hidden, 128, 1), 33);
    check_against_cpu<TestType>(with(qwen, hidden, 128, 8), 95);
    check_against_cpu<TestType>(with(qwen, hidden, 384, 8), 17);
    check_against_cpu<TestType>(with(mp::models::DeepSeek_V3::spec, hidden, 256, 8), 63);
    check_against_cpu<TestType>(with(mp::models::DeepSeek_V3::spec, hidden, 256, 1), 31);
  }
  // Qwen3 without renormalization: the weights are the softmax's own.
  mp::ModelSpec plain = with(qwen, 100, 128, 8);
  plain.norm_topk_prob = false;
  check_against_cpu<TestType>(plain, 40);
  // A real hidden size, and rows that start off a 16-byte boundary (read element by element).
  check_against_cpu<TestType>(with(qwen, 2048, 128, 8), 70);
  check_against_cpu<TestType>(with(mp::models::DeepSeek_V3::spec, 2048, 256, 8), 40);
  check_against_cpu<TestType>(with(qwen, 136, 128, 8), 70, true);
  check_against_cpu<TestType>(with(mixtral, 136, 8, 2), 300, true);
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
    // Whatever the poisoned tokens got, every id names an expert (the caller throws at its
    // synchronization point, but the ids may already have been used to index).
    for (std::int32_t id : gpu.ids) CHECK((id >= 0 && id < E));
  }
}
