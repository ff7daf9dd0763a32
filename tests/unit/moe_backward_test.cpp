// The backward reference is the right function:
// - against PyTorch autograd on transformers' own blocks (tests/data/golden/*/gradients.safetensors,
//   made by tools/golden/make_gradients.py): the input gradient and every parameter's, within
//   1e-5 of each gradient's largest magnitude (both sides fp32, sums in other orders);
// - against central finite differences of a float64 forward written here on its own, for
//   every router kind (softmax with and without renormalization, Mixtral, DeepSeek-V3 with
//   and without normalization, with shared experts), on every entry of every gradient.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "meshplan/io/config_json.hpp"
#include "meshplan/io/moe_checkpoint.hpp"
#include "meshplan/io/safetensors_file.hpp"
#include "meshplan/moe/reference.hpp"
#include "meshplan/moe/reference_backward.hpp"

namespace mp = meshplan;
using mp::index_t;

namespace {

/// max |a - b| / max |b|.
double relative_difference(std::span<const float> a, std::span<const float> b) {
  REQUIRE(a.size() == b.size());
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::abs(a[i] - b[i])));
    scale = std::max(scale, static_cast<double>(std::abs(b[i])));
  }
  return diff / std::max(scale, 1e-30);
}

/// A tensor's rows as [rows, last dim] (fixtures store [T, H] or [B, T, H]).
mp::Tensor<float> as_rows(mp::Tensor<float> t) {
  const index_t h = t.shape().back(), rows = h > 0 ? t.numel() / h : 0;
  return mp::Tensor<float>({rows, h}, std::move(t.vector()));
}

void check_golden(const std::string& name) {
  INFO("fixture " << name);
  const std::string dir = std::string(MESHPLAN_TEST_DATA) + "/golden/" + name;
  const mp::ModelSpec model = mp::model_from_config_file(dir + "/config.json");
  const mp::SafetensorsFile block(dir + "/block.safetensors"), input(dir + "/input.safetensors"),
      grads(dir + "/gradients.safetensors");
  const mp::MoEWeights<float> w = mp::read_moe_weights<float>(block.view(), model);
  const mp::Tensor<float> x = as_rows(input.read<float>("hidden_states"));
  const mp::Tensor<float> dy = as_rows(grads.read<float>("grad_output"));
  const mp::MoEGradients g = mp::reference_moe_backward(model, w, x, dy);

  const double tolerance = 1e-5;
  CHECK(relative_difference(g.hidden_states.span(), as_rows(grads.read<float>("hidden_states")).span()) < tolerance);
  CHECK(relative_difference(g.router.span(), grads.read<float>("gate.weight").span()) < tolerance);
  CHECK(relative_difference(g.gate_up.span(), grads.read<float>("experts.gate_up_proj").span()) < tolerance);
  CHECK(relative_difference(g.down.span(), grads.read<float>("experts.down_proj").span()) < tolerance);
  if (model.shared_intermediate_size() > 0) {
    CHECK(relative_difference(g.shared_gate.span(), grads.read<float>("shared_experts.gate_proj.weight").span()) <
          tolerance);
    CHECK(relative_difference(g.shared_up.span(), grads.read<float>("shared_experts.up_proj.weight").span()) <
          tolerance);
    CHECK(relative_difference(g.shared_down.span(), grads.read<float>("shared_experts.down_proj.weight").span()) <
          tolerance);
  } else {
    CHECK(g.shared_gate.empty());
  }
}

// ---- A float64 forward, written from the math alone ---------------------------------------

struct Params {  // every differentiable value, in double
  std::vector<double> x, router, gate_up, down, shared_gate, shared_up, shared_down;
};

std::vector<double> widen(const mp::Tensor<float>& t) { return {t.vector().begin(), t.vector().end()}; }

double silu(double g) { return g / (1.0 + std::exp(-g)); }

/// The k experts a token chooses (by the router's rules, in double).
std::vector<int> choose(const mp::ModelSpec& m, const std::vector<double>& score, const std::vector<float>& bias) {
  const int E = static_cast<int>(score.size()), k = static_cast<int>(m.num_experts_per_tok);
  std::vector<double> c = score;
  if (m.router() == mp::RouterKind::sigmoid_group_topk) {
    for (int e = 0; e < E; ++e) c[e] += bias[e];
    const int G = static_cast<int>(m.n_group), per = E / G;
    std::vector<double> group(G);
    for (int gi = 0; gi < G; ++gi) {
      std::vector<double> v(c.begin() + gi * per, c.begin() + (gi + 1) * per);
      std::sort(v.rbegin(), v.rend());
      group[gi] = v[0] + v[1];
    }
    std::vector<int> order(G);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return group[a] > group[b]; });
    for (int r = static_cast<int>(m.topk_group); r < G; ++r)
      for (int e = order[r] * per; e < (order[r] + 1) * per; ++e) c[e] = -1e300;
  }
  std::vector<int> ids(E);
  std::iota(ids.begin(), ids.end(), 0);
  std::sort(ids.begin(), ids.end(), [&](int a, int b) { return c[a] > c[b]; });
  ids.resize(k);
  std::sort(ids.begin(), ids.end());
  return ids;
}

