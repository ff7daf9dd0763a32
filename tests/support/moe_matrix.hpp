#pragma once
// The matrix the MoE block's forward and backward tests walk (moe_block_test.cpp,
// moe_block_backward_test.cpp): configs beyond the presets, the meshes of a dp x ep x tp
// world, and which of them a plan can use.

#include <span>

#include "meshplan/mesh/device_mesh.hpp"
#include "meshplan/model/presets.hpp"
#include "meshplan/plan/plan_rules.hpp"
#include "moe_cases.hpp"

namespace moe_cases {

using MatrixMesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep">, mp::Axis<"tp">>;

// Configs beyond the presets: what the block must also get right.
struct DeepSeekV3NoShared {
  static constexpr mp::ModelSpec spec = [] {
    mp::ModelSpec m = mp::models::TinyDeepSeekV3::spec;
    m.n_shared_experts = 0;
    m.n_group = m.topk_group = 1;
    m.norm_topk_prob = false;
    return m;
  }();
};
struct Qwen3MoeOdd {  // 12 experts of width 10, top-3, not renormalized, hidden 24
  static constexpr mp::ModelSpec spec = [] {
    mp::ModelSpec m = mp::models::TinyQwen3Moe::spec;
    m.hidden_size = 24;
    m.num_experts = 12;
    m.num_experts_per_tok = 3;
    m.moe_intermediate_size = 10;
    m.norm_topk_prob = false;
    return m;
  }();
};

/// The meshes a plan runs on: every candidate whose axes of size > 1 the plan uses (dp
/// always may be used).
inline constexpr Sizes candidate_meshes[] = {{1, 1, 1}, {1, 2, 1}, {1, 4, 1}, {1, 8, 1}, {2, 2, 1}, {2, 1, 1},
                                             {1, 1, 2}, {1, 1, 4}, {2, 1, 2}, {1, 2, 2}, {1, 4, 2}, {2, 2, 2}};

inline bool fits_axes(std::span<const mp::EntrySpec> plan, Sizes s) {
  return (s.ep == 1 || mp::plan_rules::plan_uses_axis(plan, "ep")) &&
         (s.tp == 1 || mp::plan_rules::plan_uses_axis(plan, "tp"));
}

}  // namespace moe_cases
