#pragma once
// Causal grouped-query attention over a batch of sequences in fp32, forward and backward,
// with transformers' eager semantics (eager_attention_forward: scores = q k^T * scaling,
// the causal mask, softmax in fp32, then the weighted sum of v).
//
// Shapes (all contiguous): q [T, heads, qk_dim], k [T, kv_heads, qk_dim], v [T, kv_heads,
// v_dim], o [T, heads, v_dim], lse [T, heads]. The sequences are consecutive runs of
// tokens of the given lengths (T = their sum); token i of a sequence attends to tokens
// j <= i of the same sequence. Query head h reads kv head h / (heads / kv_heads).
//
// Forward, for query token i and head h (j over the keys it attends, j = 0..i):
//   s_j   = dot(q_i, k_j) * scaling        dot: one fma chain over the qk dims, from +0,
//                                          dim 0 first (cpu/detail/linear.hpp's dot); then one
//                                          fp32 product
//   m     = max_j s_j
//   e_j   = exp_fixed(s_j - m)             cpu/detail/fast_math.hpp: the same bits on every path
//   l     = sum_j e_j                      in double: cpu/detail/dense_common.hpp's lane sum (8
//                                          lanes by j % 8, added in lane order, rounded to
//                                          fp32 once)
//   p_j   = e_j / l                        fp32 division
//   o_i   = sum_j p_j v_j                  per output dim one fma chain over j in increasing
//                                          order, from +0
//   lse_i = m + log(l)                     fp32
// torch's own softmax is within about 1e-6 relative of the exact one (its exp and sum are
// vectorized approximations); the double sum keeps this one close to exact.
//
// Backward, from the forward's o and lse and the output gradient do, for (i, h):
//   p_j   = exp_fixed(s_j - lse_i)         s_j recomputed bit for bit as above; p differs
//                                          from the forward's by the roundings of lse and
//                                          of s - lse: relative (|lse| + |s - lse|) 2^-24
//   dp_j  = dot(do_i, v_j)                 one fma chain over the v dims, from +0
//   D     = dot(do_i, o_i)                 likewise
//   ds_j  = (p_j * (dp_j - D)) * scaling   the softmax's backward, then the scale
//   dq_i  = sum_j ds_j k_j                 per dim one fma chain over j = 0..i in order
//   dk_j  = sum ds_j q_i,  dv_j = sum p_j do_i, over the query heads h of j's kv group and
//           the query tokens i >= j of j's sequence: per dim one fma chain from +0 that
//           runs over the group's heads in increasing order, and within each head over i
//           in increasing order
// dq, dk and dv are written (every element: not accumulated onto, never read first).
//
// Threads: with a pool the forward runs (sequence, query head) pairs and the backward
// (sequence, kv head) pairs as independent items, each writing only its own outputs (the
// backward's dk, dv chains run over a kv head's whole group inside one item), so the bits
// do not depend on the number of threads. Nor on the instruction set path: with isa other
// than portable (x86-64) the products run with AVX2 fma registers holding 64 columns of
// chains at a time, and the backward updates dk and dv for 8 query rows per pass over the
// keys; each chain still takes the same fmas in the same order (the paths are
// cpu/detail/dense_common.hpp's fma clone and the portable one). 0 tokens or sequences
// write nothing; a sequence of length 0 is skipped.
//
// Cost: O(len^2 (qk_dim + v_dim)) per sequence and head, scratch O(len (qk_dim + v_dim))
// per item (the keys and values transposed, so that the loops over keys run over
// contiguous memory).

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/detail/macros.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/cpu/detail/dense_common.hpp"
#include "meshplan/cpu/detail/fast_math.hpp"
#include "meshplan/cpu/isa.hpp"
#include "meshplan/cpu/thread_pool.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace meshplan::cpu {

