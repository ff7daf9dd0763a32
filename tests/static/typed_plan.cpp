// The typed plan view: the Layout type a plan gives each parameter, its local shape, the
// whole plan as a Hana map folded at compile time, and the negatives by detection.
#include <array>
#include <type_traits>

#include <boost/hana/back.hpp>
#include <boost/hana/bool.hpp>
#include <boost/hana/contains.hpp>
#include <boost/hana/count_if.hpp>
#include <boost/hana/filter.hpp>
#include <boost/hana/fold_left.hpp>
#include <boost/hana/front.hpp>
#include <boost/hana/length.hpp>

#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/local_shape.hpp"
#include "meshplan/plan/param_layout.hpp"
#include "meshplan/plan/typed_plan.hpp"

namespace mp = meshplan;
namespace hana = boost::hana;
namespace models = mp::models;
namespace q = mp::plans::qwen3_moe;
namespace mx = mp::plans::mixtral;
namespace ds = mp::plans::deepseek_v3;
using mp::Axis;
using mp::DeviceMesh;
using mp::dynamic;
using mp::Extents;
using mp::index_t;
using mp::Layout;
using mp::local_extents_t;
using mp::param_layout_t;
using mp::Replicate;
using mp::Shard;
using mp::StridedShard;
using std::is_same_v;

template <int N>
using EP = DeviceMesh<Axis<"ep", N>>;
template <int N>
using TP = DeviceMesh<Axis<"tp", N>>;
template <int E, int T>
using EPxTP = DeviceMesh<Axis<"ep", E>, Axis<"tp", T>>;
template <int D, int E, int T>
using DPxEPxTP = DeviceMesh<Axis<"dp", D>, Axis<"ep", E>, Axis<"tp", T>>;

// ---- Qwen3-30B-A3B: 128 experts [2 x 768, 2048], 32 heads and 4 kv heads of 128 -------------
using Qwen = models::Qwen3_30B_A3B;

// EP 8 x TP 4 under ep_tp: experts split on ep, attention and vocab on tp.
using QwenEpTp = EPxTP<8, 4>;
using QwenGateUp = param_layout_t<Qwen, QwenEpTp, q::ep_tp<>, "layers.*.mlp.experts.gate_up_proj">;
static_assert(is_same_v<QwenGateUp, Layout<QwenEpTp, Extents<128, 1536, 2048>, Shard<0>, Replicate>>);
static_assert(is_same_v<local_extents_t<QwenGateUp>, Extents<16, 1536, 2048>>);
static_assert(is_same_v<param_layout_t<Qwen, QwenEpTp, q::ep_tp<>, "layers.*.self_attn.q_proj.weight">,
                        Layout<QwenEpTp, Extents<4096, 2048>, Replicate, Shard<0>>>);
static_assert(is_same_v<local_extents_t<param_layout_t<Qwen, QwenEpTp, q::ep_tp<>, "layers.*.self_attn.o_proj.weight">>,
                        Extents<2048, 1024>>);
static_assert(is_same_v<local_extents_t<param_layout_t<Qwen, QwenEpTp, q::ep_tp<>, "embed_tokens.weight">>,
                        Extents<37984, 2048>>);  // 151936 / 4
static_assert(is_same_v<param_layout_t<Qwen, QwenEpTp, q::ep_tp<>, "layers.*.self_attn.q_norm.weight">,
                        Layout<QwenEpTp, Extents<128>, Replicate, Replicate>>);

// EP 16 x TP 4 under etp: the experts' intermediate dim on tp, gate||up packed.
using QwenEtp = EPxTP<16, 4>;
static_assert(is_same_v<param_layout_t<Qwen, QwenEtp, q::etp<>, "layers.*.mlp.experts.gate_up_proj">,
                        Layout<QwenEtp, Extents<128, 1536, 2048>, Shard<0>, StridedShard<1, 2>>>);
static_assert(is_same_v<local_extents_t<param_layout_t<Qwen, QwenEtp, q::etp<>, "layers.*.mlp.experts.gate_up_proj">>,
                        Extents<8, 384, 2048>>);
static_assert(is_same_v<local_extents_t<param_layout_t<Qwen, QwenEtp, q::etp<>, "layers.*.mlp.experts.down_proj">>,
                        Extents<8, 2048, 192>>);

// TP 4 under tp: every expert on every rank, each a quarter of its width.
static_assert(is_same_v<param_layout_t<Qwen, TP<4>, q::tp<>, "layers.*.mlp.experts.gate_up_proj">,
                        Layout<TP<4>, Extents<128, 1536, 2048>, StridedShard<1, 2>>>);
static_assert(is_same_v<local_extents_t<param_layout_t<Qwen, TP<4>, q::tp<>, "layers.*.mlp.experts.down_proj">>,
                        Extents<128, 2048, 192>>);

// ---- Mixtral-8x7B: 8 experts [2 x 14336, 4096], 8 kv heads --------------------------------
using Mixtral = models::Mixtral_8x7B;
static_assert(is_same_v<local_extents_t<param_layout_t<Mixtral, TP<8>, mx::tp<>, "layers.*.mlp.experts.gate_up_proj">>,
                        Extents<8, 3584, 4096>>);
