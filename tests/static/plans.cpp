// Built-in plans validated by the compiler on realistic meshes, and known-bad combinations
// detected without an error.
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/validate.hpp"

namespace mp = meshplan;
namespace models = mp::models;
namespace q = mp::plans::qwen3_moe;
namespace mx = mp::plans::mixtral;
namespace ds = mp::plans::deepseek_v3;
using mp::Axis;
using mp::DeviceMesh;
using mp::validate;

template <int N>
using EP = DeviceMesh<Axis<"ep", N>>;
template <int N>
using TP = DeviceMesh<Axis<"tp", N>>;
template <int E, int T>
using EPxTP = DeviceMesh<Axis<"ep", E>, Axis<"tp", T>>;
template <int D, int E, int T>
using DPxEPxTP = DeviceMesh<Axis<"dp", D>, Axis<"ep", E>, Axis<"tp", T>>;

// Qwen3-30B-A3B: EP over 8 to 64 ranks; attention TP at most 4 (4 kv heads).
static_assert(validate<models::Qwen3_30B_A3B, EP<8>, q::ep<>>());
static_assert(validate<models::Qwen3_30B_A3B, EP<16>, q::ep<>>());
static_assert(validate<models::Qwen3_30B_A3B, EP<32>, q::ep<>>());
static_assert(validate<models::Qwen3_30B_A3B, EP<64>, q::ep<>>());
static_assert(validate<models::Qwen3_30B_A3B, EPxTP<16, 4>, q::ep_tp<>>());
static_assert(validate<models::Qwen3_30B_A3B, EPxTP<16, 4>, q::ep_sp<>>());
static_assert(validate<models::Qwen3_30B_A3B, EPxTP<16, 4>, q::etp<>>());
static_assert(validate<models::Qwen3_30B_A3B, DPxEPxTP<2, 8, 4>, q::ep_sp<>>());
static_assert(validate<models::Qwen3_30B_A3B, TP<4>, q::tp<>>());
static_assert(validate<models::Qwen3_30B_A3B, TP<4>, q::tp_sp<>>());
static_assert(validate<models::Qwen3_235B_A22B, EPxTP<32, 4>, q::ep_sp<>>());
static_assert(validate<models::Qwen3_235B_A22B, EPxTP<8, 4>, q::etp<>>());

// DeepSeek-V3: EP over 64 ranks, alone and with TP 8 on a third axis.
static_assert(validate<models::DeepSeek_V3, EP<64>, ds::ep<>>());
static_assert(validate<models::DeepSeek_V3, DPxEPxTP<2, 64, 8>, ds::ep_tp<>>());
static_assert(validate<models::DeepSeek_V3, DPxEPxTP<2, 64, 8>, ds::ep_sp<>>());
static_assert(validate<models::DeepSeek_V3, DPxEPxTP<2, 64, 8>, ds::etp<>>());
static_assert(validate<models::DeepSeek_V3, TP<8>, ds::tp<>>());
static_assert(validate<models::DeepSeek_V3, TP<8>, ds::tp_sp<>>());

// Mixtral-8x7B: TP 8 (8 kv heads, 14336 wide experts); EP up to its 8 experts.
static_assert(validate<models::Mixtral_8x7B, TP<8>, mx::tp<>>());
static_assert(validate<models::Mixtral_8x7B, TP<8>, mx::tp_sp<>>());
static_assert(validate<models::Mixtral_8x7B, EPxTP<8, 8>, mx::etp<>>());
static_assert(validate<models::Mixtral_8x7B, EPxTP<4, 2>, mx::ep_tp<>>());
static_assert(validate<models::Mixtral_8x22B, EPxTP<8, 8>, mx::ep_sp<>>());

// Dense Qwen3.
static_assert(validate<models::Qwen3_8B, TP<8>, mp::plans::qwen3::tp<>>());
static_assert(validate<models::Qwen3_8B, TP<8>, mp::plans::qwen3::tp_sp<>>());

// Axis names are the plan's choice.
static_assert(validate<models::Qwen3_30B_A3B, DeviceMesh<Axis<"expert", 8>, Axis<"model", 2>>,
                       q::ep_sp<"expert", "model">>());

// A run-time axis: what depends on its size waits for the run-time check.
static_assert(validate<models::Qwen3_30B_A3B, DeviceMesh<Axis<"dp">, Axis<"ep", 8>>, q::ep<>>());
static_assert(mp::valid_plan_v<models::Qwen3_30B_A3B, DeviceMesh<Axis<"tp">>, q::tp<>>);

// Known-bad, by detection.
static_assert(!mp::valid_plan_v<models::Qwen3_30B_A3B, TP<8>, q::tp<>>);           // 4 kv heads over 8
static_assert(!mp::valid_plan_v<models::Qwen3_30B_A3B, EPxTP<8, 8>, q::ep_sp<>>);  // attention TP 8 again
static_assert(!mp::valid_plan_v<models::Qwen3_30B_A3B, EP<256>, q::ep<>>);         // 128 experts
static_assert(!mp::valid_plan_v<models::Mixtral_8x7B, EP<16>, mx::ep<>>);          // 8 experts
static_assert(!mp::valid_plan_v<models::DeepSeek_V3, EP<512>, ds::ep<>>);          // 256 experts
static_assert(!mp::valid_plan_v<models::DeepSeek_V3, TP<3>, ds::tp<>>);            // 128 heads over 3
static_assert(!mp::valid_plan_v<models::Mixtral_8x7B, EP<8>, q::ep<>>);            // no q/k norms in Mixtral
static_assert(!mp::valid_plan_v<models::Qwen3_30B_A3B, EP<8>, q::ep_tp<>>);        // no tp axis
static_assert(!mp::valid_plan_v<models::Qwen3_8B, TP<8>, q::tp<>>);                // a dense model has no experts
