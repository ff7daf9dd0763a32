// Rule tied_embeddings_agree: the bad line must fail with the message below; its twin must compile.
// expect-error: meshplan \[tied_embeddings_agree\]: with tie_word_embeddings, 'embed_tokens.weight' is also the output embedding, but plan entry 'lm_head' places it as Shard\(0\) and entry 'embed_tokens' as Replicate\(\) on mesh axis 'tp'; give both one placement
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
namespace st = mp::styles;
namespace parts = mp::plans::parts;

struct TiedQwen3Moe {
  static constexpr mp::ModelSpec spec = [] {
    mp::ModelSpec m = mp::models::TinyQwen3Moe::spec;
    m.tie_word_embeddings = true;
    return m;
  }();
};
using Mesh = mp::DeviceMesh<mp::Axis<"tp", 2>>;

#ifdef MESHPLAN_FAIL
using Ends = mp::Plan<mp::Entry<"embed_tokens", st::replicate>, mp::Entry<"norm", st::replicate>,
                      mp::Entry<"lm_head", st::colwise_gather_output<"tp">>>;
static_assert(mp::validate<TiedQwen3Moe, Mesh,
                           mp::plan_cat_t<Ends, parts::replicated_layer_norms, parts::tp_gqa<"tp">,
                                          parts::tp_qk_norms<"tp">, parts::replicated_router<>,
                                          parts::tp_experts<"tp">>>());
#else
// The built-in plan splits both over the vocab.
static_assert(mp::validate<TiedQwen3Moe, Mesh, mp::plans::qwen3_moe::tp<>>());
#endif
