// README.md's typed-plan example, kept compiling and true: a parameter's layout type, the
// shape every rank holds, and a fold over the whole plan that sizes a rank's weights.
#include <type_traits>

#include <boost/hana.hpp>
#include <meshplan/meshplan.hpp>
namespace mp = meshplan;
namespace hana = boost::hana;

using Model = mp::models::Qwen3_30B_A3B;
using Mesh  = mp::DeviceMesh<mp::Axis<"ep", 8>, mp::Axis<"tp", 4>>;
using Plan  = mp::plans::qwen3_moe::ep_tp<>;

using GateUp = mp::param_layout_t<Model, Mesh, Plan, "layers.*.mlp.experts.gate_up_proj">;
static_assert(std::is_same_v<mp::local_extents_t<GateUp>, mp::Extents<16, 1536, 2048>>);

constexpr mp::index_t per_rank = hana::fold_left(mp::typed_plan<Model, Mesh, Plan>, mp::index_t{0},
    [](mp::index_t n, auto kv) {
      return n + mp::param_info_of<Model>(kv).count * mp::local_elements_v<mp::layout_of_t<decltype(kv)>>;
    });
static_assert(per_rank == 4'018'747'392);   // elements on each of the 32 ranks: 8 GB in bf16
