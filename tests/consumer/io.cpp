// Built against an installed meshplan::io: a safetensors file written to memory and read
// back, and a model from a config.json, so that the io headers and nlohmann/json are found
// through the installed package.
#include <meshplan/io/config_json.hpp>
#include <meshplan/io/safetensors_view.hpp>
#include <meshplan/io/safetensors_writer.hpp>

#include <cstdio>
#include <vector>

namespace mp = meshplan;

int main() {
  mp::Tensor<float> w({2, 3});
  for (mp::index_t i = 0; i < w.numel(); ++i) w.data()[i] = static_cast<float>(i) + 0.5f;
  mp::SafetensorsWriter out;
  out.add("w", w);
  const std::vector<std::byte> bytes = out.bytes();
  const mp::SafetensorsView view(bytes);
  const mp::Tensor<float> back = view.read<float>("w");

  const mp::ModelSpec spec = mp::model_from_config_json(
      R"({"model_type": "qwen3_moe", "hidden_size": 64, "intermediate_size": 128,
          "moe_intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2, "num_experts": 8, "num_experts_per_tok": 2,
          "vocab_size": 100})");
  std::printf("read back %g from the file; config: %lld experts\n", static_cast<double>(back.data()[5]),
              static_cast<long long>(spec.num_experts));
  return back.data()[5] == 5.5f && spec.num_experts == 8 ? 0 : 1;
}