namespace attention_detail {

using dense_detail::for_blocks;

struct Shape {
  index_t heads = 0, kv_heads = 0, qk = 0, v = 0;
  float scaling = 1.0f;
  index_t group() const noexcept { return heads / kv_heads; }
};

// y[j] = fma(a, x[j], y[j]) for j < n: each y[j] one more step of its own chain.
MESHPLAN_DENSE_INLINE void axpy(float* __restrict y, const float* __restrict x, float a, index_t n) {
  for_blocks(n, [&](index_t j) { y[j] = std::fma(a, x[j], y[j]); });
}

// One fma chain over i in order, from +0.
MESHPLAN_DENSE_INLINE float dot_chain(const float* a, const float* b, index_t n) {
  float acc = 0.0f;
  for (index_t i = 0; i < n; ++i) acc = std::fma(a[i], b[i], acc);
  return acc;
}

MESHPLAN_DENSE_INLINE void scale(float* __restrict y, float a, index_t n) {
  for_blocks(n, [&](index_t j) { y[j] = y[j] * a; });
}

MESHPLAN_DENSE_INLINE void subtract(float* __restrict y, float a, index_t n) {
  for_blocks(n, [&](index_t j) { y[j] = y[j] - a; });
}

MESHPLAN_DENSE_INLINE void divide(float* __restrict y, float a, index_t n) {
  for_blocks(n, [&](index_t j) { y[j] = y[j] / a; });
}

// The header's double sum of e[j], j < n.
MESHPLAN_DENSE_INLINE float lane_sum(const float* __restrict e, index_t n) {
  return dense_detail::lane_sum(n, [&](index_t j) { return static_cast<double>(e[j]); });
}

// rows [len, width] of a [T, heads, width] tensor's head `head` (from token t0) into
// out [width, len]: out[d * len + j] = the value of dim d of token t0 + j.
MESHPLAN_DENSE_INLINE void transpose_head(const float* x, index_t t0, index_t len, index_t heads, index_t head,
                                          index_t width, float* out) {
  for (index_t j = 0; j < len; ++j) {
    const float* row = x + ((t0 + j) * heads + head) * width;
    for (index_t d = 0; d < width; ++d) out[d * len + j] = row[d];
  }
}

// out[c] = sum_{j < n} w[j] rows[j * ld + c] for c < width: per column one fma chain over j
// in increasing order, from +0 (the order of dot(), and of a row of axpy()s). This is the
// inner product of every loop but the backward's dk and dv updates.
inline void weighted_sum_portable(const float* rows, index_t ld, const float* w, index_t n, index_t width,
                                  float* out) {
  std::fill(out, out + width, 0.0f);
  for (index_t j = 0; j < n; ++j) axpy(out, rows + j * ld, w[j], width);
}

#if defined(MESHPLAN_DENSE_FMA_CLONE)
// The same chains, K * 8 columns at a time with the accumulators in registers for all j
// (the portable loop keeps them in memory: a load and a store per fma). The instructions
// are the same fmas, so the bits are the portable ones.
template <int K>
MESHPLAN_DENSE_FMA_TARGET inline void weighted_columns_avx2(const float* rows, index_t ld, const float* w, index_t n,
                                                            float* out) {
  // The loops over k are unrolled so that acc lives in registers (at -O2 g++ would keep an
  // indexed array in memory).
  __m256 acc[K];
MESHPLAN_UNROLL(8)
  for (int k = 0; k < K; ++k) acc[k] = _mm256_setzero_ps();
  for (index_t j = 0; j < n; ++j) {
    const __m256 a = _mm256_broadcast_ss(w + j);
    const float* r = rows + j * ld;
MESHPLAN_UNROLL(8)
    for (int k = 0; k < K; ++k) acc[k] = _mm256_fmadd_ps(a, _mm256_loadu_ps(r + 8 * k), acc[k]);
  }
MESHPLAN_UNROLL(8)
  for (int k = 0; k < K; ++k) _mm256_storeu_ps(out + 8 * k, acc[k]);
}

MESHPLAN_DENSE_FMA_TARGET inline void weighted_sum_avx2(const float* rows, index_t ld, const float* w, index_t n,
                                                        index_t width, float* out) {
  constexpr index_t wide = 64;  // 8 accumulators: enough to cover the fma's latency
  const index_t wide_end = width - width % wide;
  for (index_t c = 0; c < wide_end; c += wide) weighted_columns_avx2<8>(rows + c, ld, w, n, out + c);
  const index_t c = wide_end;
  switch ((width - wide_end) / 8) {
    case 7: weighted_columns_avx2<7>(rows + c, ld, w, n, out + c); break;
    case 6: weighted_columns_avx2<6>(rows + c, ld, w, n, out + c); break;
    case 5: weighted_columns_avx2<5>(rows + c, ld, w, n, out + c); break;
    case 4: weighted_columns_avx2<4>(rows + c, ld, w, n, out + c); break;
    case 3: weighted_columns_avx2<3>(rows + c, ld, w, n, out + c); break;
    case 2: weighted_columns_avx2<2>(rows + c, ld, w, n, out + c); break;
    case 1: weighted_columns_avx2<1>(rows + c, ld, w, n, out + c); break;
    default: break;
  }
  const index_t eight_end = width - width % 8;
  for (index_t col = eight_end; col < width; ++col) {
    float acc = 0.0f;
    for (index_t j = 0; j < n; ++j) acc = std::fma(w[j], rows[j * ld + col], acc);
    out[col] = acc;
  }
}
#endif

// For the rows j < first + count of dst (row stride ld_dst) and then the rows i of src
// from max(first, j) to first + count - 1 in increasing order:
//   dst_j[c] = fma(coef[(i - first) * ld_coef + j], src_i[c], dst_j[c])    c < width
// one more step of each dst_j[c]'s chain per row i: the backward's dk and dv updates for a
// block of query rows (coef holds their ds or p rows).
inline void update_rows_portable(float* dst, index_t ld_dst, const float* src, index_t ld_src, const float* coef,
                                 index_t ld_coef, index_t first, index_t count, index_t width) {
  for (index_t j = 0; j < first + count; ++j)
    for (index_t i = std::max(first, j); i < first + count; ++i)
      axpy(dst + j * ld_dst, src + i * ld_src, coef[(i - first) * ld_coef + j], width);
}

#if defined(MESHPLAN_DENSE_FMA_CLONE)
// The same with K * 8 columns of dst_j in registers over the block's rows.
template <int K>
MESHPLAN_DENSE_FMA_TARGET inline void update_columns_avx2(float* dst, index_t ld_dst, const float* src,
                                                          index_t ld_src, const float* coef, index_t ld_coef,
                                                          index_t first, index_t count) {
  for (index_t j = 0; j < first + count; ++j) {
    float* d = dst + j * ld_dst;
    __m256 acc[K];
MESHPLAN_UNROLL(8)
    for (int k = 0; k < K; ++k) acc[k] = _mm256_loadu_ps(d + 8 * k);
    for (index_t i = std::max(first, j); i < first + count; ++i) {
      const __m256 a = _mm256_broadcast_ss(coef + (i - first) * ld_coef + j);
      const float* r = src + i * ld_src;
MESHPLAN_UNROLL(8)
      for (int k = 0; k < K; ++k) acc[k] = _mm256_fmadd_ps(a, _mm256_loadu_ps(r + 8 * k), acc[k]);
    }
MESHPLAN_UNROLL(8)
    for (int k = 0; k < K; ++k) _mm256_storeu_ps(d + 8 * k, acc[k]);
  }
}

MESHPLAN_DENSE_FMA_TARGET inline void update_rows_avx2(float* dst, index_t ld_dst, const float* src, index_t ld_src,
                                                       const float* coef, index_t ld_coef, index_t first,
                                                       index_t count, index_t width) {
  const index_t wide_end = width - width % 64;
  for (index_t c = 0; c < wide_end; c += 64)
    update_columns_avx2<8>(dst + c, ld_dst, src + c, ld_src, coef, ld_coef, first, count);
  const index_t c = wide_end;
  switch ((width - wide_end) / 8) {
    case 7: update_columns_avx2<7>(dst + c, ld_dst, src + c, ld_src, coef, ld_coef, first, count); break;
    case 6: update_columns_avx2<6>(dst + c, ld_dst, src + c, ld_src, coef, ld_coef, first, count); break;
    case 5: update_columns_avx2<5>(dst + c, ld_dst, src + c, ld_src, coef, ld_coef, first, count); break;
    case 4: update_columns_avx2<4>(dst + c, ld_dst, src + c, ld_src, coef, ld_coef, first, count); break;
    case 3: update_columns_avx2<3>(dst + c, ld_dst, src + c, ld_src, coef, ld_coef, first, count); break;
    case 2: update_columns_avx2<2>(dst + c, ld_dst, src + c, ld_src, coef, ld_coef, first, count); break;
    case 1: update_columns_avx2<1>(dst + c, ld_dst, src + c, ld_src, coef, ld_coef, first, count); break;
    default: break;
  }
  const index_t eight_end = width - width % 8;
  for (index_t j = 0; j < first + count; ++j)
    for (index_t i = std::max(first, j); i < first + count; ++i) {
      const float a = coef[(i - first) * ld_coef + j];
      for (index_t col = eight_end; col < width; ++col)
        dst[j * ld_dst + col] = std::fma(a, src[i * ld_src + col], dst[j * ld_dst + col]);
    }
}
#endif

template <bool Fma>
MESHPLAN_DENSE_INLINE void update_rows(float* dst, index_t ld_dst, const float* src, index_t ld_src,
                                       const float* coef, index_t ld_coef, index_t first, index_t count,
                                       index_t width) {
#if defined(MESHPLAN_DENSE_FMA_CLONE)
  if constexpr (Fma) return update_rows_avx2(dst, ld_dst, src, ld_src, coef, ld_coef, first, count, width);
#endif
  update_rows_portable(dst, ld_dst, src, ld_src, coef, ld_coef, first, count, width);
}

template <bool Fma>
MESHPLAN_DENSE_INLINE void weighted_sum(const float* rows, index_t ld, const float* w, index_t n, index_t width,
                                        float* out) {
#if defined(MESHPLAN_DENSE_FMA_CLONE)
  if constexpr (Fma) return weighted_sum_avx2(rows, ld, w, n, width, out);
#endif
  weighted_sum_portable(rows, ld, w, n, width, out);
}

// s[0..n) = dot(q, key j) * scaling for the n = i + 1 keys of query i, from kT [qk, len]:
// key j's column of kT is its row, so the dots are a weighted sum of kT's rows.
template <bool Fma>
MESHPLAN_DENSE_INLINE void scores(const float* q, const float* kT, index_t len, index_t qk, float scaling, float* s,
                                  index_t n) {
  weighted_sum<Fma>(kT, len, q, qk, n, s);
  scale(s, scaling, n);
}

// One (sequence, query head) item of the forward; the body run_clone compiles as the
// portable and the fma clone (cpu/detail/dense_common.hpp).
struct ForwardItem {
  template <bool Fma>
  MESHPLAN_DENSE_INLINE static void run(const float* q, const float* k, const float* v, const Shape& sh, index_t t0,
                                        index_t len, index_t h, float* o, float* lse, Isa isa) {
    const index_t g = h / sh.group();
    std::vector<float> scratch(static_cast<std::size_t>(len * (sh.qk + 1)));
    float* kT = scratch.data();
    float* s = kT + len * sh.qk;
    transpose_head(k, t0, len, sh.kv_heads, g, sh.qk, kT);
    for (index_t i = 0; i < len; ++i) {
      const index_t t = t0 + i, n = i + 1;
      scores<Fma>(q + (t * sh.heads + h) * sh.qk, kT, len, sh.qk, sh.scaling, s, n);
      const float m = dense_detail::row_max(s, n);
      subtract(s, m, n);
      exp_fixed(s, n, s, isa);
      const float l = lane_sum(s, n);
      divide(s, l, n);
      float* oi = o + (t * sh.heads + h) * sh.v;
      weighted_sum<Fma>(v + (t0 * sh.kv_heads + g) * sh.v, sh.kv_heads * sh.v, s, n, sh.v, oi);
      if (lse != nullptr) lse[t * sh.heads + h] = m + std::log(l);
    }
  }
};

// Query rows the backward takes together: their dk and dv updates then run as one pass over
// the keys, each dk_j and dv_j loaded once for up to this many fmas.
inline constexpr index_t query_block = 8;

// One (sequence, kv head) item of the backward: dq of the group's query heads, dk and dv
// of kv head g.
struct BackwardItem {
  template <bool Fma>
  MESHPLAN_DENSE_INLINE static void run(const float* q, const float* k, const float* v, const float* o,
                                        const float* d_o, const float* lse, const Shape& sh, index_t t0, index_t len,
                                        index_t g, float* dq, float* dk, float* dv, Isa isa) {
    std::vector<float> scratch(static_cast<std::size_t>(len * (sh.qk + sh.v + 2 * query_block)));
    float* kT = scratch.data();
    float* vT = kT + len * sh.qk;
    float* p = vT + len * sh.v;         // [query_block, len]: the block's rows of p
    float* ds = p + query_block * len;  // and of ds
    transpose_head(k, t0, len, sh.kv_heads, g, sh.qk, kT);
    transpose_head(v, t0, len, sh.kv_heads, g, sh.v, vT);
    const index_t ldk = sh.kv_heads * sh.qk, ldv = sh.kv_heads * sh.v;  // token strides of k, v, dk, dv
    const index_t ldq = sh.heads * sh.qk, ldo = sh.heads * sh.v;        // of q, dq, o, do
    float* dk0 = dk + t0 * ldk + g * sh.qk;
    float* dv0 = dv + t0 * ldv + g * sh.v;
    for (index_t j = 0; j < len; ++j) {
      std::fill(dk0 + j * ldk, dk0 + j * ldk + sh.qk, 0.0f);
      std::fill(dv0 + j * ldv, dv0 + j * ldv + sh.v, 0.0f);
    }
    for (index_t h = g * sh.group(); h < (g + 1) * sh.group(); ++h) {
      const float* q0 = q + t0 * ldq + h * sh.qk;
      const float* do0 = d_o + t0 * ldo + h * sh.v;
      for (index_t i0 = 0; i0 < len; i0 += query_block) {
        const index_t count = std::min(query_block, len - i0);
        for (index_t r = 0; r < count; ++r) {
          const index_t i = i0 + r, t = t0 + i, n = i + 1;
          float* pr = p + r * len;
          float* dsr = ds + r * len;
          const float* doi = do0 + i * ldo;
          scores<Fma>(q0 + i * ldq, kT, len, sh.qk, sh.scaling, pr, n);
          subtract(pr, lse[t * sh.heads + h], n);
          exp_fixed(pr, n, pr, isa);
          weighted_sum<Fma>(vT, len, doi, sh.v, n, dsr);  // dp_j = dot(do_i, v_j)
          const float D = dot_chain(doi, o + t * ldo + h * sh.v, sh.v);
          subtract(dsr, D, n);
          for (index_t j = 0; j < n; ++j) dsr[j] = (pr[j] * dsr[j]) * sh.scaling;
          weighted_sum<Fma>(k + t0 * ldk + g * sh.qk, ldk, dsr, n, sh.qk, dq + t * ldq + h * sh.qk);
        }
        // dk_j += ds_ij q_i and dv_j += p_ij do_i for the block's rows i >= j, i increasing.
        update_rows<Fma>(dk0, ldk, q0, ldq, ds, len, i0, count, sh.qk);
        update_rows<Fma>(dv0, ldv, do0, ldo, p, len, i0, count, sh.v);
      }
    }
  }
};

// Checks the shapes; returns each sequence's first token.
inline std::vector<index_t> sequence_starts(std::span<const index_t> seq_lengths, const Shape& sh, Isa isa) {
  enforce(sh.kv_heads >= 1 && sh.heads >= 0 && sh.heads % sh.kv_heads == 0
              ? Message{}
              : Message::rule("kv_heads_divisible") << "attention with " << sh.heads << " query heads and "
                                                    << sh.kv_heads
                                                    << " kv heads: the kv heads must be at least 1 and divide the "
                                                       "query heads");
  enforce(sh.qk >= 0 && sh.v >= 0 ? Message{}
                                  : Message::rule("shape_matches") << "attention head dims " << sh.qk << " and "
                                                                   << sh.v << " must not be negative");
  dense_detail::check_isa(isa);
  std::vector<index_t> starts;
  starts.reserve(seq_lengths.size());
  index_t t = 0;
  for (std::size_t s = 0; s < seq_lengths.size(); ++s) {
    enforce(seq_lengths[s] >= 0 ? Message{}
                                : Message::rule("shape_matches") << "sequence " << static_cast<index_t>(s)
                                                                 << " has length " << seq_lengths[s]);
    starts.push_back(t);
    t += seq_lengths[s];
  }
  return starts;
}

// Checks the shapes, then runs f(fma, t0, len, x) for every sequence of length len > 0
// (first token t0) and every x < per_sequence, as independent items: on the pool's threads
// with a pool of more than one, else in order on the calling thread. fma is use_fma_clone's
// answer for isa.
template <class F>
void run_items(std::span<const index_t> seq_lengths, const Shape& sh, index_t per_sequence, ThreadPool* pool, Isa isa,
               F&& f) {
  const std::vector<index_t> starts = sequence_starts(seq_lengths, sh, isa);
  const bool fma = dense_detail::use_fma_clone(isa);
  auto item = [&](index_t i) {
    const auto s = static_cast<std::size_t>(i / per_sequence);
    if (seq_lengths[s] == 0) return;
    f(fma, starts[s], seq_lengths[s], i % per_sequence);
  };
  const index_t n = static_cast<index_t>(seq_lengths.size()) * per_sequence;
  if (pool != nullptr && pool->size() > 1) {
    pool->parallel_for(n, item);
    return;
  }
  for (index_t i = 0; i < n; ++i) item(i);
}

}  // namespace attention_detail

