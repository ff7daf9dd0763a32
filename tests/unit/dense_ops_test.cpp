// The dense kernels of a transformer (cpu/detail/rms_norm.hpp, cpu/detail/rotary.hpp, cpu/detail/attention.hpp,
// cpu/detail/cross_entropy.hpp) against straightforward double-precision references.
//
// Tolerances: "within r of m" means |kernel - reference| <= r * m, where m is the sum of the
// absolute values of the terms that make up the element (for a product, |the product|):
// the scale at which fp32 rounding acts, so an element that cancels is held to the size of
// what cancelled. r is 1e-6 throughout. A softmax's p also carries the rounding of its fp32
// exponent (the score's dot product, s - max, s - lse): m grows with those magnitudes / 16
// (16 2^-24 = 1e-6), see attn_ref and ce_ref; torch's fp32 softmax has the same errors. The double references' own backward
// formulas are checked against central differences (step 1e-5, in double, 1e-7 relative).
// Bits: split weight-gradient chains equal one chain, the stated orders literally, every
// thread count and instruction set path gives the same bits, and a one-rank vocab-parallel
// loss is the single-rank loss.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/cpu/detail/attention.hpp"
#include "meshplan/cpu/detail/cross_entropy.hpp"
#include "meshplan/cpu/isa.hpp"
#include "meshplan/cpu/detail/rms_norm.hpp"
#include "meshplan/cpu/detail/rotary.hpp"
#include "meshplan/cpu/thread_pool.hpp"

namespace mp = meshplan;
namespace cpu = meshplan::cpu;
using mp::index_t;

namespace {

using Vec = std::vector<float>;
using DVec = std::vector<double>;

Vec random_vec(index_t n, std::uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  Vec v(static_cast<std::size_t>(n));
  for (auto& x : v) x = normal(rng);
  return v;
}

DVec widen(const Vec& v) { return DVec(v.begin(), v.end()); }

bool same_bits(const Vec& a, const Vec& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// The largest |got - want| / (r * mag) over the elements; <= 1 passes.
double worst(const Vec& got, const DVec& want, const DVec& mag, double r) {
  REQUIRE(got.size() == want.size());
  double w = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(static_cast<double>(got[i]) - want[i]);
    const double bound = r * mag[i];
    w = std::max(w, bound > 0 ? err / bound : (err > 0 ? 1e30 : 0.0));
  }
  return w;
}

std::vector<cpu::Isa> isas() { return cpu::runnable_isas(); }

// ---------------------------------------------------------------- RMSNorm references

struct RmsRef {
  DVec y, y_mag, inv;
};
RmsRef rms_ref(const DVec& x, index_t rows, index_t width, const DVec& w, double eps) {
  RmsRef r;
  r.y.resize(x.size());
  r.y_mag.resize(x.size());
  r.inv.resize(static_cast<std::size_t>(rows));
  for (index_t i = 0; i < rows; ++i) {
    double s = 0;
    for (index_t j = 0; j < width; ++j) s += x[i * width + j] * x[i * width + j];
    const double inv = 1.0 / std::sqrt(s / static_cast<double>(width) + eps);
    r.inv[i] = inv;
    for (index_t j = 0; j < width; ++j) {
      r.y[i * width + j] = w[j] * x[i * width + j] * inv;
      r.y_mag[i * width + j] = std::abs(r.y[i * width + j]);
    }
  }
  return r;
}

struct RmsGrad {
  DVec dx, dx_mag, dw, dw_mag;
};
RmsGrad rms_grad_ref(const DVec& x, const DVec& dy, index_t rows, index_t width, const DVec& w, double eps) {
  const RmsRef f = rms_ref(x, rows, width, w, eps);
  RmsGrad g;
  g.dx.resize(x.size());
  g.dx_mag.resize(x.size());
  g.dw.assign(static_cast<std::size_t>(width), 0.0);
  g.dw_mag.assign(static_cast<std::size_t>(width), 0.0);
  for (index_t i = 0; i < rows; ++i) {
    const double inv = f.inv[i];
    double c = 0, c_mag = 0;
    for (index_t j = 0; j < width; ++j) {
      const double t = dy[i * width + j] * w[j] * x[i * width + j] * inv;
      c += t;
      c_mag += std::abs(t);
    }
    c /= static_cast<double>(width);
    c_mag /= static_cast<double>(width);
    for (index_t j = 0; j < width; ++j) {
      const double gj = dy[i * width + j] * w[j], xh = x[i * width + j] * inv;
      g.dx[i * width + j] = inv * (gj - xh * c);
      g.dx_mag[i * width + j] = inv * (std::abs(gj) + std::abs(xh) * c_mag);
      g.dw[j] += dy[i * width + j] * xh;
      g.dw_mag[j] += std::abs(dy[i * width + j] * xh);
    }
  }
  return g;
}

// ---------------------------------------------------------------- attention references

struct Seqs {
  std::vector<index_t> lengths;
  index_t tokens() const {
    index_t t = 0;
    for (index_t l : lengths) t += l;
    return t;
  }
};

struct AttnShape {
  index_t heads, kv_heads, qk, v;
  double scaling;
};

struct AttnRef {
  DVec o, o_mag, lse;
  DVec dq, dq_mag, dk, dk_mag, dv, dv_mag;
};

// Eager causal GQA in double, and its analytic backward (with magnitudes: the sums of the
// absolute values of the terms, including those of the softmax's backward).
AttnRef attn_ref(const DVec& q, const DVec& k, const DVec& v, const DVec* d_o, const Seqs& seqs, const AttnShape& s) {
  const index_t T = seqs.tokens(), G = s.heads / s.kv_heads;
  AttnRef r;
  r.o.assign(static_cast<std::size_t>(T * s.heads * s.v), 0.0);
  r.o_mag = r.o;
  r.lse.assign(static_cast<std::size_t>(T * s.heads), 0.0);
  r.dq.assign(static_cast<std::size_t>(T * s.heads * s.qk), 0.0);
  r.dq_mag = r.dq;
  r.dk.assign(static_cast<std::size_t>(T * s.kv_heads * s.qk), 0.0);
  r.dk_mag = r.dk;
  r.dv.assign(static_cast<std::size_t>(T * s.kv_heads * s.v), 0.0);
  r.dv_mag = r.dv;
  auto Q = [&](index_t t, index_t h) { return &q[static_cast<std::size_t>((t * s.heads + h) * s.qk)]; };
  auto K = [&](index_t t, index_t g) { return &k[static_cast<std::size_t>((t * s.kv_heads + g) * s.qk)]; };
  auto V = [&](index_t t, index_t g) { return &v[static_cast<std::size_t>((t * s.kv_heads + g) * s.v)]; };
  index_t t0 = 0;
  for (index_t len : seqs.lengths) {
    for (index_t h = 0; h < s.heads; ++h) {
      const index_t g = h / G;
      for (index_t i = 0; i < len; ++i) {
        const index_t t = t0 + i;
        DVec sc(static_cast<std::size_t>(i + 1)), sc_abs(sc.size()), p(sc.size()), pm(sc.size());
        double m = -1e300;
        for (index_t j = 0; j <= i; ++j) {
          double d = 0, d_abs = 0;
          for (index_t c = 0; c < s.qk; ++c) {
            d += Q(t, h)[c] * K(t0 + j, g)[c];
            d_abs += std::abs(Q(t, h)[c] * K(t0 + j, g)[c]);
          }
          sc[j] = d * s.scaling;
          sc_abs[j] = d_abs * s.scaling;
          m = std::max(m, sc[j]);
        }
        double l = 0;
        for (index_t j = 0; j <= i; ++j) l += std::exp(sc[j] - m);
        const double lse = m + std::log(l);
        r.lse[t * s.heads + h] = lse;
        for (index_t j = 0; j <= i; ++j) {
          p[j] = std::exp(sc[j] - m) / l;
          // p's exponent is fp32 in the kernel (and in torch): the score's dot product is
          // good to ~2^-24 of sum |q_c k_c| scaling, and s - m or s - lse is rounded too; each
          // unit of those, times 2^-24, is a relative error of p. 1e-6 = 16 2^-24.
          pm[j] = p[j] * (1.0 + (sc_abs[j] + std::abs(sc[j]) + std::abs(lse)) / 16.0);
        }
        double* o = &r.o[static_cast<std::size_t>((t * s.heads + h) * s.v)];
        double* om = &r.o_mag[static_cast<std::size_t>((t * s.heads + h) * s.v)];
        for (index_t j = 0; j <= i; ++j)
          for (index_t c = 0; c < s.v; ++c) {
            o[c] += p[j] * V(t0 + j, g)[c];
            om[c] += pm[j] * std::abs(V(t0 + j, g)[c]);
          }
        if (d_o == nullptr) continue;
        const double* dO = &(*d_o)[static_cast<std::size_t>((t * s.heads + h) * s.v)];
        DVec dp(sc.size()), dp_mag(sc.size());
        double D = 0, D_mag = 0;
        for (index_t j = 0; j <= i; ++j) {
          for (index_t c = 0; c < s.v; ++c) {
            dp[j] += dO[c] * V(t0 + j, g)[c];
            dp_mag[j] += std::abs(dO[c] * V(t0 + j, g)[c]);
          }
          D += p[j] * dp[j];
        }
        for (index_t c = 0; c < s.v; ++c) D_mag += std::abs(dO[c]) * om[c];
        for (index_t j = 0; j <= i; ++j) {
          const double ds = p[j] * (dp[j] - D) * s.scaling;
          const double ds_mag = pm[j] * (dp_mag[j] + D_mag) * s.scaling;
          for (index_t c = 0; c < s.qk; ++c) {
            r.dq[static_cast<std::size_t>((t * s.heads + h) * s.qk + c)] += ds * K(t0 + j, g)[c];
            r.dq_mag[static_cast<std::size_t>((t * s.heads + h) * s.qk + c)] += ds_mag * std::abs(K(t0 + j, g)[c]);
            r.dk[static_cast<std::size_t>(((t0 + j) * s.kv_heads + g) * s.qk + c)] += ds * Q(t, h)[c];
            r.dk_mag[static_cast<std::size_t>(((t0 + j) * s.kv_heads + g) * s.qk + c)] +=
                ds_mag * std::abs(Q(t, h)[c]);
          }
          for (index_t c = 0; c < s.v; ++c) {
            r.dv[static_cast<std::size_t>(((t0 + j) * s.kv_heads + g) * s.v + c)] += p[j] * dO[c];
            r.dv_mag[static_cast<std::size_t>(((t0 + j) * s.kv_heads + g) * s.v + c)] += pm[j] * std::abs(dO[c]);
          }
        }
      }
    }
    t0 += len;
  }
  return r;
}

struct AttnOut {
  Vec o, lse, dq, dk, dv;
};
AttnOut run_attention(const Vec& q, const Vec& k, const Vec& v, const Vec& d_o, const Seqs& seqs, const AttnShape& s,
                      cpu::ThreadPool* pool, cpu::Isa isa) {
  const index_t T = seqs.tokens();
  AttnOut r;
  r.o.assign(static_cast<std::size_t>(T * s.heads * s.v), std::nanf(""));
  r.lse.assign(static_cast<std::size_t>(T * s.heads), std::nanf(""));
  cpu::attention_forward(q.data(), k.data(), v.data(), seqs.lengths, s.heads, s.kv_heads, s.qk, s.v,
                         static_cast<float>(s.scaling), r.o.data(), r.lse.data(), pool, isa);
  r.dq.assign(q.size(), std::nanf(""));  // written, never read
  r.dk.assign(k.size(), std::nanf(""));
  r.dv.assign(v.size(), std::nanf(""));
  cpu::attention_backward(q.data(), k.data(), v.data(), r.o.data(), d_o.data(), r.lse.data(), seqs.lengths, s.heads,
                          s.kv_heads, s.qk, s.v, static_cast<float>(s.scaling), r.dq.data(), r.dk.data(), r.dv.data(),
                          pool, isa);
  return r;
}

// ---------------------------------------------------------------- cross entropy reference

struct CeRef {
  DVec loss, lse, dlogits, dlogits_mag;
};
CeRef ce_ref(const DVec& x, index_t T, index_t V, const std::vector<index_t>& labels, double scale) {
  CeRef r;
  r.loss.assign(static_cast<std::size_t>(T), 0.0);
  r.lse = r.loss;
  r.dlogits.assign(static_cast<std::size_t>(T * V), 0.0);
  r.dlogits_mag = r.dlogits;
  for (index_t t = 0; t < T; ++t) {
    const index_t y = labels[static_cast<std::size_t>(t)];
    if (y == cpu::ignore_index) continue;
    double m = -1e300, s = 0;
    for (index_t j = 0; j < V; ++j) m = std::max(m, x[t * V + j]);
    for (index_t j = 0; j < V; ++j) s += std::exp(x[t * V + j] - m);
    r.lse[t] = m + std::log(s);
    r.loss[t] = r.lse[t] - x[t * V + y];
    for (index_t j = 0; j < V; ++j) {
      const double p = std::exp(x[t * V + j] - r.lse[t]);
      r.dlogits[t * V + j] = (p - (j == y ? 1.0 : 0.0)) * scale;
      // p's exponent x - lse is an fp32 number in the kernel (and in torch): p carries a
      // relative error of up to (|x| + |lse|) 2^-24 from that rounding, and 2 |lse| 2^-24
      // from lse's own (1e-6 = 16 2^-24 covers (|x| + 3 |lse|) / 16 of it).
      const double p_mag = p * (1.0 + (std::abs(x[t * V + j]) + 3.0 * std::abs(r.lse[t])) / 16.0);
      r.dlogits_mag[t * V + j] = (p_mag + (j == y ? 1.0 : 0.0)) * std::abs(scale);
    }
  }
  return r;
}

std::string rule_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const mp::RuleViolation& e) {
    return e.rule();
  }
  return "(nothing thrown)";
}

}  // namespace