static_assert(is_same_v<local_extents_t<param_layout_t<Mixtral, TP<8>, mx::tp<>, "layers.*.self_attn.k_proj.weight">>,
                        Extents<128, 4096>>);
static_assert(is_same_v<param_layout_t<Mixtral, EPxTP<8, 8>, mx::etp<>, "layers.*.mlp.experts.down_proj">,
                        Layout<EPxTP<8, 8>, Extents<8, 4096, 14336>, Shard<0>, Shard<2>>>);
static_assert(
    is_same_v<local_extents_t<param_layout_t<Mixtral, EPxTP<8, 8>, mx::etp<>, "layers.*.mlp.experts.gate_up_proj">>,
              Extents<1, 3584, 4096>>);
// ep: one expert per rank, attention whole.
static_assert(is_same_v<local_extents_t<param_layout_t<Mixtral, EP<8>, mx::ep<>, "layers.*.mlp.experts.gate_up_proj">>,
                        Extents<1, 28672, 4096>>);
static_assert(is_same_v<param_layout_t<Mixtral, EP<8>, mx::ep<>, "layers.*.self_attn.q_proj.weight">,
                        Layout<EP<8>, Extents<4096, 4096>, Replicate>>);

// ---- DeepSeek-V3: 256 experts [2 x 2048, 7168], MLA, 3 dense layers, a shared expert -------
using DeepSeek = models::DeepSeek_V3;
using DsMesh = DPxEPxTP<2, 64, 8>;
static_assert(is_same_v<param_layout_t<DeepSeek, DsMesh, ds::ep_sp<>, "layers.*.mlp.experts.gate_up_proj">,
                        Layout<DsMesh, Extents<256, 4096, 7168>, Replicate, Shard<0>, Replicate>>);
static_assert(
    is_same_v<local_extents_t<param_layout_t<DeepSeek, DsMesh, ds::ep_sp<>, "layers.*.self_attn.q_b_proj.weight">>,
              Extents<3072, 1536>>);  // 128 heads of 192 over tp 8
static_assert(is_same_v<local_extents_t<param_layout_t<DeepSeek, DsMesh, ds::ep_sp<>, "layers.*.mlp.gate_proj.weight">>,
                        Extents<18432, 7168>>);  // dense layers whole under EP
static_assert(is_same_v<param_layout_t<DeepSeek, DsMesh, ds::etp<>, "layers.*.mlp.experts.down_proj">,
                        Layout<DsMesh, Extents<256, 7168, 2048>, Replicate, Shard<0>, Shard<2>>>);
static_assert(
    is_same_v<local_extents_t<param_layout_t<DeepSeek, DsMesh, ds::etp<>, "layers.*.mlp.experts.gate_up_proj">>,
              Extents<4, 512, 7168>>);
static_assert(
    is_same_v<
        local_extents_t<param_layout_t<DeepSeek, DsMesh, ds::etp<>, "layers.*.mlp.shared_experts.gate_proj.weight">>,
        Extents<256, 7168>>);
static_assert(is_same_v<local_extents_t<param_layout_t<DeepSeek, TP<8>, ds::tp<>, "layers.*.mlp.experts.gate_up_proj">>,
                        Extents<256, 512, 7168>>);
static_assert(is_same_v<param_layout_t<DeepSeek, EP<64>, ds::ep<>, "layers.*.mlp.gate.e_score_correction_bias">,
                        Layout<EP<64>, Extents<256>, Replicate>>);

// ---- Local shapes are static only where every rank holds the same -----------------------
// A run-time axis that shards nothing of a parameter keeps its local shape static...
using DynDp = DeviceMesh<Axis<"dp">, Axis<"ep", 8>>;
static_assert(is_same_v<local_extents_t<param_layout_t<Qwen, DynDp, q::ep<>, "layers.*.mlp.experts.gate_up_proj">>,
                        Extents<16, 1536, 2048>>);
// ...one that shards it does not.
using DynTp = DeviceMesh<Axis<"tp">>;
using DynQ = param_layout_t<Qwen, DynTp, q::tp<>, "layers.*.self_attn.q_proj.weight">;
static_assert(is_same_v<DynQ, Layout<DynTp, Extents<4096, 2048>, Shard<0>>>);
static_assert(is_same_v<local_extents_t<DynQ>, Extents<dynamic, 2048>> && mp::local_elements_v<DynQ> == dynamic);
// torch.chunk's short last shard: 10 rows over 4 ranks are 3, 3, 3, 1.
using Uneven = Layout<TP<4>, Extents<10, 6>, Shard<0>>;
static_assert(is_same_v<local_extents_t<Uneven>, Extents<dynamic, 6>> && mp::local_elements_v<Uneven> == dynamic);
static_assert(mp::local_elements_v<QwenGateUp> == 16 * 1536 * 2048);

