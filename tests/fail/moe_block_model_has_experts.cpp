// Rule model_has_experts, at compile time: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[model_has_experts\]: MoEBlock needs a model with experts; this qwen3 config has none
#include "meshplan/model/presets.hpp"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/plan/builtin/registry.hpp"

namespace mp = meshplan;
using namespace mp::plans;
using Mesh = mp::DeviceMesh<mp::Axis<"tp", 2>>;

#ifdef MESHPLAN_FAIL
constexpr std::size_t block_bytes = sizeof(mp::MoEBlock<mp::models::TinyQwen3, Mesh, qwen3::tp<>>);
#else
constexpr std::size_t block_bytes = sizeof(mp::MoEBlock<mp::models::TinyQwen3Moe, Mesh, qwen3_moe::tp<>>);
#endif
