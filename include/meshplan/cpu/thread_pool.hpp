#pragma once
// A small fixed pool of threads for the CPU kernels' independent work items (output tiles).
//
// parallel_for(n, f) calls f(i) once for every i in [0, n). Items are handed out by an
// atomic counter, so which thread runs which item varies from run to run: callers make
// items independent (each writes its own outputs), and the results then do not depend on
// the schedule. The calling thread works too, so a pool of size T starts T - 1 threads and
// a pool of size 1 starts none and runs everything inline. Idle workers sleep on a
// condition variable; nothing spins.
//
// The first exception an item throws stops the handing out of further items; parallel_for
// waits until every thread has left the job and rethrows it. A parallel_for issued from
// inside an item of the same pool runs inline (the pool's threads are all busy with the
// outer job), and calls from different threads take turns.

#include "meshplan/core/detail/public_begin.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"

namespace meshplan::cpu {

class ThreadPool {
 public:
  explicit ThreadPool(int threads) : size_(threads) {
    enforce(threads >= 1
                ? Message{}
                : Message::rule("thread_pool_size") << "a thread pool needs at least 1 thread, not " << threads);
    workers_.reserve(static_cast<std::size_t>(threads - 1));
    try {
      for (int w = 1; w < threads; ++w) workers_.emplace_back([this] { work(); });
    } catch (...) {
      shut_down();
      throw;
    }
  }

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  ~ThreadPool() { shut_down(); }

  /// The threads that run items, the caller included.
  int size() const noexcept { return size_; }

  /// f(i) for every i in [0, n), spread over the pool; rethrows the first exception an item threw.
  template <class F>
  void parallel_for(index_t n, F&& f) {
    if (n <= 0) return;
    using Fn = std::remove_reference_t<F>;
    Job job;
    job.context = const_cast<void*>(static_cast<const void*>(std::addressof(f)));
    job.call = [](void* context, index_t i) { (*static_cast<Fn*>(context))(i); };
    job.count = n;
    if (workers_.empty() || n == 1 || inside_ == this) {
      run_inline(job);
      return;
    }
    std::lock_guard turn(submit_mutex_);
    {
      std::lock_guard lock(mutex_);
      job_ = job;
      next_.store(0, std::memory_order_relaxed);
      stop_items_.store(false, std::memory_order_relaxed);
      error_ = nullptr;
      busy_ = static_cast<int>(workers_.size());
      ++generation_;
    }
    wake_.notify_all();
    run_items(job);
    std::exception_ptr error;
    {
      std::unique_lock lock(mutex_);
      done_.wait(lock, [this] { return busy_ == 0; });
      error = std::exchange(error_, nullptr);
    }
    if (error) std::rethrow_exception(error);
  }

 private:
  struct Job {
    void* context = nullptr;
    void (*call)(void*, index_t) = nullptr;
    index_t count = 0;
  };

  // The caller runs every item itself, stopping at the first exception (which propagates).
  void run_inline(const Job& job) {
    const ThreadPool* outer = std::exchange(inside_, this);
    try {
      for (index_t i = 0; i < job.count; ++i) job.call(job.context, i);
    } catch (...) {
      inside_ = outer;
      throw;
    }
    inside_ = outer;
  }

  // Takes items until none is left or one has thrown; keeps the first exception.
  void run_items(const Job& job) {
    const ThreadPool* outer = std::exchange(inside_, this);
    while (!stop_items_.load(std::memory_order_relaxed)) {
      index_t i = next_.fetch_add(1, std::memory_order_relaxed);
      if (i >= job.count) break;
      try {
        job.call(job.context, i);
      } catch (...) {
        std::lock_guard lock(mutex_);
        if (!error_) error_ = std::current_exception();
        stop_items_.store(true, std::memory_order_relaxed);
      }
    }
    inside_ = outer;
  }

  void work() {
    std::uint64_t seen = 0;
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return quit_ || generation_ != seen; });
      if (quit_) return;
      seen = generation_;
      Job job = job_;
      lock.unlock();
      run_items(job);
      lock.lock();
      if (--busy_ == 0) done_.notify_all();
    }
  }

  void shut_down() noexcept {
    {
      std::lock_guard lock(mutex_);
      quit_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : workers_)
      if (t.joinable()) t.join();
    workers_.clear();
  }

  int size_;
  std::vector<std::thread> workers_;
  std::mutex submit_mutex_;  // one job at a time
  std::mutex mutex_;         // guards everything below but the atomics
  std::condition_variable wake_;
  std::condition_variable done_;
  Job job_;
  std::uint64_t generation_ = 0;
  int busy_ = 0;  // workers still inside the current job
  bool quit_ = false;
  std::exception_ptr error_;
  std::atomic<index_t> next_{0};
  std::atomic<bool> stop_items_{false};
  static inline thread_local const ThreadPool* inside_ = nullptr;
};

/// Threads for one simulated rank's kernels: the hardware threads shared among the ranks
/// this process simulates, at least 1.
inline int default_threads(index_t simulated_ranks) noexcept {
  index_t hardware = static_cast<index_t>(std::thread::hardware_concurrency());
  index_t ranks = std::max<index_t>(simulated_ranks, 1);
  return static_cast<int>(std::max<index_t>(hardware / ranks, 1));
}

}  // namespace meshplan::cpu

#include "meshplan/core/detail/public_end.hpp"
