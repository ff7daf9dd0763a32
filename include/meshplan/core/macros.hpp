#pragma once
// Portability macros shared by the host-only and the CUDA layers.

/// Functions that device code may call too (plain integer arithmetic only).
#if defined(__CUDACC__)
#define MESHPLAN_HOST_DEVICE __host__ __device__
#else
#define MESHPLAN_HOST_DEVICE
#endif