// ==================================================================== RMSNorm

TEST_CASE("rms_norm forward matches the double reference, and torch's formula", "[dense]") {
  for (index_t width : {1, 7, 16, 33, 200}) {
    const index_t rows = 5;
    Vec x = random_vec(rows * width, 1 + static_cast<std::uint32_t>(width), 2.0f);
    Vec w = random_vec(width, 100 + static_cast<std::uint32_t>(width));
    const float eps = 1e-6f;
    const RmsRef ref = rms_ref(widen(x), rows, width, widen(w), eps);
    for (cpu::Isa isa : isas()) {
      Vec y(x.size()), inv(static_cast<std::size_t>(rows));
      cpu::rms_norm_forward(x.data(), rows, width, w.data(), eps, y.data(), inv.data(), isa);
      INFO("width " << width << " isa " << cpu::to_string(isa));
      CHECK(worst(y, ref.y, ref.y_mag, 1e-6) <= 1.0);
      DVec inv_mag(ref.inv.begin(), ref.inv.end());
      CHECK(worst(inv, ref.inv, inv_mag, 1e-6) <= 1.0);
      // torch's steps on fp32, literally (the sum exactly, as torch's cascade nearly is).
      for (index_t r = 0; r < rows; ++r) {
        double s = 0;
        for (index_t j = 0; j < width; ++j) s += static_cast<double>(x[r * width + j] * x[r * width + j]);
        const float torch_inv = 1.0f / std::sqrt(static_cast<float>(s) / static_cast<float>(width) + eps);
        CHECK(inv[r] == torch_inv);
        for (index_t j = 0; j < width; ++j) CHECK(y[r * width + j] == w[j] * (x[r * width + j] * torch_inv));
      }
    }
  }
}

