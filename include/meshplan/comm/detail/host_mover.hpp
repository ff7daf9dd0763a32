#pragma once
// HostMover: how P2PEngine moves data between ranks that are threads of one process, for
// ThreadComm. Copies are memcpy, reductions the fixed-order one of ordered_reduce.hpp, and
// everything is done when the call returns, so there is nothing to finish.
//
// A mover is what P2PEngine asks of a backend (DeviceMover in cuda/comm/ is the other):
//   stage(data)            a private copy of `data` that peers may read while it is rewritten
//   copy(to, from, n)      n elements from a peer's buffer into this rank's
//   reduce(out, members, input, op)
//                          out[i] = op over members m in order of input(m)[i]
//   finish()               everything asked so far is done (a device stream: synchronized)

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cstddef>
#include <cstring>
#include <span>
#include <vector>

#include "meshplan/comm/detail/ordered_reduce.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/placement/placement.hpp"

namespace meshplan {

class HostMover {
 public:
  template <class T>
  const T* stage(std::span<const T> data) {
    staged_.resize(data.size_bytes());
    if (!data.empty()) std::memcpy(staged_.data(), data.data(), data.size_bytes());
    return reinterpret_cast<const T*>(staged_.data());
  }

  template <class T>
  void copy(T* to, const T* from, std::size_t elements) {
    if (elements > 0) std::memcpy(to, from, elements * sizeof(T));
  }

  /// `input(m)`: where member m's out.size() elements start.
  template <class T, class Input>
  void reduce(std::span<T> out, index_t members, Input&& input, ReduceOp op) {
    detail::ordered_reduce<T>(
        out, members, [&](index_t m) { return std::span<const T>(input(m), out.size()); }, op);
  }

  void finish() noexcept {}

 private:
  // Reused from call to call; operator new aligns it for every communicator element type.
  std::vector<unsigned char> staged_;
};

}  // namespace meshplan
