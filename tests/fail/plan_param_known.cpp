// Rule param_known: the bad line must fail with the message below; its twin must compile.
// A typed view asked for a module rather than the parameter it holds.
// expect-error: meshplan \[param_known\]: the model has no parameter 'layers\.\*\.self_attn\.q_proj'; did you mean 'layers\.\*\.self_attn\.q_proj\.weight'\?
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/param_layout.hpp"

namespace mp = meshplan;
using Mesh = mp::DeviceMesh<mp::Axis<"ep", 8>, mp::Axis<"tp", 4>>;

#ifdef MESHPLAN_FAIL
using Q = mp::param_layout_t<mp::models::Qwen3_30B_A3B, Mesh, mp::plans::qwen3_moe::ep_tp<>, "layers.*.self_attn.q_proj">;
#else
using Q = mp::param_layout_t<mp::models::Qwen3_30B_A3B, Mesh, mp::plans::qwen3_moe::ep_tp<>, "layers.*.self_attn.q_proj.weight">;
#endif