TEST_CASE("rms_norm backward matches the analytic reference, which matches central differences", "[dense]") {
  // The reference's formulas against differences of its forward (L = sum dy * y).
  {
    const index_t rows = 3, width = 5;
    const double eps = 1e-6;
    DVec x = widen(random_vec(rows * width, 7)), dy = widen(random_vec(rows * width, 8)),
         w = widen(random_vec(width, 9));
    const RmsGrad g = rms_grad_ref(x, dy, rows, width, w, eps);
    auto loss = [&](const DVec& xx, const DVec& ww) {
      const RmsRef f = rms_ref(xx, rows, width, ww, eps);
      double L = 0;
      for (std::size_t i = 0; i < f.y.size(); ++i) L += dy[i] * f.y[i];
      return L;
    };
    const double step = 1e-5;
    for (std::size_t i = 0; i < x.size(); ++i) {
      DVec a = x, b = x;
      a[i] += step;
      b[i] -= step;
      CHECK(std::abs((loss(a, w) - loss(b, w)) / (2 * step) - g.dx[i]) <= 1e-7 * (1 + std::abs(g.dx[i])));
    }
    for (std::size_t j = 0; j < w.size(); ++j) {
      DVec a = w, b = w;
      a[j] += step;
      b[j] -= step;
      CHECK(std::abs((loss(x, a) - loss(x, b)) / (2 * step) - g.dw[j]) <= 1e-7 * (1 + std::abs(g.dw[j])));
    }
  }
  for (index_t width : {1, 6, 17, 64, 130}) {
    for (index_t rows : {1, 4, 9}) {
      Vec x = random_vec(rows * width, 11 + static_cast<std::uint32_t>(width * rows));
      Vec dy = random_vec(rows * width, 12 + static_cast<std::uint32_t>(width * rows));
      Vec w = random_vec(width, 13 + static_cast<std::uint32_t>(width));
      const float eps = 1e-5f;
      const RmsGrad ref = rms_grad_ref(widen(x), widen(dy), rows, width, widen(w), eps);
      Vec y(x.size()), inv(static_cast<std::size_t>(rows));
      cpu::rms_norm_forward(x.data(), rows, width, w.data(), eps, y.data(), inv.data());
      Vec first_dx, first_dw;
      for (cpu::Isa isa : isas()) {
        INFO("rows " << rows << " width " << width << " isa " << cpu::to_string(isa));
        Vec dx(x.size(), std::nanf("")), dw(static_cast<std::size_t>(width), std::nanf(""));
        cpu::rms_norm_backward(x.data(), dy.data(), rows, width, w.data(), inv.data(), dx.data(), dw.data(), true,
                               isa);
        CHECK(worst(dx, ref.dx, ref.dx_mag, 1e-6) <= 1.0);
        CHECK(worst(dw, ref.dw, ref.dw_mag, 1e-6) <= 1.0);
        // The weight's gradient is one fma chain per column in row order, literally.
        for (index_t j = 0; j < width; ++j) {
          float acc = 0.0f;
          for (index_t r = 0; r < rows; ++r) acc = std::fma(dy[r * width + j], x[r * width + j] * inv[r], acc);
          CHECK(std::bit_cast<std::uint32_t>(dw[j]) == std::bit_cast<std::uint32_t>(acc));
        }
        if (first_dx.empty()) {
          first_dx = dx;
          first_dw = dw;
        }
        CHECK(same_bits(dx, first_dx));  // every isa path: the same bits
        CHECK(same_bits(dw, first_dw));
        // Only dx, only dweight: the same bits as both together.
        Vec dx_only(x.size()), dw_only(static_cast<std::size_t>(width), std::nanf(""));
        cpu::rms_norm_backward(x.data(), dy.data(), rows, width, w.data(), inv.data(), dx_only.data(), nullptr, true,
                               isa);
        cpu::rms_norm_backward(x.data(), dy.data(), rows, width, w.data(), inv.data(), nullptr, dw_only.data(), true,
                               isa);
        CHECK(same_bits(dx_only, dx));
        CHECK(same_bits(dw_only, dw));
      }
    }
  }
}

TEST_CASE("rms_norm dweight chains split over calls equal one call bit for bit", "[dense]") {
  const index_t rows = 11, width = 37;
  Vec x = random_vec(rows * width, 21), dy = random_vec(rows * width, 22), w = random_vec(width, 23);
  Vec y(x.size()), inv(static_cast<std::size_t>(rows));
  cpu::rms_norm_forward(x.data(), rows, width, w.data(), 1e-6f, y.data(), inv.data());
  Vec one(static_cast<std::size_t>(width), std::nanf(""));
  cpu::rms_norm_backward(x.data(), dy.data(), rows, width, w.data(), inv.data(), nullptr, one.data(), true);
  for (index_t split : {0, 1, 5, 10, 11}) {
    // fresh on the first segment (from NaN-filled memory: never read), then continued; a
    // segment of no rows leaves a continued sum alone.
    Vec two(static_cast<std::size_t>(width), std::nanf(""));
    cpu::rms_norm_backward(x.data(), dy.data(), split, width, w.data(), inv.data(), nullptr, two.data(), true);
    cpu::rms_norm_backward(x.data() + split * width, dy.data() + split * width, rows - split, width, w.data(),
                           inv.data() + split, nullptr, two.data(), false);
    CHECK(same_bits(two, one));
    // Three segments, as three ranks in row order would run them.
    Vec three(static_cast<std::size_t>(width), std::nanf(""));
    const index_t a = split / 2;
    cpu::rms_norm_backward(x.data(), dy.data(), a, width, w.data(), inv.data(), nullptr, three.data(), true);
    cpu::rms_norm_backward(x.data() + a * width, dy.data() + a * width, split - a, width, w.data(), inv.data() + a,
                           nullptr, three.data(), false);
    cpu::rms_norm_backward(x.data() + split * width, dy.data() + split * width, rows - split, width, w.data(),
                           inv.data() + split, nullptr, three.data(), false);
    CHECK(same_bits(three, one));
  }
}

TEST_CASE("rms_norm with 0 rows writes nothing; fresh gradients become zeros", "[dense]") {
  const index_t width = 9;
  Vec w = random_vec(width, 31), sentinel(4, 42.0f);
  Vec y = sentinel, inv = sentinel, dx = sentinel;
  cpu::rms_norm_forward(nullptr, 0, width, w.data(), 1e-6f, y.data(), inv.data());
  CHECK(same_bits(y, sentinel));
  CHECK(same_bits(inv, sentinel));
  Vec dw(static_cast<std::size_t>(width), std::nanf(""));
  cpu::rms_norm_backward(nullptr, nullptr, 0, width, w.data(), nullptr, dx.data(), dw.data(), true);
  CHECK(same_bits(dx, sentinel));
  CHECK(same_bits(dw, Vec(static_cast<std::size_t>(width), 0.0f)));
  Vec kept(static_cast<std::size_t>(width), 3.5f);
  cpu::rms_norm_backward(nullptr, nullptr, 0, width, w.data(), nullptr, nullptr, kept.data(), false);
  CHECK(same_bits(kept, Vec(static_cast<std::size_t>(width), 3.5f)));
  // Per-head use: rows = tokens * heads, width = head_dim; one row as a whole.
  Vec x = random_vec(width, 32), y1(static_cast<std::size_t>(width)), inv1(1);
  cpu::rms_norm_forward(x.data(), 1, width, w.data(), 1e-6f, y1.data(), inv1.data());
  const RmsRef ref = rms_ref(widen(x), 1, width, widen(w), 1e-6);
  CHECK(worst(y1, ref.y, ref.y_mag, 1e-6) <= 1.0);
}

// ==================================================================== rotary

