#pragma once
// What both fused expert paths (mma.sync, wgmma) do with a pair of adjacent outputs of a
// row: the SwiGLU activation and the stores. Written once, so the two paths round alike.

#include <cuda_bf16.h>

#include "meshplan/cuda/core/device_types.cuh"

namespace meshplan::cuda::kernels {

/// silu(gate) * up in fp32, each operation rounded as written (no contraction), the CPU
/// reference's order.
__device__ inline float swiglu(float gate, float up) {
  return __fmul_rn(__fdiv_rn(gate, __fadd_rn(1.0f, expf(-gate))), up);
}

/// Stores act[row, col] and act[row, col + 1] (bf16, `inter` columns) from gate and up
/// pairs; columns past `inter` are left out. One 4-byte store where the pair is aligned.
__device__ inline void store_swiglu_pair(__nv_bfloat16* act, long long row, int col, int inter, const float (&gate)[2],
                                         const float (&up)[2]) {
  const __nv_bfloat16 v0 = __float2bfloat16_rn(swiglu(gate[0], up[0]));
  const __nv_bfloat16 v1 = __float2bfloat16_rn(swiglu(gate[1], up[1]));
  __nv_bfloat16* dst = act + row * inter + col;
  if (col + 1 < inter && inter % 2 == 0) {
    *reinterpret_cast<__nv_bfloat162*>(dst) = __halves2bfloat162(v0, v1);
  } else {
    if (col < inter) dst[0] = v0;
    if (col + 1 < inter) dst[1] = v1;
  }
}

/// Stores y[row, col] and y[row, col + 1] (Out: float or bf16, `hidden` columns); columns
/// past `hidden` are left out.
template <class Out>
__device__ inline void store_pair(Out* y, long long row, int col, int hidden, float v0, float v1) {
  Out* dst = y + row * hidden + col;
  if (col < hidden) dst[0] = from_float<Out>(v0);
  if (col + 1 < hidden) dst[1] = from_float<Out>(v1);
}

}  // namespace meshplan::cuda::kernels
