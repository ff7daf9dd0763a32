#pragma once
// A ModelSpec from a transformers config.json, checked by the same rules as the presets.
//
//   mp::ModelSpec spec = mp::model_from_config_json(text);      // or from a file path
//
// model_type picks the family: "qwen3", "qwen3_moe", "mixtral", "deepseek_v3". Fields take
// transformers' defaults where a config may leave them out (num_key_value_heads = heads,
// head_dim = hidden_size / heads, tie_word_embeddings = false, ...). Qwen3-MoE configs with
// dense layers interleaved (decoder_sparse_step != 1 or a non-empty mlp_only_layers) are
// refused: meshplan models dense layers only as DeepSeek-V3's leading ones.

#include "meshplan/core/detail/public_begin.hpp"

#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/model/detail/model_rules.hpp"
#include "meshplan/model/model_spec.hpp"

namespace meshplan {

namespace detail {
class ConfigReader {
 public:
  explicit ConfigReader(const nlohmann::json& j) : j_(j) {}

  bool has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }

  index_t integer(const char* key) const {
    if (!has(key)) fail(key, "is missing");
    const auto& v = j_.at(key);
    if (!v.is_number_integer()) fail(key, "is not an integer");
    return v.get<index_t>();
  }
  index_t integer(const char* key, index_t fallback) const { return has(key) ? integer(key) : fallback; }

  double number(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    const auto& v = j_.at(key);
    if (!v.is_number()) fail(key, "is not a number");
    return v.get<double>();
  }

  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    const auto& v = j_.at(key);
    if (!v.is_boolean()) fail(key, "is not true or false");
    return v.get<bool>();
  }

  std::string text(const char* key) const {
    if (!has(key)) fail(key, "is missing");
    const auto& v = j_.at(key);
    if (!v.is_string()) fail(key, "is not a string");
    return v.get<std::string>();
  }

  const nlohmann::json& json() const { return j_; }

  [[noreturn]] static void fail(std::string_view key, std::string_view what) {
    throw RuleViolation(Message::rule("config_field") << "config.json: '" << key << "' " << what);
  }

 private:
  const nlohmann::json& j_;
};
}  // namespace detail

inline ModelSpec model_from_config_json(std::string_view text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw RuleViolation(Message::rule("config_json") << "config.json is not valid JSON: " << e.what());
  }
  if (!j.is_object()) throw RuleViolation(Message::rule("config_json") << "config.json is not a JSON object");
  detail::ConfigReader c(j);

  ModelSpec m;
  const std::string type = c.text("model_type");
  if (type == "qwen3") m.family = Family::qwen3;
  else if (type == "qwen3_moe") m.family = Family::qwen3_moe;
  else if (type == "mixtral") m.family = Family::mixtral;
  else if (type == "deepseek_v3") m.family = Family::deepseek_v3;
  else
    throw RuleViolation(Message::rule("config_model_type")
                        << "config.json has model_type '" << type
                        << "'; meshplan knows qwen3, qwen3_moe, mixtral and deepseek_v3");

  m.hidden_size = c.integer("hidden_size");
  m.num_hidden_layers = c.integer("num_hidden_layers");
  m.num_attention_heads = c.integer("num_attention_heads");
  m.num_key_value_heads = c.integer("num_key_value_heads", m.num_attention_heads);
  m.vocab_size = c.integer("vocab_size");
  m.tie_word_embeddings = c.boolean("tie_word_embeddings", false);
  m.attention_bias = c.boolean("attention_bias", false);
  if (m.family != Family::deepseek_v3)
    m.head_dim = c.integer("head_dim", m.num_attention_heads > 0 ? m.hidden_size / m.num_attention_heads : 0);

  switch (m.family) {
    case Family::qwen3: m.intermediate_size = c.integer("intermediate_size"); break;
    case Family::qwen3_moe:
      m.intermediate_size = c.integer("intermediate_size", 0);
      // Hub configs say num_experts; transformers 5 writes it as num_local_experts.
      m.num_experts = c.has("num_experts") ? c.integer("num_experts") : c.integer("num_local_experts");
      m.num_experts_per_tok = c.integer("num_experts_per_tok");
      m.moe_intermediate_size = c.integer("moe_intermediate_size");
      m.norm_topk_prob = c.boolean("norm_topk_prob", false);
      if (c.integer("decoder_sparse_step", 1) != 1)
        detail::ConfigReader::fail("decoder_sparse_step", "is not 1; interleaved dense layers are not supported");
      if (c.has("mlp_only_layers") && !(j.at("mlp_only_layers").is_array() && j.at("mlp_only_layers").empty()))
        detail::ConfigReader::fail("mlp_only_layers", "is not empty; interleaved dense layers are not supported");
      break;
    case Family::mixtral:
      m.intermediate_size = c.integer("intermediate_size");
      m.moe_intermediate_size = m.intermediate_size;  // Mixtral's experts are intermediate_size wide
      m.num_experts = c.integer("num_local_experts");
      m.num_experts_per_tok = c.integer("num_experts_per_tok");
      m.norm_topk_prob = true;  // Mixtral always renormalizes its top-k weights
      break;
    case Family::deepseek_v3:
      m.intermediate_size = c.integer("intermediate_size");
      m.num_experts = c.integer("n_routed_experts");
      m.num_experts_per_tok = c.integer("num_experts_per_tok");
      m.moe_intermediate_size = c.integer("moe_intermediate_size");
      m.norm_topk_prob = c.boolean("norm_topk_prob", true);
      m.first_k_dense_replace = c.integer("first_k_dense_replace", 0);
      m.n_shared_experts = c.integer("n_shared_experts", 0);
      m.routed_scaling_factor = c.number("routed_scaling_factor", 1.0);
      m.n_group = c.integer("n_group", 1);
      m.topk_group = c.integer("topk_group", 1);
      m.q_lora_rank = c.integer("q_lora_rank", 0);
      m.kv_lora_rank = c.integer("kv_lora_rank");
      m.qk_nope_head_dim = c.integer("qk_nope_head_dim");
      m.qk_rope_head_dim = c.integer("qk_rope_head_dim");
      m.v_head_dim = c.integer("v_head_dim");
      break;
  }
  m.rms_norm_eps = c.number("rms_norm_eps", 1e-6);
  // transformers 5 writes rope_parameters {rope_type, rope_theta}; older configs rope_theta
  // and rope_scaling.
  if (c.has("rope_parameters")) {
    const detail::ConfigReader rope(j.at("rope_parameters"));
    m.rope_theta = rope.number("rope_theta", m.rope_theta);
    m.rope_scaled = rope.has("rope_type") && rope.text("rope_type") != "default";
  }
  m.rope_theta = c.number("rope_theta", m.rope_theta);
  if (c.has("rope_scaling")) {
    const detail::ConfigReader scaling(j.at("rope_scaling"));
    for (const char* key : {"rope_type", "type"})
      if (scaling.has(key) && scaling.text(key) != "default") m.rope_scaled = true;
  }
  if (m.family == Family::deepseek_v3) m.rope_interleave = c.boolean("rope_interleave", true);
  enforce(model_rules::check_config(m));
  return m;
}

inline ModelSpec model_from_config_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw RuleViolation(Message::rule("config_file") << "cannot open config file '" << path << "'");
  std::stringstream buffer;
  buffer << in.rdbuf();
  return model_from_config_json(buffer.str());
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
