// Model configs from transformers' config.json: the published configs give the presets,
// and malformed ones get the config rules' messages.
#include <catch2/catch.hpp>

#include <string>

#include "meshplan/io/config_json.hpp"
#include "meshplan/model/presets.hpp"

namespace mp = meshplan;

namespace {
// The fields of the published config.json files that meshplan reads (others ignored).
const char* qwen3_30b = R"({"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
  "hidden_size": 2048, "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4,
  "head_dim": 128, "vocab_size": 151936, "intermediate_size": 6144, "moe_intermediate_size": 768,
  "num_experts": 128, "num_experts_per_tok": 8, "norm_topk_prob": true, "decoder_sparse_step": 1,
  "mlp_only_layers": [], "tie_word_embeddings": false, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0})";
const char* mixtral_8x7b = R"({"model_type": "mixtral", "hidden_size": 4096, "num_hidden_layers": 32,
  "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000, "intermediate_size": 14336,
  "num_local_experts": 8, "num_experts_per_tok": 2, "tie_word_embeddings": false, "rms_norm_eps": 1e-05})";
const char* deepseek_v3 = R"({"model_type": "deepseek_v3", "hidden_size": 7168, "num_hidden_layers": 61,
  "num_attention_heads": 128, "num_key_value_heads": 128, "vocab_size": 129280, "intermediate_size": 18432,
  "moe_intermediate_size": 2048, "n_routed_experts": 256, "num_experts_per_tok": 8, "n_shared_experts": 1,
  "n_group": 8, "topk_group": 4, "routed_scaling_factor": 2.5, "first_k_dense_replace": 3, "norm_topk_prob": true,
  "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
  "scoring_func": "sigmoid", "topk_method": "noaux_tc", "tie_word_embeddings": false})";

bool same(const mp::ModelSpec& a, const mp::ModelSpec& b) {
  return a.family == b.family && a.hidden_size == b.hidden_size && a.num_hidden_layers == b.num_hidden_layers &&
         a.num_attention_heads == b.num_attention_heads && a.num_key_value_heads == b.num_key_value_heads &&
         a.head_dim == b.head_dim && a.vocab_size == b.vocab_size && a.intermediate_size == b.intermediate_size &&
         a.tie_word_embeddings == b.tie_word_embeddings && a.num_experts == b.num_experts &&
         a.num_experts_per_tok == b.num_experts_per_tok && a.moe_intermediate_size == b.moe_intermediate_size &&
         a.norm_topk_prob == b.norm_topk_prob && a.first_k_dense_replace == b.first_k_dense_replace &&
         a.n_shared_experts == b.n_shared_experts && a.routed_scaling_factor == b.routed_scaling_factor &&
         a.n_group == b.n_group && a.topk_group == b.topk_group && a.q_lora_rank == b.q_lora_rank &&
         a.kv_lora_rank == b.kv_lora_rank && a.qk_nope_head_dim == b.qk_nope_head_dim &&
         a.qk_rope_head_dim == b.qk_rope_head_dim && a.v_head_dim == b.v_head_dim;
}
}  // namespace

TEST_CASE("published config.json files give the presets", "[config]") {
  CHECK(same(mp::model_from_config_json(qwen3_30b), mp::models::Qwen3_30B_A3B::spec));
  CHECK(same(mp::model_from_config_json(mixtral_8x7b), mp::models::Mixtral_8x7B::spec));
  CHECK(same(mp::model_from_config_json(deepseek_v3), mp::models::DeepSeek_V3::spec));
}

TEST_CASE("malformed configs are refused with the rule's message", "[config]") {
  auto with = [](std::string json, const std::string& from, const std::string& to) {
    json.replace(json.find(from), from.size(), to);
    return json;
  };
  const std::string q = qwen3_30b;
  CHECK_THROWS_WITH(mp::model_from_config_json("{"), Catch::StartsWith("meshplan [config_json]: config.json is not valid JSON"));
  CHECK_THROWS_WITH(mp::model_from_config_json("[1, 2]"), "meshplan [config_json]: config.json is not a JSON object");
  CHECK_THROWS_WITH(mp::model_from_config_json(with(q, "\"qwen3_moe\"", "\"llama\"")),
                    "meshplan [config_model_type]: config.json has model_type 'llama'; meshplan knows qwen3, "
                    "qwen3_moe, mixtral and deepseek_v3");
  CHECK_THROWS_WITH(mp::model_from_config_json(with(q, "\"hidden_size\": 2048,", "")),
                    "meshplan [config_field]: config.json: 'hidden_size' is missing");
  CHECK_THROWS_WITH(mp::model_from_config_json(with(q, "\"hidden_size\": 2048", "\"hidden_size\": \"2048\"")),
                    "meshplan [config_field]: config.json: 'hidden_size' is not an integer");
  CHECK_THROWS_WITH(mp::model_from_config_json(with(q, "\"mlp_only_layers\": []", "\"mlp_only_layers\": [3]")),
                    Catch::Contains("'mlp_only_layers' is not empty"));
  CHECK_THROWS_WITH(mp::model_from_config_json(with(q, "\"num_key_value_heads\": 4", "\"num_key_value_heads\": 5")),
                    "meshplan [config_heads_grouped]: num_attention_heads (32) must be a multiple of "
                    "num_key_value_heads (5)");
  CHECK_THROWS_WITH(mp::model_from_config_json(with(deepseek_v3, "\"n_group\": 8", "\"n_group\": 3")),
                    Catch::StartsWith("meshplan [config_groups]"));
  CHECK_THROWS_WITH(mp::model_from_config_file("/nonexistent/config.json"),
                    "meshplan [config_file]: cannot open config file '/nonexistent/config.json'");
}

TEST_CASE("defaults follow transformers", "[config]") {
  auto m = mp::model_from_config_json(R"({"model_type": "qwen3", "hidden_size": 64, "num_hidden_layers": 2,
      "num_attention_heads": 8, "vocab_size": 100, "intermediate_size": 128})");
  CHECK(m.num_key_value_heads == 8);
  CHECK(m.head_dim == 8);
  CHECK_FALSE(m.tie_word_embeddings);
  CHECK_FALSE(m.is_moe());
}