TEST_CASE("rope table: transformers' inverse frequencies, cos and sin", "[dense]") {
  // torch 2.15 / transformers 5.25: 1.0 / (1e6 ** (torch.arange(0, 128, 2).float() / 128)).
  const float torch_inv_freq[64] = {
      0x1p+0f,        0x1.9c975ap-1f,  0x1.4c7bcp-1f,   0x1.0beddep-1f,  0x1.afd136p-2f,  0x1.5bf9fep-2f,
      0x1.186a08p-2f, 0x1.c3f06ap-3f,  0x1.6c310ep-3f,  0x1.257b22p-3f,  0x1.d8ffacp-4f,  0x1.7d298cp-4f,
      0x1.33281ap-4f, 0x1.ef0a26p-5f,  0x1.8eec7ep-5f,  0x1.41783ap-5f,  0x1.030dc6p-5f,  0x1.a1835p-6f,
      0x1.507316p-6f, 0x1.0f201p-6f,   0x1.b4f7e4p-7f,  0x1.6020a4p-7f,  0x1.1bc25ap-7f,  0x1.c9548cp-8f,
      0x1.708938p-8f, 0x1.28fb5cp-8f,  0x1.dea41cp-9f,  0x1.81b58ap-9f,  0x1.36d21ap-9f,  0x1.f4f1ep-10f,
      0x1.93aeb8p-10f, 0x1.454deep-10f, 0x1.0624dep-10f, 0x1.a67e5p-11f,  0x1.547688p-11f, 0x1.125c04p-11f,
      0x1.ba2e4ap-12f, 0x1.6453f6p-12f, 0x1.1f24e4p-12f, 0x1.cec924p-13f, 0x1.74eea6p-13f, 0x1.2c8648p-13f,
      0x1.e459c4p-14f, 0x1.864f6ap-14f, 0x1.3a8748p-14f, 0x1.faeba8p-15f, 0x1.987f7cp-15f, 0x1.492f56p-15f,
      0x1.094564p-15f, 0x1.ab8882p-16f, 0x1.58863ap-16f, 0x1.15a1dap-16f, 0x1.bf749ep-17f, 0x1.68941cp-17f,
      0x1.2291c6p-17f, 0x1.d44e64p-18f, 0x1.796182p-18f, 0x1.301c04p-18f, 0x1.ea20ep-19f,  0x1.8af756p-19f,
      0x1.3e47c8p-19f, 0x1.007bd8p-19f, 0x1.9d5ef2p-20f, 0x1.4d1c98p-20f};
  const Vec mine = cpu::RopeTable::default_inv_freq(128, 1e6);
  REQUIRE(mine.size() == 64);
  int different = 0;
  for (std::size_t i = 0; i < 64; ++i) {
    const auto a = std::bit_cast<std::int32_t>(mine[i]), b = std::bit_cast<std::int32_t>(torch_inv_freq[i]);
    CHECK(std::abs(a - b) <= 1);  // within an ulp
    different += a != b;
    // The definition: the correctly rounded fp32 power of the fp32 operands.
    const float e = static_cast<float>(2 * i) / 128.0f;
    CHECK(mine[i] == 1.0f / static_cast<float>(std::pow(1e6, static_cast<double>(e))));
  }
  CHECK(different == 1);  // i = 37: torch's vectorized pow is faithful, not correctly rounded
  CHECK(std::bit_cast<std::int32_t>(mine[37]) != std::bit_cast<std::int32_t>(torch_inv_freq[37]));

  // torch's cos/sin of positions 3 and 1000 (theta 1e4, d 8): within an ulp.
  const std::vector<index_t> pos = {3, 1000};
  const cpu::RopeTable table(pos, 8, 10000.0);
  REQUIRE(table.tokens() == 2);
  REQUIRE(table.dim() == 8);
  const float torch_cos[8] = {-0x1.fae04cp-1f, 0x1.e921dep-1f, 0x1.ffc506p-1f, 0x1.ffff6ap-1f,
                              0x1.1ff026p-1f,  0x1.b981dcp-1f, -0x1.ad9ac8p-1f, 0x1.14a282p-1f};
  const float torch_sin[8] = {0x1.210386p-3f, 0x1.2e9cdap-2f, 0x1.eb723ep-6f,  0x1.893726p-9f,
                              0x1.a75cc2p-1f, -0x1.03425cp-1f, -0x1.1689fp-1f, 0x1.aed548p-1f};
  for (index_t t = 0; t < 2; ++t)
    for (index_t i = 0; i < 4; ++i) {
      CHECK(std::abs(std::bit_cast<std::int32_t>(table.cos_row(t)[i]) -
                     std::bit_cast<std::int32_t>(torch_cos[t * 4 + i])) <= 1);
      CHECK(std::abs(std::bit_cast<std::int32_t>(table.sin_row(t)[i]) -
                     std::bit_cast<std::int32_t>(torch_sin[t * 4 + i])) <= 1);
    }
  // From given frequencies, with an attention scaling (yarn's mscale): cos * scaling in fp32.
  const Vec inv = {1.0f, 0.25f};
  const cpu::RopeTable scaled(pos, inv, 1.5f);
  CHECK(scaled.dim() == 4);
  CHECK(scaled.cos_row(1)[1] == static_cast<float>(std::cos(250.0)) * 1.5f);
  CHECK(rule_of([&] { cpu::RopeTable(pos, 7, 1e4); }) == "shape_matches");
}

namespace {
// transformers' rope transcribed in fp32, each operation rounded as torch rounds it.
// half-split: q * cos + rotate_half(q) * sin; interleaved (DeepSeek-V3, transformers 5.x):
// cat([q1 * cos - q2 * sin, q2 * cos + q1 * sin]) with q1 = q[0::2], q2 = q[1::2]; earlier
// transformers: q.view(d/2, 2).transpose(-1, -2).reshape(d), then the half-split formula.
Vec torch_rope(const Vec& x, index_t d, const float* c, const float* s, int form) {
  const index_t h = d / 2;
  Vec q = x, out(static_cast<std::size_t>(d));
  if (form == 2) {  // the older de-interleave by view + transpose, then rotate_half
    for (index_t i = 0; i < h; ++i) {
      q[i] = x[2 * i];
      q[i + h] = x[2 * i + 1];
    }
    form = 0;
  }
  if (form == 0) {
    for (index_t i = 0; i < d; ++i) {
      const float rot = i < h ? -q[i + h] : q[i - h];
      const float a = q[i] * c[i % h];
      const float b = rot * s[i % h];
      out[i] = a + b;
    }
    return out;
  }
  for (index_t i = 0; i < h; ++i) {  // form 1: the even/odd slices
    const float q1 = x[2 * i], q2 = x[2 * i + 1];
    const float a = q1 * c[i], b = q2 * s[i], e = q2 * c[i], f = q1 * s[i];
    out[i] = a - b;
    out[i + h] = e + f;
  }
  return out;
}
}  // namespace

