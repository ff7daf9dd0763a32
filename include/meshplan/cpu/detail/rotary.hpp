#pragma once
// Rotary position embeddings in fp32, as transformers applies them (Qwen3, Qwen3-MoE,
// Mixtral: apply_rotary_pos_emb; DeepSeek-V3 with rope_interleave:
// apply_rotary_pos_emb_interleave), forward and backward, in place.
//
// The table (RopeTable), for rotary dim d (even) and each token's position p:
//   inv_freq[i] = 1.0f / theta^(float(2i) / float(d))      i < d/2, transformers'
//                 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)):
//                 the exponent is an fp32 division; the power is taken in double on the fp32
//                 theta and exponent and rounded to fp32 once (the correctly rounded fp32
//                 power); the reciprocal is an fp32 division.
//   freq[p, i]  = float(p) * inv_freq[i]                    one fp32 product
//   cos[p, i]   = float(cos(double(freq))) * attention_scaling, sin likewise
// transformers' emb = cat(freqs, freqs) repeats the d/2 values, so the table keeps them once.
// torch's vectorized pow is faithful, not correctly rounded: for theta 1e6 and d 128 one of
// the 64 inverse frequencies (i = 37) is one ulp away from this one. Where the bits must be
// transformers', build the table from its inv_freq buffer (the second constructor); that
// constructor also takes rope types with other frequencies (yarn, llama3) and their
// attention_scaling (yarn's mscale).
//
// The rotation of one token's head, on the d values r[0..d) that start at `offset`, with
// c = cos[t, i], s = sin[t, i] and h = d/2:
//   half-split (rotate_half: out = r * cos + cat(-r2, r1) * sin):
//     out[i]     = fma(r[i],     c, -(r[i + h] * s))
//     out[i + h] = fma(r[i + h], c,   r[i] * s)
//   interleaved (DeepSeek-V3's rope_interleave): the pairs (r[2i], r[2i+1]) are rotated, and
//   the result is written de-interleaved, as transformers returns it:
//     out[i]     = fma(r[2i],     c, -(r[2i + 1] * s))
//     out[i + h] = fma(r[2i + 1], c,   r[2i] * s)
//   transformers (models/deepseek_v3, apply_rotary_pos_emb_interleave) computes
//   cat([q1 * cos - q2 * sin, q2 * cos + q1 * sin]) with q1 = q[..., 0::2], q2 = q[..., 1::2]
//   (earlier versions: view(d/2, 2).transpose then rotate_half, the same values): the
//   rotated q and k stay in the order [evens..., odds...] and attention only ever sees them
//   in that order (both permuted alike, so q.k is unchanged).
// torch rounds both products and then the sum; the fma rounds once: at most an ulp of the
// larger product apart. Every multiply-add is an explicit fma, so the bits do not depend
// on compile flags or on the instruction set path (cpu/detail/dense_common.hpp's fma clone).
//
// The backward applies the transpose (the inverse rotation), in place on the gradient:
//   half-split:  dr[i] = fma(g[i], c, g[i + h] * s),  dr[i + h] = fma(g[i + h], c, -(g[i] * s))
//   interleaved: dr[2i] = fma(g[i], c, g[i + h] * s), dr[2i + 1] = fma(g[i + h], c, -(g[i] * s))
//   (g in the de-interleaved order the forward wrote, dr in the input's interleaved order).
//
// x is [tokens, heads, head_stride] (token rows of heads * head_stride values); token t uses
// table row t. 0 tokens or heads write nothing.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/cpu/detail/dense_common.hpp"
#include "meshplan/cpu/isa.hpp"

namespace meshplan::cpu {

/// cos and sin of every token's rotary angles: row t holds the d/2 values of token t.
class RopeTable {
 public:
  /// transformers' default rope: inv_freq from theta (see the header), attention_scaling 1.
  RopeTable(std::span<const index_t> positions, index_t dim, double theta)
      : RopeTable(positions, default_inv_freq(dim, theta), 1.0f) {}

  /// From given inverse frequencies (d = 2 * inv_freq.size()): e.g. the model's inv_freq
  /// buffer, or another rope type's, with its attention_scaling (cos and sin are multiplied
  /// by it in fp32, as transformers does).
  RopeTable(std::span<const index_t> positions, std::span<const float> inv_freq, float attention_scaling = 1.0f)
      : tokens_(static_cast<index_t>(positions.size())), half_(static_cast<index_t>(inv_freq.size())) {
    cos_.resize(static_cast<std::size_t>(tokens_ * half_));
    sin_.resize(cos_.size());
    for (index_t t = 0; t < tokens_; ++t) {
      const float p = static_cast<float>(positions[static_cast<std::size_t>(t)]);
      for (index_t i = 0; i < half_; ++i) {
        const float freq = p * inv_freq[static_cast<std::size_t>(i)];
        const auto at = static_cast<std::size_t>(t * half_ + i);
        cos_[at] = static_cast<float>(std::cos(static_cast<double>(freq))) * attention_scaling;
        sin_[at] = static_cast<float>(std::sin(static_cast<double>(freq))) * attention_scaling;
      }
    }
  }

  /// inv_freq[i] = 1.0f / theta^(float(2i) / float(dim)) for i < dim/2 (see the header).
  static std::vector<float> default_inv_freq(index_t dim, double theta) {
    enforce(dim >= 0 && dim % 2 == 0 ? Message{}
                                     : Message::rule("shape_matches")
                                           << "the rotary dim is " << dim << "; rope needs an even, non-negative one");
    std::vector<float> inv(static_cast<std::size_t>(dim / 2));
    const float base = static_cast<float>(theta);
    for (index_t i = 0; i < dim / 2; ++i) {
      const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
      const float power = static_cast<float>(std::pow(static_cast<double>(base), static_cast<double>(exponent)));
      inv[static_cast<std::size_t>(i)] = 1.0f / power;
    }
    return inv;
  }

