#pragma once
// Portability macros shared by the host-only and the CUDA layers.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

/// Functions that device code may call too (plain integer arithmetic only).
#if defined(__CUDACC__)
#define MESHPLAN_HOST_DEVICE __host__ __device__
#else
#define MESHPLAN_HOST_DEVICE
#endif

/// Loop unrolling for the host kernels: register-tiled loops keep their accumulators in
/// registers only when fully unrolled. nvcc's front end rejects GCC's pragma (warning
/// 1675, an error under -Werror), and host code compiled through nvcc is not where speed
/// is measured, so there the hint is dropped.
#define MESHPLAN_PRAGMA(text) _Pragma(#text)
#if defined(__CUDACC__)
#define MESHPLAN_UNROLL(n)
#else
#define MESHPLAN_UNROLL(n) MESHPLAN_PRAGMA(GCC unroll n)
#endif