TEST_CASE("rope forward: half-split and interleaved against transformers", "[dense]") {
  // torch's own outputs for x [2 tokens, 2 heads, 8] at positions 3 and 1000, theta 1e4.
  const float torch_x[32] = {
      -0x1.326afp-1f,  -0x1.b202d2p-1f, -0x1.f6dceep-1f, -0x1.f7a7a2p-1f, -0x1.b4478p-1f,  -0x1.35dafep-1f,
      -0x1.1afcf8p-2f, 0x1.7024a6p-4f,  0x1.c69a58p-2f,  0x1.79d222p-1f,  0x1.dd343ap-1f,  0x1.fffff6p-1f,
      0x1.dd7fb6p-1f,  0x1.7a5ee8p-1f,  0x1.c81038p-2f,  0x1.76a36ep-4f,  -0x1.196ba8p-2f, -0x1.3534b4p-1f,
      -0x1.b3da18p-1f, -0x1.f781fp-1f,  -0x1.f70406p-1f, -0x1.b2717p-1f,  -0x1.33120cp-1f, -0x1.144664p-2f,
      0x1.8bef2cp-4f,  0x1.ccd85ap-2f,  0x1.7c2abp-1f,   0x1.de750ap-1f,  0x1.fffdap-1f,   0x1.dc3a84p-1f,
      0x1.7802dcp-1f,  0x1.c1ce1p-2f};
  const float torch_interleaved[32] = {
      0x1.6c995p-1f,   -0x1.4b902ep-1f, -0x1.aac9e8p-1f, -0x1.1b4354p-2f, 0x1.826d0ep-1f,  -0x1.3ae20cp+0f,
      -0x1.42cd6cp-1f, 0x1.6cbee4p-4f,  -0x1.712a5ep-2f, 0x1.4f616cp+0f,  -0x1.85a0c8p-2f, 0x1.4f3354p-3f,
      0x1.906dfp-1f,   0x1.8fbc1ep-2f,  -0x1.209ff2p+0f, 0x1.b25e5ap-2f,  0x1.6ddfdep-2f,  -0x1.0b96aep-1f,
      -0x1.e9c20ep-1f, -0x1.32a79cp-1f, 0x1.1e4124p-1f,  -0x1.30e93ep+0f, -0x1.c155fap-1f, -0x1.161dbcp-2f,
      -0x1.4565aap-2f, 0x1.1d0cb4p+0f,  -0x1.55097p-2f,  0x1.bd258p-6f,   0x1.550464p-2f,  0x1.b82898p-2f,
      -0x1.530fd4p+0f, 0x1.b5eaf4p-1f};
  const float torch_half[32] = {
      0x1.6ceb44p-1f,  -0x1.430edap-1f, -0x1.f2648p-1f,  -0x1.f7ca66p-1f, 0x1.84abecp-1f,  -0x1.a84676p-1f,
      -0x1.390732p-2f, 0x1.640dc6p-4f,  -0x1.0b0124p-1f, 0x1.02b2bp+0f,   -0x1.145abp-1f,  0x1.da7524p-2f,
      0x1.c87c7ep-1f,  0x1.0debe4p-2f,  -0x1.c2f1a8p-1f, 0x1.c822ap-1f,   0x1.a4934cp-2f,  -0x1.4e0494p-2f,
      -0x1.aa71f2p-1f, -0x1.f71746p-1f, 0x1.de1ffp-1f,   -0x1.fa6a7cp-1f, -0x1.400186p-1f, -0x1.174b76p-2f,
      -0x1.8b8584p-1f, 0x1.b7d7fp-1f,   -0x1.c9b76p-3f,  0x1.150cf4p-3f,  0x1.48db4ap-1f,  0x1.25fb9ap-1f,
      -0x1.0528d6p+0f, 0x1.060fc4p+0f};
  const index_t d = 8, heads = 2, tokens = 2;
  const std::vector<index_t> pos = {3, 1000};
  const cpu::RopeTable table(pos, d, 10000.0);
  // torch's layout is [heads, tokens, d]; ours [tokens, heads, d].
  auto ours = [&](const float* torch_layout) {
    Vec v(static_cast<std::size_t>(tokens * heads * d));
    for (index_t h = 0; h < heads; ++h)
      for (index_t t = 0; t < tokens; ++t)
        for (index_t i = 0; i < d; ++i) v[(t * heads + h) * d + i] = torch_layout[(h * tokens + t) * d + i];
    return v;
  };
  const Vec x = ours(torch_x), want_half = ours(torch_half), want_inter = ours(torch_interleaved);
  for (cpu::Isa isa : isas()) {
    for (bool interleaved : {false, true}) {
      Vec y = x;
      cpu::rope_forward(y.data(), tokens, heads, d, 0, d, table, interleaved, isa);
      const Vec& want = interleaved ? want_inter : want_half;
      // Within 2^-21 of |x1| + |x2| (the fma's single rounding and cos/sin within an ulp).
      for (index_t t = 0; t < tokens; ++t)
        for (index_t h = 0; h < heads; ++h)
          for (index_t i = 0; i < d; ++i) {
            const float* r = &x[static_cast<std::size_t>((t * heads + h) * d)];
            const index_t p = i % (d / 2);
            const float mag = interleaved ? std::abs(r[2 * p]) + std::abs(r[2 * p + 1])
                                          : std::abs(r[p]) + std::abs(r[p + d / 2]);
            CHECK(std::abs(y[(t * heads + h) * d + i] - want[(t * heads + h) * d + i]) <= 0x1p-21f * mag);
          }
    }
  }
}

TEST_CASE("rope forward and backward against the double reference, both modes, offsets", "[dense]") {
  // DeepSeek-V3-like: heads of 12 values, rotary dims [4, 10) (d = 6: odd half), and a
  // Qwen3-like whole head of 32 (blocks of 16 and a remainder: 40).
  struct Case {
    index_t tokens, heads, stride, offset, d;
  };
  for (const Case c : {Case{5, 3, 12, 4, 6}, Case{4, 2, 40, 0, 40}, Case{1, 1, 2, 0, 2}, Case{3, 2, 70, 3, 66}}) {
    std::vector<index_t> pos;
    for (index_t t = 0; t < c.tokens; ++t) pos.push_back(t * 37 + 2);
    const cpu::RopeTable table(pos, c.d, 10000.0);
    const Vec x = random_vec(c.tokens * c.heads * c.stride, 41 + static_cast<std::uint32_t>(c.d));
    const Vec g = random_vec(c.tokens * c.heads * c.stride, 42 + static_cast<std::uint32_t>(c.d));
    const index_t h = c.d / 2;
    for (bool interleaved : {false, true}) {
      // Reference: r' = R r in double with the table's fp32 cos and sin, and R^T.
      DVec want(x.size()), mag(x.size()), want_back(x.size()), mag_back(x.size());
      for (index_t t = 0; t < c.tokens; ++t)
        for (index_t hd = 0; hd < c.heads; ++hd) {
          const index_t base = (t * c.heads + hd) * c.stride;
          for (index_t i = 0; i < c.stride; ++i) {
            want[base + i] = x[base + i];
            mag[base + i] = std::abs(x[base + i]);
            want_back[base + i] = g[base + i];
            mag_back[base + i] = std::abs(g[base + i]);
          }
          for (index_t i = 0; i < h; ++i) {
            const double cs = table.cos_row(t)[i], sn = table.sin_row(t)[i];
            const index_t ia = base + c.offset + (interleaved ? 2 * i : i);
            const index_t ib = base + c.offset + (interleaved ? 2 * i + 1 : i + h);
            const double a = x[ia], b = x[ib];
            want[base + c.offset + i] = a * cs - b * sn;
            want[base + c.offset + i + h] = b * cs + a * sn;
            mag[base + c.offset + i] = mag[base + c.offset + i + h] = std::abs(a) + std::abs(b);
            const double ga = g[base + c.offset + i], gb = g[base + c.offset + i + h];
            want_back[ia] = ga * cs + gb * sn;
            want_back[ib] = gb * cs - ga * sn;
            mag_back[ia] = mag_back[ib] = std::abs(ga) + std::abs(gb);
          }
        }
      Vec first_y, first_dx;
      for (cpu::Isa isa : isas()) {
        INFO("d " << c.d << " interleaved " << interleaved << " isa " << cpu::to_string(isa));
        Vec y = x, dx = g;
        cpu::rope_forward(y.data(), c.tokens, c.heads, c.stride, c.offset, c.d, table, interleaved, isa);
        cpu::rope_backward(dx.data(), c.tokens, c.heads, c.stride, c.offset, c.d, table, interleaved, isa);
        CHECK(worst(y, want, mag, 1e-6) <= 1.0);
        CHECK(worst(dx, want_back, mag_back, 1e-6) <= 1.0);
        if (first_y.empty()) {
          first_y = y;
          first_dx = dx;
        }
        CHECK(same_bits(y, first_y));
        CHECK(same_bits(dx, first_dx));
      }
      // The backward is the forward's transpose: <R x, g> = <x, R^T g>.
      double lhs = 0, rhs = 0, scale = 0;
      for (std::size_t i = 0; i < x.size(); ++i) {
        lhs += want[i] * g[i];
        rhs += static_cast<double>(x[i]) * want_back[i];
        scale += std::abs(want[i] * g[i]);
      }
      CHECK(std::abs(lhs - rhs) <= 1e-6 * scale);
      // And its inverse: backward(forward(x)) = x.
      Vec round_trip = x;
      cpu::rope_forward(round_trip.data(), c.tokens, c.heads, c.stride, c.offset, c.d, table, interleaved);
      cpu::rope_backward(round_trip.data(), c.tokens, c.heads, c.stride, c.offset, c.d, table, interleaved);
      DVec xd = widen(x), xm(x.size());
      for (std::size_t i = 0; i < x.size(); ++i) xm[i] = mag[i] + std::abs(x[i]);
      CHECK(worst(round_trip, xd, xm, 1e-6) <= 1.0);
    }
  }
}

