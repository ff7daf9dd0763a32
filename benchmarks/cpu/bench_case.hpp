#pragma once
// The Qwen3-MoE block the CPU benchmarks run (moe_block_bench.cpp, moe_backward_bench.cpp):
// one case, the model config and the block type it stands for, the file that hands it to
// transformers (transformers_block.py), and the script's one line of output.

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>

#include "meshplan/core/tensor.hpp"
#include "meshplan/io/safetensors_writer.hpp"
#include "meshplan/mesh/device_mesh.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/moe/moe_weights.hpp"
#include "meshplan/plan/builtin/qwen3_moe.hpp"

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

/// One rank: the block at EP = 1.
using Mesh = DeviceMesh<Axis<"ep">>;
using Plan = plans::qwen3_moe::ep<"ep">;

/// Writes the case for transformers_block.py: the weights under transformers' names, the
/// tokens (`hidden_states`), with a backward its output gradient (`grad_output`), and the
/// config in the metadata.
template <StorageType T>
void write_case(const std::string& file, const Case& c, const MoEWeights<T>& w, const Tensor<T>& x,
                const Tensor<float>* grad_output = nullptr) {
  SafetensorsWriter out;
  out.add("gate.weight", w.router);
  out.add("experts.gate_up_proj", w.gate_up);
  out.add("experts.down_proj", w.down);
  out.add("hidden_states", x);
  if (grad_output) out.add("grad_output", *grad_output);
  for (auto [key, value] : {std::pair<const char*, index_t>{"hidden_size", c.hidden},
                            {"moe_intermediate_size", c.inter},
                            {"num_experts", c.experts},
                            {"num_experts_per_tok", c.top_k}})
    out.metadata(key, std::to_string(value));
  out.metadata("norm_topk_prob", "true");
  out.write(file);
}

/// What a shell command prints on stdout (empty if it cannot start).
inline std::string command_output(const std::string& command) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
  std::string text;
  char buf[512];
  while (pipe && std::fgets(buf, sizeof buf, pipe.get())) text += buf;
  return text;
}

/// The number after `"key": ` in the script's JSON line, or -1.
inline double json_number(const std::string& text, const std::string& key) {
  const auto at = text.find("\"" + key + "\": ");
  return at == std::string::npos ? -1 : std::atof(text.c_str() + at + key.size() + 4);
}

}  // namespace meshplan::bench