/// sum(output * dy) in double, and the experts each token chose.
double loss(const mp::ModelSpec& m, const Params& p, const std::vector<float>& bias, const std::vector<double>& dy,
            std::vector<std::vector<int>>* chosen) {
  const int H = static_cast<int>(m.hidden_size), I = static_cast<int>(m.moe_intermediate_size);
  const int E = static_cast<int>(m.num_experts), S = static_cast<int>(m.shared_intermediate_size());
  const int tokens = static_cast<int>(p.x.size()) / H;
  auto mlp = [&](const double* x, const double* gate, const double* up, const double* down, int inter,
                 std::vector<double>& y) {
    std::vector<double> a(inter);
    for (int i = 0; i < inter; ++i) {
      double g = 0, u = 0;
      for (int h = 0; h < H; ++h) g += gate[i * H + h] * x[h], u += up[i * H + h] * x[h];
      a[i] = silu(g) * u;
    }
    for (int h = 0; h < H; ++h) {
      y[h] = 0;
      for (int i = 0; i < inter; ++i) y[h] += down[h * inter + i] * a[i];
    }
  };
  double total = 0;
  std::vector<double> y(H), score(E);
  for (int t = 0; t < tokens; ++t) {
    const double* x = p.x.data() + t * H;
    for (int e = 0; e < E; ++e) {
      double l = 0;
      for (int h = 0; h < H; ++h) l += p.router[e * H + h] * x[h];
      score[e] = l;
    }
    if (m.router() == mp::RouterKind::sigmoid_group_topk) {
      for (double& s : score) s = 1.0 / (1.0 + std::exp(-s));
    } else {
      const double mx = *std::max_element(score.begin(), score.end());
      double z = 0;
      for (double& s : score) z += (s = std::exp(s - mx));
      for (double& s : score) s /= z;
    }
    const std::vector<int> ids = choose(m, score, bias);
    if (chosen) chosen->push_back(ids);
    double sum = 0;
    for (int e : ids) sum += score[e];
    for (int e : ids) {
      double weight = score[e];
      if (m.router() == mp::RouterKind::sigmoid_group_topk) {
        if (m.norm_topk_prob) weight /= sum + 1e-20;
        weight *= m.routed_scaling_factor;
      } else if (m.router() == mp::RouterKind::softmax_topk_renorm || m.norm_topk_prob) {
        weight /= sum;
      }
      const double* gate = p.gate_up.data() + e * 2 * I * H;
      mlp(x, gate, gate + I * H, p.down.data() + e * H * I, I, y);
      for (int h = 0; h < H; ++h) total += dy[t * H + h] * weight * y[h];
    }
    if (S > 0) {
      mlp(x, p.shared_gate.data(), p.shared_up.data(), p.shared_down.data(), S, y);
      for (int h = 0; h < H; ++h) total += dy[t * H + h] * y[h];
    }
  }
  return total;
}

/// Every entry of `analytic` against the central difference of `loss` in that entry of
/// `values`, within 1e-4 of the gradient's largest magnitude (fp32 against float64).
void check_entries(const char* what, std::vector<double>& values, const mp::Tensor<float>& analytic,
                   const std::function<double(std::vector<std::vector<int>>*)>& f,
                   const std::vector<std::vector<int>>& base_choice) {
  INFO(what);
  REQUIRE(static_cast<std::size_t>(analytic.numel()) == values.size());
  std::vector<double> fd(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    const double keep = values[i], eps = 1e-5;
    std::vector<std::vector<int>> plus_choice, minus_choice;
    values[i] = keep + eps;
    const double plus = f(&plus_choice);
    values[i] = keep - eps;
    const double minus = f(&minus_choice);
    values[i] = keep;
    // The selection has no gradient: the check needs it unchanged by the step.
    REQUIRE(plus_choice == base_choice);
    REQUIRE(minus_choice == base_choice);
    fd[i] = (plus - minus) / (2 * eps);
  }
  double scale = 0, diff = 0;
  for (std::size_t i = 0; i < fd.size(); ++i) {
    scale = std::max(scale, std::abs(fd[i]));
    diff = std::max(diff, std::abs(fd[i] - static_cast<double>(analytic[static_cast<index_t>(i)])));
  }
  CHECK(scale > 0);
  CHECK(diff <= 1e-4 * scale);
}