  index_t tokens() const noexcept { return tokens_; }
  /// The rotary dim d (twice the number of frequencies).
  index_t dim() const noexcept { return 2 * half_; }
  const float* cos_row(index_t t) const noexcept { return cos_.data() + t * half_; }
  const float* sin_row(index_t t) const noexcept { return sin_.data() + t * half_; }

 private:
  index_t tokens_ = 0, half_ = 0;
  std::vector<float> cos_, sin_;
};

namespace rope_detail {

// The half-split rotation of lo[i], hi[i] (i < n) by c[i], s[i]; `inverse` for the
// transpose (sin negated: the inverse rotation). The operands of each fma are those of
// the header's formulas for either sign (negation is exact).
MESHPLAN_DENSE_INLINE void rotate(const float* __restrict in_lo, const float* __restrict in_hi, float* __restrict lo,
                                  float* __restrict hi, const float* __restrict c, const float* __restrict s,
                                  index_t n, bool inverse) {
  dense_detail::for_blocks(n, [&](index_t i) {
    const float a = in_lo[i], b = in_hi[i];
    const float sn = inverse ? -s[i] : s[i];
    lo[i] = std::fma(a, c[i], -(b * sn));
    hi[i] = std::fma(b, c[i], a * sn);
  });
}

// The body run_clone compiles as the portable and the fma clone (cpu/detail/dense_common.hpp).
struct Apply {
  template <bool>
  MESHPLAN_DENSE_INLINE static void run(float* x, index_t tokens, index_t heads, index_t head_stride, index_t offset,
                                        index_t d, const RopeTable& table, bool interleaved, bool inverse) {
    const index_t h = d / 2;
    std::vector<float> buffer(static_cast<std::size_t>(2 * d));  // a head's d values, and the result
    float* in = buffer.data();
    float* out = in + d;
    for (index_t t = 0; t < tokens; ++t) {
      const float* c = table.cos_row(t);
      const float* s = table.sin_row(t);
      for (index_t head = 0; head < heads; ++head) {
        float* r = x + (t * heads + head) * head_stride + offset;
        if (interleaved && !inverse) {
          // De-interleave into [evens, odds], rotate as halves, write in that order.
          for (index_t i = 0; i < h; ++i) {
            in[i] = r[2 * i];
            in[i + h] = r[2 * i + 1];
          }
          rotate(in, in + h, r, r + h, c, s, h, false);
        } else if (interleaved) {
          // The gradient arrives in the de-interleaved order; the input's order is interleaved.
          std::copy(r, r + d, in);
          rotate(in, in + h, out, out + h, c, s, h, true);
          for (index_t i = 0; i < h; ++i) {
            r[2 * i] = out[i];
            r[2 * i + 1] = out[i + h];
          }
        } else {
          std::copy(r, r + d, in);
          rotate(in, in + h, r, r + h, c, s, h, inverse);
        }
      }
    }
  }
};

inline void apply(float* x, index_t tokens, index_t heads, index_t head_stride, index_t offset, index_t d,
                  const RopeTable& table, bool interleaved, bool inverse, Isa isa) {
  enforce(d >= 0 && d % 2 == 0 && table.dim() == d
              ? Message{}
              : Message::rule("shape_matches") << "rope over " << d << " dims with a table of " << table.dim()
                                               << "; the rotary dim must be even and the table's");
  enforce(offset >= 0 && offset + d <= head_stride
              ? Message{}
              : Message::rule("shape_matches") << "rope over dims [" << offset << ", " << offset + d
                                               << ") of a head of " << head_stride << " values");
  enforce(tokens <= table.tokens() ? Message{}
                                   : Message::rule("shape_matches") << "rope over " << tokens
                                                                    << " tokens with a table of " << table.tokens()
                                                                    << " positions");
  dense_detail::check_isa(isa);
  if (tokens <= 0 || heads <= 0 || d == 0) return;
  dense_detail::run_clone<Apply>(dense_detail::use_fma_clone(isa), x, tokens, heads, head_stride, offset, d, table,
                                 interleaved, inverse);
}

}  // namespace rope_detail

/// Rotates, in place, dims [offset, offset + d) of every head of x [tokens, heads,
/// head_stride], token t by table row t; `interleaved` for DeepSeek-V3's rope_interleave
/// (the rotated dims come out de-interleaved). See the header for the exact operations.
inline void rope_forward(float* x, index_t tokens, index_t heads, index_t head_stride, index_t offset, index_t d,
                         const RopeTable& table, bool interleaved, Isa isa = active_isa()) {
  rope_detail::apply(x, tokens, heads, head_stride, offset, d, table, interleaved, false, isa);
}

/// The backward of rope_forward with the same arguments, in place on the output's gradient
/// dy: the transposed rotation (and, interleaved, the transposed permutation), so dy
/// becomes the input's gradient.
inline void rope_backward(float* dy, index_t tokens, index_t heads, index_t head_stride, index_t offset, index_t d,
                          const RopeTable& table, bool interleaved, Isa isa = active_isa()) {
  rope_detail::apply(dy, tokens, heads, head_stride, offset, d, table, interleaved, true, isa);
}

}  // namespace meshplan::cpu