TEST_CASE("rope interleaved equals a transcription of transformers' formulas", "[dense]") {
  const index_t d = 64, tokens = 6, heads = 3;
  std::vector<index_t> pos = {0, 1, 2, 17, 500, 4095};
  const cpu::RopeTable table(pos, d, 10000.0);
  const Vec x = random_vec(tokens * heads * d, 51);
  for (bool interleaved : {false, true}) {
    Vec y = x;
    cpu::rope_forward(y.data(), tokens, heads, d, 0, d, table, interleaved);
    double w = 0;
    for (index_t t = 0; t < tokens; ++t)
      for (index_t h = 0; h < heads; ++h) {
        const Vec r(x.begin() + (t * heads + h) * d, x.begin() + (t * heads + h + 1) * d);
        for (int form : interleaved ? std::vector<int>{1, 2} : std::vector<int>{0}) {
          const Vec want = torch_rope(r, d, table.cos_row(t), table.sin_row(t), form);
          for (index_t i = 0; i < d; ++i) {
            const index_t p = i % (d / 2);
            const float mag = interleaved ? std::abs(r[2 * p]) + std::abs(r[2 * p + 1])
                                          : std::abs(r[p]) + std::abs(r[p + d / 2]);
            w = std::max(w, std::abs(static_cast<double>(y[(t * heads + h) * d + i]) - want[i]) / (0x1p-23 * mag));
          }
        }
      }
    CHECK(w <= 1.0);  // within an fp32 rounding of the inputs' scale: fma versus torch's two roundings
  }
}

TEST_CASE("rope with 0 tokens writes nothing; bad shapes are refused", "[dense]") {
  const std::vector<index_t> pos = {5};
  const cpu::RopeTable table(pos, 4, 10000.0);
  Vec sentinel(8, 1.25f), x = sentinel;
  cpu::rope_forward(x.data(), 0, 2, 4, 0, 4, table, true);
  cpu::rope_backward(x.data(), 0, 2, 4, 0, 4, table, false);
  CHECK(same_bits(x, sentinel));
  const cpu::RopeTable empty(std::vector<index_t>{}, 4, 10000.0);
  cpu::rope_forward(nullptr, 0, 2, 4, 0, 4, empty, false);
  CHECK(rule_of([&] { cpu::rope_forward(x.data(), 2, 1, 4, 0, 4, table, false); }) == "shape_matches");  // 1 row
  CHECK(rule_of([&] { cpu::rope_forward(x.data(), 1, 1, 4, 2, 4, table, false); }) == "shape_matches");  // past the head
  CHECK(rule_of([&] { cpu::rope_forward(x.data(), 1, 1, 8, 0, 6, table, false); }) == "shape_matches");  // table's d
}

// ==================================================================== attention

TEST_CASE("attention forward and backward match the double reference (GQA, several sequences)", "[dense]") {
  struct Case {
    std::vector<index_t> lengths;
    index_t heads, kv_heads, qk, v;
  };
  const std::vector<Case> cases = {
      {{5, 1, 17, 3}, 4, 4, 8, 8},    // MHA, a sequence of 1, one past a block of 16 keys
      {{1, 9, 4}, 4, 2, 7, 5},        // group of 2, odd dims, qk != v
      {{20, 2}, 8, 2, 24, 16},        // group of 4, dims past a block
      {{1}, 2, 1, 3, 3},              // one token
      {{6, 0, 3}, 2, 1, 12, 20},      // an empty sequence in the middle (MQA)
      {{33}, 1, 1, 18, 6},            // one head, 33 keys
      {{19, 2}, 2, 1, 72, 67},        // dims past 64 (the widest register blocks) and 8
  };
  cpu::ThreadPool pool(3);
  int c = 0;
  for (const Case& cs : cases) {
    ++c;
    const Seqs seqs{cs.lengths};
    const index_t T = seqs.tokens();
    const AttnShape sh{cs.heads, cs.kv_heads, cs.qk, cs.v, 1.0 / std::sqrt(static_cast<double>(cs.qk))};
    const auto seed = static_cast<std::uint32_t>(100 * c);
    // Scores of a few units: softmaxes neither flat nor one-hot.
    const Vec q = random_vec(T * cs.heads * cs.qk, seed + 1, 1.5f), k = random_vec(T * cs.kv_heads * cs.qk, seed + 2, 1.5f),
              v = random_vec(T * cs.kv_heads * cs.v, seed + 3), d_o = random_vec(T * cs.heads * cs.v, seed + 4);
    const DVec dod = widen(d_o);
    const AttnRef ref = attn_ref(widen(q), widen(k), widen(v), &dod, seqs, sh);
    AttnOut first;
    for (cpu::Isa isa : isas())
      for (cpu::ThreadPool* p : {static_cast<cpu::ThreadPool*>(nullptr), &pool}) {
        INFO("case " << c << " isa " << cpu::to_string(isa) << (p ? " pool of 3" : " no pool"));
        const AttnOut out = run_attention(q, k, v, d_o, seqs, sh, p, isa);
        CHECK(worst(out.o, ref.o, ref.o_mag, 1e-6) <= 1.0);
        DVec lse_mag(ref.lse.size());
        for (std::size_t i = 0; i < lse_mag.size(); ++i) lse_mag[i] = std::max(1.0, std::abs(ref.lse[i]));
        CHECK(worst(out.lse, ref.lse, lse_mag, 1e-6) <= 1.0);
        CHECK(worst(out.dq, ref.dq, ref.dq_mag, 1e-6) <= 1.0);
        CHECK(worst(out.dk, ref.dk, ref.dk_mag, 1e-6) <= 1.0);
        CHECK(worst(out.dv, ref.dv, ref.dv_mag, 1e-6) <= 1.0);
        if (first.o.empty() && T > 0) first = out;
        // Every isa path and thread count: the same bits.
        CHECK(same_bits(out.o, first.o));
        CHECK(same_bits(out.lse, first.lse));
        CHECK(same_bits(out.dq, first.dq));
        CHECK(same_bits(out.dk, first.dk));
        CHECK(same_bits(out.dv, first.dv));
      }
  }
}

TEST_CASE("attention: the reference's backward matches central differences", "[dense]") {
  const Seqs seqs{{3, 2}};
  const AttnShape sh{2, 1, 3, 2, 0.7};
  DVec q = widen(random_vec(5 * 2 * 3, 61)), k = widen(random_vec(5 * 3, 62)), v = widen(random_vec(5 * 2, 63)),
       d_o = widen(random_vec(5 * 2 * 2, 64));
  const AttnRef g = attn_ref(q, k, v, &d_o, seqs, sh);
  auto loss = [&] {
    const AttnRef f = attn_ref(q, k, v, nullptr, seqs, sh);
    double L = 0;
    for (std::size_t i = 0; i < f.o.size(); ++i) L += d_o[i] * f.o[i];
    return L;
  };
  const double step = 1e-5;
  auto check = [&](DVec& x, const DVec& grad) {
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double keep = x[i];
      x[i] = keep + step;
      const double a = loss();
      x[i] = keep - step;
      const double b = loss();
      x[i] = keep;
      CHECK(std::abs((a - b) / (2 * step) - grad[i]) <= 1e-7 * (1 + std::abs(grad[i])));
    }
  };
  check(q, g.dq);
  check(k, g.dk);
  check(v, g.dv);
}

