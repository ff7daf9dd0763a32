// Rule style_applies: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[style_applies\]: plan entry 'embed_tokens' applies colwise on 'ep' to 'embed_tokens\.weight', which is an embedding; colwise cannot place that
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
namespace st = mp::styles;
using namespace mp::plans;

#ifdef MESHPLAN_FAIL
static_assert(mp::validate<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"ep", 8>>, mp::plan_cat_t<mp::Plan<mp::Entry<"embed_tokens", st::colwise<"ep">>>, mp::Plan<mp::Entry<"norm", st::replicate>, mp::Entry<"lm_head", st::replicate>>, parts::replicated_layer_norms, parts::replicated_gqa, parts::replicated_qk_norms, parts::ep_router<"ep">, parts::ep_experts<"ep">>>());
#else
static_assert(mp::validate<mp::models::TinyQwen3Moe, mp::DeviceMesh<mp::Axis<"ep", 8>>, mp::plan_cat_t<mp::Plan<mp::Entry<"embed_tokens", st::replicate>>, mp::Plan<mp::Entry<"norm", st::replicate>, mp::Entry<"lm_head", st::replicate>>, parts::replicated_layer_norms, parts::replicated_gqa, parts::replicated_qk_norms, parts::ep_router<"ep">, parts::ep_experts<"ep">>>());
#endif
