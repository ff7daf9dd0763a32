#pragma once
// Token-level cross entropy over the vocabulary in fp32, forward and backward, on one rank
// or with the logits sharded on the vocab dim over a group (loss parallel).
//
// transformers' ForCausalLMLoss runs nn.functional.cross_entropy(logits.float(), labels,
// ignore_index=-100): log_softmax on the CPU computes m = max_j x_j, S = sum_j exp(x_j - m),
// and log_softmax_j = (x_j - m) - log(S). Here, for token t with label y (logits row x of
// the vocab's V values):
//   m      = max_j x_j
//   S      = sum_j exp_fixed(x_j - m)     exp_fixed: cpu/detail/fast_math.hpp; summed in double
//                                         by cpu/detail/dense_common.hpp's lane sum (8 lanes by
//                                         j % 8, added in lane order, rounded to fp32 once;
//                                         why there)
//   loss_t = log(S) - (x_y - m)           = -log_softmax_y, the expression torch rounds
//   lse_t  = m + log(S)                   kept for the backward
// Tokens labelled -100 are ignored: loss 0, lse 0, and a zero gradient row; other labels
// must lie in [0, vocab), else RuleViolation token_in_vocab naming the token and the label
// (checked before anything is computed or communicated, on every rank alike).
// The reduction over tokens (torch's 'mean' or 'sum') is the caller's: the backward takes
// the scale (1 / the number of valid tokens for 'mean', 1 for 'sum').
//
// Backward, for valid tokens (p_j = exp_fixed(x_j - lse_t)):
//   dlogits[t, j] = p_j * scale              j != y
//   dlogits[t, y] = fma(p_y, scale, -scale)  (softmax - onehot) * scale, rounded once
// p differs from the forward's softmax by the rounding of lse, a relative |lse| * 2^-24 at
// most (torch's exp(log_softmax) has the same kind of error: ~1e-6 for logits near 20).
//
// Vocab parallel: rank r holds columns [vocab_begin, vocab_begin + vocab_local) of every
// token's logits (the same tokens and labels on every rank of the group). Per token:
//   m = all_reduce max of the local maxima                     exact
//   S = all_reduce sum of the local S_r (each the double lane sum above over the local
//       columns relative to the global m, rounded to fp32), in group order (member 0 first)
//   x_y = all_reduce sum of the target logit (the rank holding y contributes x_y, the
//       others +0: exact)
// (two all_reduces: the maxima, then S and x_y together) and then the same formulas. Each
// rank ends with every token's loss and lse. The loss equals the single-rank loss up to the
// order of the exp sum: S differs by at most about (2 ranks) * 2^-24 relative, so
// |loss - single-rank loss| <= (2 ranks + 1) * 2^-24 + 1 ulp of the loss; on 1 rank the
// bits are the single-rank ones. The backward is local given the global lse.
//
// 0 tokens write nothing; the vocab-parallel form still takes part in the (empty)
// collectives, so every rank must pass the same tokens.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "meshplan/comm/communicator.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/cpu/detail/dense_common.hpp"
#include "meshplan/cpu/detail/fast_math.hpp"
#include "meshplan/cpu/isa.hpp"
#include "meshplan/mesh/group.hpp"
#include "meshplan/placement/placement.hpp"

