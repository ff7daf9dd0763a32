// Rule entry_style_kinds: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[entry_style_kinds\]: plan entry 'embed_tokens' mixes a module hook \(prepare_input Shard\(1\) -> Replicate on 'ep'\) with a parameter style
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
namespace st = mp::styles;
using namespace mp::plans;

#ifdef MESHPLAN_FAIL
static_assert(mp::validate<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"ep", 8>>, mp::plan_cat_t<mp::Plan<mp::Entry<"embed_tokens", st::vocab_parallel<"ep">, st::gather_input<"ep">>>, mp::Plan<mp::Entry<"norm", st::replicate>, mp::Entry<"lm_head", st::replicate>>, parts::replicated_layer_norms, parts::replicated_gqa, parts::replicated_qk_norms, parts::ep_router<"ep">, parts::ep_experts<"ep">>>());
#else
static_assert(mp::validate<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"ep", 8>>, mp::plan_cat_t<mp::Plan<mp::Entry<"embed_tokens", st::replicate>>, mp::Plan<mp::Entry<"norm", st::replicate>, mp::Entry<"lm_head", st::replicate>>, parts::replicated_layer_norms, parts::replicated_gqa, parts::replicated_qk_norms, parts::ep_router<"ep">, parts::ep_experts<"ep">>>());
#endif
