// Rule model_is_model_type: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[model_is_model_type\]: MoEBlock's Model is 'int', which is neither a model type
#include "meshplan/model/presets.hpp"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/plan/builtin/registry.hpp"

namespace mp = meshplan;
using namespace mp::plans;
using Mesh = mp::DeviceMesh<mp::Axis<"tp", 2>>;

#ifdef MESHPLAN_FAIL
constexpr std::size_t block_bytes = sizeof(mp::MoEBlock<int, Mesh, qwen3_moe::tp<>>);
#else
constexpr std::size_t block_bytes = sizeof(mp::MoEBlock<mp::RuntimeModel, Mesh, qwen3_moe::tp<>>);
#endif