/// o [T, heads, v_dim] and lse [T, heads] (may be null) of causal GQA over the sequences
/// (see the header); pool may be null (the calling thread does everything).
inline void attention_forward(const float* q, const float* k, const float* v, std::span<const index_t> seq_lengths,
                              index_t heads, index_t kv_heads, index_t qk_dim, index_t v_dim, float scaling, float* o,
                              float* lse, ThreadPool* pool = nullptr, Isa isa = active_isa()) {
  namespace d = attention_detail;
  const d::Shape sh{heads, kv_heads, qk_dim, v_dim, scaling};
  d::run_items(seq_lengths, sh, heads, pool, isa, [&](bool fma, index_t t0, index_t len, index_t h) {
    dense_detail::run_clone<d::ForwardItem>(fma, q, k, v, sh, t0, len, h, o, lse, isa);
  });
}

/// dq [T, heads, qk_dim], dk [T, kv_heads, qk_dim] and dv [T, kv_heads, v_dim] (written,
/// not accumulated) from the forward's inputs, its o and lse, and the output gradient d_o
/// [T, heads, v_dim] (see the header for the order of every sum).
inline void attention_backward(const float* q, const float* k, const float* v, const float* o, const float* d_o,
                               const float* lse, std::span<const index_t> seq_lengths, index_t heads, index_t kv_heads,
                               index_t qk_dim, index_t v_dim, float scaling, float* dq, float* dk, float* dv,
                               ThreadPool* pool = nullptr, Isa isa = active_isa()) {
  namespace d = attention_detail;
  const d::Shape sh{heads, kv_heads, qk_dim, v_dim, scaling};
  d::run_items(seq_lengths, sh, kv_heads, pool, isa, [&](bool fma, index_t t0, index_t len, index_t g) {
    dense_detail::run_clone<d::BackwardItem>(fma, q, k, v, o, d_o, lse, sh, t0, len, g, dq, dk, dv, isa);
  });
}

}  // namespace meshplan::cpu