namespace meshplan::cpu {

/// The label of a token that takes no part in the loss (torch's ignore_index default).
inline constexpr index_t ignore_index = -100;

namespace cross_entropy_detail {

// Columns are exponentiated in chunks of this many (a multiple of the lanes, so a column's
// lane is its index mod 8 in every chunk) through a buffer on the stack.
inline constexpr index_t chunk = 512;
static_assert(chunk % dense_detail::lanes == 0);

inline void check(index_t tokens, index_t vocab_local, index_t ld, index_t vocab_begin, index_t vocab,
                  std::span<const index_t> labels, Isa isa) {
  enforce(tokens >= 0 && static_cast<index_t>(labels.size()) >= tokens
              ? Message{}
              : Message::rule("shape_matches") << "cross entropy over " << tokens << " tokens with "
                                               << static_cast<index_t>(labels.size()) << " labels");
  enforce(vocab_local >= 0 && vocab_begin >= 0 && vocab_begin + vocab_local <= vocab && ld >= vocab_local
              ? Message{}
              : Message::rule("shape_matches") << "cross entropy over vocab columns [" << vocab_begin << ", "
                                               << vocab_begin + vocab_local << ") of " << vocab
                                               << " with rows of stride " << ld);
  dense_detail::check_isa(isa);
  for (index_t t = 0; t < tokens; ++t) {
    const index_t y = labels[static_cast<std::size_t>(t)];
    if (y == ignore_index || (y >= 0 && y < vocab)) continue;
    throw RuleViolation(Message::rule("token_in_vocab")
                        << "cross entropy: token " << t << " has label " << y << ", outside the vocabulary [0, "
                        << vocab << ") and not the ignore index -100");
  }
}

// sum_j exp_fixed(x[j] - m): the lane sum, taken chunk by chunk.
inline float exp_sum(const float* x, index_t n, float m, Isa isa) {
  float buffer[chunk];
  double acc[dense_detail::lanes] = {};
  for (index_t j0 = 0; j0 < n; j0 += chunk) {
    const index_t len = std::min(chunk, n - j0);
    for (index_t j = 0; j < len; ++j) buffer[j] = x[j0 + j] - m;
    exp_fixed(buffer, len, buffer, isa);
    dense_detail::lane_accumulate(acc, len, [&](index_t j) { return static_cast<double>(buffer[j]); });
  }
  return dense_detail::lane_total(acc);
}

inline bool held(index_t y, index_t vocab_begin, index_t vocab_local) noexcept {
  return y >= vocab_begin && y < vocab_begin + vocab_local;
}

// The forward over the local columns; `reduce(values, op)` completes per-token values over
// the group in place (nothing on one rank).
template <class Reduce>
void forward(const float* logits, index_t tokens, index_t vocab_local, index_t ld, index_t vocab_begin,
             std::span<const index_t> labels, float* per_token_loss, float* lse, Isa isa, Reduce&& reduce) {
  auto valid = [&](index_t t) { return labels[static_cast<std::size_t>(t)] != ignore_index; };
  std::vector<float> stats(static_cast<std::size_t>(3 * tokens));  // [max | S | target logit]
  float* m = stats.data();
  float* s = m + tokens;
  float* target = s + tokens;
  for (index_t t = 0; t < tokens; ++t) m[t] = valid(t) ? dense_detail::row_max(logits + t * ld, vocab_local) : 0.0f;
  reduce(std::span<float>(m, static_cast<std::size_t>(tokens)), ReduceOp::max);
  for (index_t t = 0; t < tokens; ++t) {
    const float* x = logits + t * ld;
    const index_t y = labels[static_cast<std::size_t>(t)];
    s[t] = valid(t) ? exp_sum(x, vocab_local, m[t], isa) : 0.0f;
    target[t] = valid(t) && held(y, vocab_begin, vocab_local) ? x[y - vocab_begin] : 0.0f;
  }
  reduce(std::span<float>(s, static_cast<std::size_t>(2 * tokens)), ReduceOp::sum);
  for (index_t t = 0; t < tokens; ++t) {
    if (!valid(t)) {
      per_token_loss[t] = 0.0f;
      if (lse != nullptr) lse[t] = 0.0f;
      continue;
    }
    const float log_s = std::log(s[t]);
    per_token_loss[t] = log_s - (target[t] - m[t]);
    if (lse != nullptr) lse[t] = m[t] + log_s;
  }
}

}  // namespace cross_entropy_detail

/// per_token_loss [tokens] and lse [tokens] (may be null) of logits [tokens, vocab] (row
/// stride ld) against labels (-100: ignored); see the header.
inline void cross_entropy_forward(const float* logits, index_t tokens, index_t vocab, index_t ld,
                                  std::span<const index_t> labels, float* per_token_loss, float* lse,
                                  Isa isa = active_isa()) {
  namespace d = cross_entropy_detail;
  d::check(tokens, vocab, ld, 0, vocab, labels, isa);
  d::forward(logits, tokens, vocab, ld, 0, labels, per_token_loss, lse, isa, [](std::span<float>, ReduceOp) {});
}

/// The same with this rank's logits holding columns [vocab_begin, vocab_begin +
/// vocab_local) of a vocab of `vocab` (row stride ld), completed over `group`: two
/// all_reduces labelled `label`. Every rank gets every token's loss and lse.
template <Communicator C>
void cross_entropy_forward_vocab_parallel(C& comm, const Group& group, const float* logits, index_t tokens,
                                          index_t vocab_local, index_t ld, index_t vocab_begin, index_t vocab,
                                          std::span<const index_t> labels, float* per_token_loss, float* lse,
                                          std::string_view label = "cross entropy", Isa isa = active_isa()) {
  namespace d = cross_entropy_detail;
  d::check(tokens, vocab_local, ld, vocab_begin, vocab, labels, isa);
  d::forward(logits, tokens, vocab_local, ld, vocab_begin, labels, per_token_loss, lse, isa,
             [&](std::span<float> values, ReduceOp op) { comm.all_reduce(values, group, op, label); });
}

/// dlogits [tokens, vocab_local] (row stride ld_dlogits) = (softmax - onehot) * scale for
/// this rank's columns [vocab_begin, vocab_begin + vocab_local) of logits (row stride ld),
/// from the forward's (global) lse; zero rows for ignored tokens. No communication.
inline void cross_entropy_backward_vocab_parallel(const float* logits, index_t tokens, index_t vocab_local, index_t ld,
                                                  index_t vocab_begin, index_t vocab, std::span<const index_t> labels,
                                                  const float* lse, float scale, float* dlogits, index_t ld_dlogits,
                                                  Isa isa = active_isa()) {
  namespace d = cross_entropy_detail;
  d::check(tokens, vocab_local, ld, vocab_begin, vocab, labels, isa);
  enforce(ld_dlogits >= vocab_local ? Message{}
                                    : Message::rule("shape_matches") << "the logits' gradient rows have stride "
                                                                     << ld_dlogits << " for " << vocab_local
                                                                     << " columns");
  for (index_t t = 0; t < tokens; ++t) {
    const float* x = logits + t * ld;
    float* g = dlogits + t * ld_dlogits;
    const index_t y = labels[static_cast<std::size_t>(t)];
    if (y == ignore_index) {
      std::fill(g, g + vocab_local, 0.0f);
      continue;
    }
    for (index_t j = 0; j < vocab_local; ++j) g[j] = x[j] - lse[t];
    exp_fixed(g, vocab_local, g, isa);
    const bool mine = d::held(y, vocab_begin, vocab_local);
    const float p_y = mine ? g[y - vocab_begin] : 0.0f;
    for (index_t j = 0; j < vocab_local; ++j) g[j] = g[j] * scale;
    if (mine) g[y - vocab_begin] = std::fma(p_y, scale, -scale);
  }
}

/// The single-rank backward: cross_entropy_backward_vocab_parallel over all the columns.
inline void cross_entropy_backward(const float* logits, index_t tokens, index_t vocab, index_t ld,
                                   std::span<const index_t> labels, const float* lse, float scale, float* dlogits,
                                   index_t ld_dlogits, Isa isa = active_isa()) {
  cross_entropy_backward_vocab_parallel(logits, tokens, vocab, ld, 0, vocab, labels, lse, scale, dlogits, ld_dlogits,
                                        isa);
}

}  // namespace meshplan::cpu