// ---- The whole plan as a map -----------------------------------------------------------
// Lookup by name gives the same type as param_layout_t.
constexpr auto ds_plan = mp::typed_plan<DeepSeek, DsMesh, ds::etp<>>;
static_assert(is_same_v<typename decltype(+ds_plan[mp::param_key<"layers.*.mlp.experts.gate_up_proj">])::type,
                        param_layout_t<DeepSeek, DsMesh, ds::etp<>, "layers.*.mlp.experts.gate_up_proj">>);
static_assert(is_same_v<typename decltype(+ds_plan[mp::param_key<"lm_head.weight">])::type,
                        Layout<DsMesh, Extents<129280, 7168>, Replicate, Replicate, Shard<0>>>);
// Every parameter of the inventory, once; in module order in typed_params.
static_assert(hana::length(ds_plan) == hana::size_c<22>);
static_assert(mp::param_name_of(hana::front(mp::typed_params<DeepSeek, DsMesh, ds::etp<>>)) == "embed_tokens.weight");
static_assert(mp::param_name_of(hana::back(mp::typed_params<DeepSeek, DsMesh, ds::etp<>>)) == "lm_head.weight");

// Algorithms over the plan: the parameters split on ep are the experts' two tensors.
constexpr auto split_on_ep = [](auto kv) {
  using L = mp::layout_of_t<decltype(kv)>;
  return hana::bool_c<!L::placements[1].is_replicate()>;
};
static_assert(hana::count_if(ds_plan, split_on_ep) == hana::size_c<2>);
static_assert(mp::param_name_of(hana::front(hana::filter(mp::typed_params<DeepSeek, DsMesh, ds::etp<>>,
                                                         split_on_ep))) == "layers.*.mlp.experts.gate_up_proj");

// Sizing a rank's buffer: tiny Qwen3-MoE (2 layers, hidden 64, 16 experts [2 x 32, 64]) on
// EP 4 under ep, by hand: embedding and lm_head 256 x 64 each, norms 2 x 64 x 2 + 64, q/k/v/o
// 4 x 64 x 64 x 2, q/k norms 2 x 8 x 2, router 16 x 64 x 2, and a quarter of the experts:
// (4 x 64 x 64 + 4 x 64 x 32) x 2.
using Tiny = models::TinyQwen3Moe;
constexpr index_t tiny_per_rank =
    hana::fold_left(mp::typed_plan<Tiny, EP<4>, q::ep<>>, index_t{0}, [](index_t n, auto kv) {
      return n + mp::param_info_of<Tiny>(kv).count * mp::local_elements_v<mp::layout_of_t<decltype(kv)>>;
    });
static_assert(tiny_per_rank == 2 * 256 * 64 + (2 * 64 * 2 + 64) + 4 * 64 * 64 * 2 + 2 * 8 * 2 + 16 * 64 * 2 +
                                   (4 * 64 * 64 + 4 * 64 * 32) * 2);
[[maybe_unused]] std::array<float, tiny_per_rank> tiny_weights{};  // a static buffer of exactly that size

// A layer's experts on one rank of Qwen3-30B-A3B under ep_tp: 16 of 128.
static_assert(mp::local_elements_v<typename decltype(+mp::typed_plan<Qwen, QwenEpTp, q::ep_tp<>>[mp::param_key<
                  "layers.*.mlp.experts.down_proj">])::type> == 16 * 2048 * 768);

// ---- Negatives by detection ------------------------------------------------------------
static_assert(mp::has_param_layout_v<Qwen, QwenEpTp, q::ep_tp<>, "layers.*.mlp.experts.gate_up_proj">);
static_assert(!mp::has_param_layout_v<Qwen, QwenEpTp, q::ep_tp<>, "layers.*.mlp.experts">);  // a module
static_assert(
    !mp::has_param_layout_v<Qwen, QwenEpTp, q::ep_tp<>, "layers.*.self_attn.q_proj">);  // its weight is q_proj.weight
static_assert(
    !mp::has_param_layout_v<Qwen, QwenEpTp, q::ep_tp<>, "layers.*.mlp.shared_experts.up_proj.weight">);  // DeepSeek's
static_assert(!mp::has_param_layout_v<Qwen, TP<8>, q::tp<>, "layers.*.self_attn.q_proj.weight">);  // 4 kv heads over 8
static_assert(!mp::has_param_layout_v<Qwen, EP<256>, q::ep<>, "embed_tokens.weight">);   // 128 experts over 256
static_assert(!mp::has_param_layout_v<Mixtral, EP<8>, q::ep<>, "embed_tokens.weight">);  // no q/k norms in Mixtral
static_assert(!mp::has_param_layout_v<DeepSeek, TP<3>, ds::tp<>, "norm.weight">);        // 128 heads over 3
static_assert(!mp::has_param_layout_v<Qwen, int, q::ep<>, "norm.weight">);               // not a mesh
static_assert(!mp::has_param_layout_v<int, EP<8>, q::ep<>, "norm.weight">);              // not a model
// A name the map does not hold, asked without an error.
static_assert(!hana::contains(ds_plan, mp::param_key<"layers.*.mlp.experts">));
static_assert(hana::contains(ds_plan, mp::param_key<"layers.*.mlp.experts.down_proj">));
