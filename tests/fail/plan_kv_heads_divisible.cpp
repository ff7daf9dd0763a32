// Rule kv_heads_divisible: the bad line must fail with the message below; its twin must compile.
// Qwen3-30B-A3B with attention TP over 8 ranks: it has 4 kv heads.
// expect-error: meshplan \[kv_heads_divisible\]: num_key_value_heads \(4\) is not divisible by 8 \(mesh axis 'tp'\), which shards dim 0 of 'layers\.\*\.self_attn\.k_proj\.weight'
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
namespace st = mp::styles;
using namespace mp::plans;

#ifdef MESHPLAN_FAIL
static_assert(mp::validate<mp::models::Qwen3_30B_A3B, mp::DeviceMesh<mp::Axis<"tp", 8>>, qwen3_moe::tp<>>());
#else
static_assert(mp::validate<mp::models::Qwen3_30B_A3B, mp::DeviceMesh<mp::Axis<"tp", 4>>, qwen3_moe::tp<>>());
#endif