void check_finite_differences(mp::ModelSpec m, std::uint64_t seed) {
  INFO(mp::to_string(m.family) << ", norm_topk_prob " << m.norm_topk_prob << ", seed " << seed);
  const index_t tokens = 6, H = m.hidden_size;
  const mp::MoEWeights<float> w = mp::random_moe_weights<float>(m, seed);
  mp::Tensor<float> x({tokens, H}), dy({tokens, H});
  std::mt19937_64 rng(seed + 1);
  std::normal_distribution<float> normal;
  for (auto& v : x.vector()) v = normal(rng);
  for (auto& v : dy.vector()) v = normal(rng);
  const mp::MoEGradients g = mp::reference_moe_backward(m, w, x, dy);

  Params p{widen(x), widen(w.router), widen(w.gate_up), widen(w.down), widen(w.shared_gate), widen(w.shared_up),
           widen(w.shared_down)};
  const std::vector<float> bias = w.correction_bias.vector();
  const std::vector<double> dyd = widen(dy);
  auto f = [&](std::vector<std::vector<int>>* chosen) { return loss(m, p, bias, dyd, chosen); };
  std::vector<std::vector<int>> base;
  (void)f(&base);
  check_entries("hidden_states", p.x, g.hidden_states, f, base);
  check_entries("gate.weight", p.router, g.router, f, base);
  check_entries("experts.gate_up_proj", p.gate_up, g.gate_up, f, base);
  check_entries("experts.down_proj", p.down, g.down, f, base);
  if (m.shared_intermediate_size() > 0) {
    check_entries("shared_experts.gate_proj.weight", p.shared_gate, g.shared_gate, f, base);
    check_entries("shared_experts.up_proj.weight", p.shared_up, g.shared_up, f, base);
    check_entries("shared_experts.down_proj.weight", p.shared_down, g.shared_down, f, base);
  }
}

mp::ModelSpec tiny(mp::Family family) {
  mp::ModelSpec m;
  m.family = family;
  m.hidden_size = 8;
  m.num_hidden_layers = 1;
  m.num_attention_heads = 2;
  m.num_key_value_heads = 2;
  m.head_dim = 4;
  m.vocab_size = 16;
  m.num_experts = 8;
  m.num_experts_per_tok = 2;
  m.moe_intermediate_size = 4;
  m.norm_topk_prob = true;
  if (family == mp::Family::deepseek_v3) {
    m.n_group = 4;
    m.topk_group = 2;
    m.n_shared_experts = 1;
    m.routed_scaling_factor = 2.5;
    m.first_k_dense_replace = 0;
  }
  return m;
}

}  // namespace

TEST_CASE("moe backward: the reference's gradients are transformers' (autograd on its own blocks)", "[moe][backward]") {
  for (const char* name :
       {"qwen3_moe", "mixtral", "deepseek_v3", "qwen3_moe_odd", "mixtral_batch", "deepseek_v3_lite"})
    check_golden(name);
}

TEST_CASE("moe backward: the reference's gradients are the finite differences of a float64 forward",
          "[moe][backward]") {
  for (mp::Family family : {mp::Family::qwen3_moe, mp::Family::mixtral, mp::Family::deepseek_v3})
    for (bool norm : {true, false}) {
      mp::ModelSpec m = tiny(family);
      m.norm_topk_prob = norm;
      check_finite_differences(m, 21);
    }
}

TEST_CASE("moe backward: an output gradient of the wrong shape is refused", "[moe][backward]") {
  const mp::ModelSpec m = tiny(mp::Family::qwen3_moe);
  const mp::MoEWeights<float> w = mp::random_moe_weights<float>(m, 3);
  const mp::Tensor<float> x({5, m.hidden_size});
  CHECK_THROWS_WITH(mp::reference_moe_backward(m, w, x, mp::Tensor<float>({4, m.hidden_size})),
                    Catch::Contains("[shape_matches]: the output gradient has shape [4, 8] where the block's output "
                                    "[5, 8] is expected"));
  CHECK(mp::reference_moe_backward(m, w, mp::Tensor<float>({0, m.hidden_size}), mp::Tensor<float>({0, m.hidden_size}))
            .hidden_states.numel() == 0);
}
