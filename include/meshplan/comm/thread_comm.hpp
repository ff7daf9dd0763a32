#pragma once
// ThreadComm: N ranks as threads of one process, for tests and for the demo on a machine
// without GPUs.
//
//   mp::ThreadWorld world(8);
//   world.run([&](mp::ThreadComm& comm) {          // on 8 threads; comm.rank() is 0..7
//     auto ep = mesh.group<"ep">(comm.rank());
//     comm.all_to_all_v(send, send_counts, recv, recv_counts, ep, "dispatch");
//   });                                            // rethrows the first exception of any rank
//
// The collectives are P2PEngine's over host memory (p2p_engine.hpp, host_mover.hpp): each
// member publishes its buffers, waits for the group, reads its peers' buffers directly, and
// waits again before anyone may reuse them (rendezvous.hpp: a failing rank releases the
// others).

#include "meshplan/core/detail/public_begin.hpp"

#include "meshplan/comm/detail/host_mover.hpp"
#include "meshplan/comm/detail/p2p_engine.hpp"
#include "meshplan/comm/detail/rendezvous.hpp"
#include "meshplan/core/size.hpp"

namespace meshplan {

class ThreadComm;

/// N ranks as threads, meeting through a Rendezvous.
class ThreadWorld : public Rendezvous {
 public:
  explicit ThreadWorld(index_t size) : Rendezvous(size) {}

  /// Runs fn(ThreadComm&) once per rank, each on its own thread (see Rendezvous::run).
  template <class F>
  void run(F&& fn);
};

class ThreadComm : public P2PEngine<HostMover> {
 public:
  /// Any Rendezvous will do: CudaLocalComm lends its world to a ThreadComm for host-side
  /// exchanges among the same ranks.
  ThreadComm(Rendezvous& world, index_t rank) : P2PEngine<HostMover>(world, rank) {}
};

template <class F>
void ThreadWorld::run(F&& fn) {
  Rendezvous::run([this](index_t r) { return ThreadComm(*this, r); }, [&](ThreadComm& comm) { fn(comm); });
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
