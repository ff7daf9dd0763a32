#pragma once
// DeviceCommunicator: a Communicator whose collectives take device memory and run on the
// rank's stream (CudaLocalComm, NcclComm), with host() giving the same ranks for small
// exchanges of host memory (counts, agreement on errors).

#include "meshplan/core/detail/public_begin.hpp"

#include <cuda_runtime_api.h>

#include <concepts>
#include <type_traits>

#include "meshplan/comm/communicator.hpp"

namespace meshplan::cuda {

template <class C>
concept DeviceCommunicator = Communicator<C> && requires(C& c) {
  { c.stream() } -> std::convertible_to<cudaStream_t>;
  requires Communicator<std::remove_cvref_t<decltype(c.host())>>;
};

}  // namespace meshplan::cuda

#include "meshplan/core/detail/public_end.hpp"