TEST_CASE("attention: dk and dv chains run over the group's heads, then the query tokens, in order", "[dense]") {
  // The stated order, literally, for one sequence of 11 (past a block of 8 query rows) with
  // a group of 2: recomputed from the kernel's own lse, summed as the header says.
  const index_t L = 11, H = 2, D = 5;
  const Seqs seqs{{L}};
  const float scaling = 0.5f;
  const Vec q = random_vec(L * H * D, 71), k = random_vec(L * D, 72), v = random_vec(L * D, 73),
            d_o = random_vec(L * H * D, 74);
  auto dot = [&](const float* a, const float* b) {
    float acc = 0.0f;
    for (index_t c = 0; c < D; ++c) acc = std::fma(a[c], b[c], acc);
    return acc;
  };
  for (cpu::Isa isa : isas()) {
    const AttnOut out = run_attention(q, k, v, d_o, seqs, AttnShape{H, 1, D, D, scaling}, nullptr, isa);
    Vec dk(static_cast<std::size_t>(L * D), 0.0f), dv(dk.size(), 0.0f), dq(q.size(), 0.0f);
    for (index_t h = 0; h < H; ++h)
      for (index_t i = 0; i < L; ++i) {
        const float* qi = &q[(i * H + h) * D];
        const float* doi = &d_o[(i * H + h) * D];
        const float Dsum = dot(doi, &out.o[(i * H + h) * D]);
        for (index_t j = 0; j <= i; ++j) {
          const float s = dot(qi, &k[j * D]) * scaling;
          const float p = cpu::exp_fixed(s - out.lse[i * H + h]);
          const float ds = (p * (dot(doi, &v[j * D]) - Dsum)) * scaling;
          for (index_t c = 0; c < D; ++c) {
            dq[(i * H + h) * D + c] = std::fma(ds, k[j * D + c], dq[(i * H + h) * D + c]);
            dk[j * D + c] = std::fma(ds, qi[c], dk[j * D + c]);
            dv[j * D + c] = std::fma(p, doi[c], dv[j * D + c]);
          }
        }
      }
    INFO("isa " << cpu::to_string(isa));
    CHECK(same_bits(out.dq, dq));
    CHECK(same_bits(out.dk, dk));
    CHECK(same_bits(out.dv, dv));
  }
}

TEST_CASE("attention with 0 tokens writes nothing; bad head counts are refused", "[dense]") {
  Vec sentinel(6, 9.0f), o = sentinel, lse = sentinel;
  for (const std::vector<index_t>& lengths : {std::vector<index_t>{}, std::vector<index_t>{0, 0}}) {
    cpu::attention_forward(nullptr, nullptr, nullptr, lengths, 4, 2, 8, 8, 1.0f, o.data(), lse.data());
    cpu::attention_backward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, lengths, 4, 2, 8, 8, 1.0f, o.data(),
                            o.data(), o.data());
  }
  CHECK(same_bits(o, sentinel));
  CHECK(same_bits(lse, sentinel));
  const std::vector<index_t> one = {1};
  Vec q(12), kv(12);
  CHECK(rule_of([&] { cpu::attention_forward(q.data(), kv.data(), kv.data(), one, 3, 2, 4, 4, 1.0f, o.data(), nullptr); }) ==
        "kv_heads_divisible");
  CHECK(rule_of([&] { cpu::attention_forward(q.data(), kv.data(), kv.data(), one, 2, 0, 4, 4, 1.0f, o.data(), nullptr); }) ==
        "kv_heads_divisible");
  const std::vector<index_t> negative = {2, -1};
  CHECK(rule_of([&] { cpu::attention_forward(q.data(), kv.data(), kv.data(), negative, 1, 1, 1, 1, 1.0f, o.data(), nullptr); }) ==
        "shape_matches");
}

// ==================================================================== cross entropy

namespace {
struct CeCase {
  index_t T, V;
  std::vector<index_t> labels;
  Vec logits;  // [T, V]
};
CeCase ce_case(index_t T, index_t V, std::uint32_t seed) {
  CeCase c{T, V, {}, random_vec(T * V, seed, 3.0f)};
  std::mt19937 rng(seed + 1);
  for (index_t t = 0; t < T; ++t)
    c.labels.push_back(t % 5 == 3 ? cpu::ignore_index : static_cast<index_t>(rng() % static_cast<std::uint32_t>(V)));
  if (T > 0) c.labels[0] = V - 1;  // the last column
  return c;
}
}  // namespace

TEST_CASE("cross entropy forward and backward match the double reference", "[dense]") {
  for (const auto& shape : {std::pair<index_t, index_t>{1, 1}, {1, 7}, {9, 33}, {17, 1000}, {4, 5003}}) {
    const index_t T = shape.first, V = shape.second;
    const CeCase c = ce_case(T, V, static_cast<std::uint32_t>(T * 31 + V));
    const double scale = 1.0 / 7.0;
    const CeRef ref = ce_ref(widen(c.logits), T, V, c.labels, scale);
    Vec first_loss, first_d;
    for (cpu::Isa isa : isas()) {
      INFO("T " << T << " V " << V << " isa " << cpu::to_string(isa));
      Vec loss(static_cast<std::size_t>(T), std::nanf("")), lse(loss.size(), std::nanf(""));
      cpu::cross_entropy_forward(c.logits.data(), T, V, V, c.labels, loss.data(), lse.data(), isa);
      DVec loss_mag(loss.size()), lse_mag(loss.size());
      for (index_t t = 0; t < T; ++t) {
        // loss = log S - (x_y - m): two non-negative terms, each within an ulp or two.
        loss_mag[t] = std::abs(ref.loss[t]) + 0.1;
        lse_mag[t] = std::abs(ref.lse[t]) + 1.0;
        if (c.labels[t] == cpu::ignore_index) {
          CHECK(loss[t] == 0.0f);
          CHECK(lse[t] == 0.0f);
        }
      }
      CHECK(worst(loss, ref.loss, loss_mag, 1e-6) <= 1.0);
      CHECK(worst(lse, ref.lse, lse_mag, 1e-6) <= 1.0);
      const index_t ld = V + 3;  // a row stride past the columns: the padding is not written
      Vec d(static_cast<std::size_t>(T * ld), 7.0f);
      cpu::cross_entropy_backward(c.logits.data(), T, V, V, c.labels, lse.data(), static_cast<float>(scale), d.data(),
                                  ld, isa);
      Vec packed(static_cast<std::size_t>(T * V));
      for (index_t t = 0; t < T; ++t) {
        for (index_t j = 0; j < V; ++j) packed[t * V + j] = d[t * ld + j];
        for (index_t j = V; j < ld; ++j) CHECK(d[t * ld + j] == 7.0f);
      }
      CHECK(worst(packed, ref.dlogits, ref.dlogits_mag, 1e-6) <= 1.0);
      if (first_loss.empty()) {
        first_loss = loss;
        first_d = packed;
      }
      CHECK(same_bits(loss, first_loss));
      CHECK(same_bits(packed, first_d));
      // In place: the gradient over the logits themselves.
      Vec in_place = c.logits;
      cpu::cross_entropy_backward(in_place.data(), T, V, V, c.labels, lse.data(), static_cast<float>(scale),
                                  in_place.data(), V, isa);
      CHECK(same_bits(in_place, packed));
    }
  }
}

