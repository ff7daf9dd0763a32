// Rule mesh_is_device_mesh, through MoEBlock: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[mesh_is_device_mesh\]: MoEBlock's Mesh is 'int', which is not a mesh
#include "meshplan/model/presets.hpp"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/plan/builtin/registry.hpp"

namespace mp = meshplan;
using namespace mp::plans;

#ifdef MESHPLAN_FAIL
constexpr std::size_t block_bytes = sizeof(mp::MoEBlock<mp::models::TinyQwen3Moe, int, qwen3_moe::tp<>>);
#else
constexpr std::size_t block_bytes = sizeof(mp::MoEBlock<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"tp", 2>>, qwen3_moe::tp<>>);
#endif
