#pragma once
// Rendezvous: ranks as threads of one process meeting in collectives, the machinery under
// ThreadComm and the CUDA layer's CudaLocalComm.
//
// A collective publishes each member's buffers in its slot, waits for the group, lets
// every member read its peers' slots, and waits again before anyone may reuse them. When a
// rank throws, the rendezvous is aborted: every rank waiting in a collective throws
// CommAborted, so a failure never leaves the others hanging, and run() rethrows the cause.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/mesh/group.hpp"

namespace meshplan {

/// Thrown in ranks that wait for a collective after another rank failed.
class CommAborted : public std::runtime_error {
 public:
  CommAborted() : std::runtime_error("meshplan: the collective was abandoned because another rank failed") {}
};

class Rendezvous {
 public:
  /// What a member offers to a collective.
  struct Slot {
    const void* send = nullptr;
    std::size_t send_elements = 0;
    std::size_t element_bytes = 0;
    const index_t* counts = nullptr;  // all_to_all_v send counts
  };

  explicit Rendezvous(index_t size) : size_(size), slots_(static_cast<std::size_t>(size)) {
    enforce(size >= 1 ? Message{} : Message::rule("world_size_positive") << "a world needs at least 1 rank");
  }

  index_t size() const noexcept { return size_; }
  Slot& slot(index_t rank) noexcept { return slots_[static_cast<std::size_t>(rank)]; }
  const Slot& slot(index_t rank) const noexcept { return slots_[static_cast<std::size_t>(rank)]; }

  /// Waits until every member of `g` arrives; throws CommAborted if the rendezvous is aborted.
  void wait(const Group& g) {
    Barrier& b = barrier_for(g.members);
    std::unique_lock lock(b.m);
    if (aborted_) throw CommAborted();
    const auto generation = b.generation;
    if (++b.arrived == g.size()) {
      b.arrived = 0;
      ++b.generation;
      b.cv.notify_all();
      return;
    }
    b.cv.wait(lock, [&] { return b.generation != generation || aborted_; });
    if (b.generation == generation) throw CommAborted();
  }

  /// Runs fn(make(rank)) once per rank, each on its own thread, and waits for all. If any
  /// rank throws, the others are released from their collectives, and the cause (the lowest
  /// rank's own error, not one reporting another rank's failure) is rethrown here.
  template <class Make, class F>
  void run(Make&& make, F&& fn);

 private:
  struct Barrier {
    std::mutex m;
    std::condition_variable cv;
    index_t arrived = 0;
    std::uint64_t generation = 0;
  };

  Barrier& barrier_for(const std::vector<index_t>& members) {
    std::lock_guard lock(barriers_mutex_);
    auto& b = barriers_[members];
    if (!b) b = std::make_unique<Barrier>();
    return *b;
  }

  void abort() {
    std::lock_guard lock(barriers_mutex_);
    aborted_ = true;
    for (auto& [members, b] : barriers_) {
      std::lock_guard inner(b->m);
      b->cv.notify_all();
    }
  }

  index_t size_;
  std::vector<Slot> slots_;
  std::mutex barriers_mutex_;
  std::map<std::vector<index_t>, std::unique_ptr<Barrier>> barriers_;
  std::atomic<bool> aborted_{false};
};

template <class Make, class F>
void Rendezvous::run(Make&& make, F&& fn) {
  aborted_ = false;
  barriers_.clear();  // an aborted run may have left some half-arrived
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(size_));
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(size_));
  for (index_t r = 0; r < size_; ++r) {
    try {
      threads.emplace_back([&, r] {
        try {
          auto comm = make(r);
          fn(comm);
        } catch (...) {
          errors[static_cast<std::size_t>(r)] = std::current_exception();
          abort();
        }
      });
    } catch (const std::exception& e) {
      // The machine gave out before every rank started (threads, memory): release the ranks
      // already waiting for the missing ones, and say so instead of terminating.
      abort();
      for (auto& t : threads) t.join();
      throw RuleViolation(Message::rule("simulated_ranks_fit")
                          << "could start only " << r << " of " << size_ << " simulated ranks (" << e.what()
                          << "); use a smaller mesh, or real processes under mpirun");
    }
  }
  for (auto& t : threads) t.join();
  // Rethrow the cause: the lowest rank's error that is not merely another rank's failure
  // reaching it (CommAborted, or a peer's refusal reported through agreement).
  std::exception_ptr consequence;
  for (const auto& e : errors) {
    if (!e) continue;
    try {
      std::rethrow_exception(e);
    } catch (const CommAborted&) {
      if (!consequence) consequence = e;
    } catch (const RuleViolation& v) {
      if (v.rule() != "peer_input_error" && v.rule() != "collective_peer_error") std::rethrow_exception(e);
      if (!consequence) consequence = e;
    } catch (...) {
      std::rethrow_exception(e);
    }
  }
  if (consequence) std::rethrow_exception(consequence);
}

}  // namespace meshplan