TEST_CASE("cross entropy: the reference's backward matches central differences", "[dense]") {
  const index_t T = 3, V = 6;
  const CeCase c = ce_case(T, V, 81);
  DVec x = widen(c.logits);
  const double scale = 0.25;
  const CeRef g = ce_ref(x, T, V, c.labels, scale);
  auto loss = [&] {
    const CeRef f = ce_ref(x, T, V, c.labels, scale);
    double L = 0;
    for (double l : f.loss) L += scale * l;
    return L;
  };
  const double step = 1e-5;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + step;
    const double a = loss();
    x[i] = keep - step;
    const double b = loss();
    x[i] = keep;
    CHECK(std::abs((a - b) / (2 * step) - g.dlogits[i]) <= 1e-7 * (1 + std::abs(g.dlogits[i])));
  }
}

TEST_CASE("cross entropy with 0 tokens writes nothing; labels outside the vocab are refused", "[dense]") {
  Vec sentinel(3, 5.0f), loss = sentinel, lse = sentinel;
  cpu::cross_entropy_forward(nullptr, 0, 10, 10, {}, loss.data(), lse.data());
  cpu::cross_entropy_backward(nullptr, 0, 10, 10, {}, nullptr, 1.0f, loss.data(), 10);
  CHECK(same_bits(loss, sentinel));
  CHECK(same_bits(lse, sentinel));
  const Vec logits = random_vec(2 * 4, 91);
  for (index_t bad : {index_t{4}, index_t{-1}, index_t{-101}}) {
    const std::vector<index_t> labels = {1, bad};
    try {
      cpu::cross_entropy_forward(logits.data(), 2, 4, 4, labels, loss.data(), lse.data());
      FAIL("no error");
    } catch (const mp::RuleViolation& e) {
      CHECK(e.rule() == "token_in_vocab");
      CHECK_THAT(e.what(), Catch::Contains("token 1 has label " + std::to_string(bad)) &&
                               Catch::Contains("[0, 4)"));
    }
    CHECK(rule_of([&] {
            Vec d(8);
            cpu::cross_entropy_backward(logits.data(), 2, 4, 4, labels, lse.data(), 1.0f, d.data(), 4);
          }) == "token_in_vocab");
  }
}

TEST_CASE("vocab-parallel cross entropy over 1, 2 and 4 ranks equals the single-rank loss", "[dense]") {
  for (const auto& shape : {std::pair<index_t, index_t>{7, 37}, {5, 1031}, {3, 9}, {0, 12}}) {
    const index_t T = shape.first, V = shape.second;
    const CeCase c = ce_case(T, V, static_cast<std::uint32_t>(T + 7 * V));
    Vec loss(static_cast<std::size_t>(T)), lse(loss.size());
    cpu::cross_entropy_forward(c.logits.data(), T, V, V, c.labels, loss.data(), lse.data());
    const float scale = 0.5f;
    Vec d(static_cast<std::size_t>(T * V));
    cpu::cross_entropy_backward(c.logits.data(), T, V, V, c.labels, lse.data(), scale, d.data(), V);
    for (index_t R : {1, 2, 4}) {
      // torch.chunk's split: ceil(V / R) columns per rank, the last ones fewer (or none: V 9
      // on 4 ranks is 3, 3, 3, 0).
      const index_t per = (V + R - 1) / R;
      std::vector<Vec> losses(static_cast<std::size_t>(R)), lses(losses.size()), grads(losses.size());
      std::vector<Vec> grads_own_lse(losses.size());
      mp::ThreadWorld world(R);
      world.run([&](mp::ThreadComm& comm) {
        const index_t r = comm.rank(), begin = std::min(V, r * per), local = std::min(V, begin + per) - begin;
        // This rank's columns, as their own [T, local] array (row stride local + 1).
        const index_t ld = local + 1;
        Vec mine(static_cast<std::size_t>(std::max<index_t>(T * ld, 1)));
        for (index_t t = 0; t < T; ++t)
          for (index_t j = 0; j < local; ++j) mine[t * ld + j] = c.logits[t * V + begin + j];
        Vec l(static_cast<std::size_t>(T)), s(l.size());
        cpu::cross_entropy_forward_vocab_parallel(comm, comm.world_group(), mine.data(), T, local, ld, begin, V,
                                                  c.labels, l.data(), s.data());
        Vec g(static_cast<std::size_t>(T * local)), g2(g.size());
        // Local given the lse: with the single-rank lse, the single-rank gradient's columns.
        cpu::cross_entropy_backward_vocab_parallel(mine.data(), T, local, ld, begin, V, c.labels, lse.data(), scale,
                                                   g.data(), local);
        cpu::cross_entropy_backward_vocab_parallel(mine.data(), T, local, ld, begin, V, c.labels, s.data(), scale,
                                                   g2.data(), local);
        losses[r] = l;
        lses[r] = s;
        grads[r] = g;
        grads_own_lse[r] = g2;
      });
      for (index_t r = 0; r < R; ++r) {
        INFO("T " << T << " V " << V << " ranks " << R << " rank " << r);
        const index_t begin = std::min(V, r * per), local = std::min(V, begin + per) - begin;
        if (R == 1) {
          CHECK(same_bits(losses[r], loss));
          CHECK(same_bits(lses[r], lse));
        }
        // Every rank has every token's loss, equal across ranks; against the single rank:
        // (2R + 1) 2^-24 + an ulp of the loss.
        CHECK(same_bits(losses[r], losses[0]));
        CHECK(same_bits(lses[r], lses[0]));
        for (index_t t = 0; t < T; ++t) {
          const double bound = (2.0 * static_cast<double>(R) + 1) * 0x1p-24 + 0x1p-23 * std::abs(loss[t]);
          CHECK(std::abs(static_cast<double>(losses[r][t]) - loss[t]) <= bound);
          CHECK(std::abs(static_cast<double>(lses[r][t]) - lse[t]) <= bound + 0x1p-23 * std::abs(lse[t]));
        }
        Vec cols(static_cast<std::size_t>(T * local));
        for (index_t t = 0; t < T; ++t)
          for (index_t j = 0; j < local; ++j) cols[t * local + j] = d[t * V + begin + j];
        CHECK(same_bits(grads[r], cols));
        // With its own lse: within the reference's tolerance.
        if (T > 0) {
          const CeRef ref = ce_ref(widen(c.logits), T, V, c.labels, scale);
          DVec want(cols.size()), mag(cols.size());
          for (index_t t = 0; t < T; ++t)
            for (index_t j = 0; j < local; ++j) {
              want[t * local + j] = ref.dlogits[t * V + begin + j];
              mag[t * local + j] = ref.dlogits_mag[t * V + begin + j];
            }
          CHECK(worst(grads_own_lse[r], want, mag, 1e-6) <= 1.0);
        }
      }
    }
  }
}

TEST_CASE("vocab-parallel cross entropy refuses a label outside the vocab on every rank", "[dense]") {
  const index_t T = 3, V = 8, R = 4;
  const Vec logits = random_vec(T * V, 95);
  for (index_t bad : {index_t{8}, index_t{-5}}) {
    const std::vector<index_t> labels = {2, cpu::ignore_index, bad};
    std::vector<std::string> seen(static_cast<std::size_t>(R));
    mp::ThreadWorld world(R);
    world.run([&](mp::ThreadComm& comm) {
      const index_t r = comm.rank(), per = V / R;
      Vec loss(T), lse(T);
      try {
        cpu::cross_entropy_forward_vocab_parallel(comm, comm.world_group(), logits.data() + r * per, T, per, V, r * per,
                                                  V, labels, loss.data(), lse.data());
        seen[r] = "(nothing thrown)";
      } catch (const mp::RuleViolation& e) {
        seen[r] = e.what();
      }
      // The group is still usable: nothing was left half-communicated.
      float one = 1.0f;
      comm.all_reduce(std::span<float>(&one, 1), comm.world_group(), mp::ReduceOp::sum, "after");
      CHECK(one == static_cast<float>(R));
    });
    for (const std::string& s : seen)
      CHECK_THAT(s, Catch::Contains("[token_in_vocab]") &&
                        Catch::Contains("token 2 has label " + std::to_string(bad)));
  }
}
