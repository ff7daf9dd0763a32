#pragma once
// The Qwen3-MoE block sizes the CPU benchmarks run (moe_block_bench.cpp,
// moe_backward_bench.cpp): one case, and the model config it stands for.

#include "meshplan/model/model_spec.hpp"

namespace meshplan::bench {

struct Case {
  const char* name;
  index_t hidden, inter, experts, top_k, tokens;
};

/// A Qwen3-MoE config with the case's MoE sizes (attention sizes do not matter to the block).
inline ModelSpec model_of(const Case& c) {
  ModelSpec m;
  m.family = Family::qwen3_moe;
  m.hidden_size = c.hidden;
  m.num_hidden_layers = 1;
  m.num_attention_heads = 8;
  m.num_key_value_heads = 8;
  m.head_dim = 64;
  m.vocab_size = 1024;
  m.num_experts = c.experts;
  m.num_experts_per_tok = c.top_k;
  m.moe_intermediate_size = c.inter;
  m.norm_topk_prob = true;
  return m;
}

}  // namespace meshplan::bench
