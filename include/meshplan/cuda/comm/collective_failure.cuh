#pragma once
// How a device communicator fails without leaving its peers hanging: the pieces NcclComm
// uses, kept free of NCCL so that tests can drive them on the host with stand-ins for the
// NCCL and CUDA calls.
//
//   GroupGuard       ends an open NCCL group (ncclGroupEnd) when a call inside it throws;
//                    a group left open would swallow every later NCCL call of the thread
//   abort_on_failure runs a collective; on any exception aborts the communicators
//                    (ncclCommAbort: queued NCCL kernels exit, peers' connections close)
//                    and rethrows, so the failing rank ends instead of keeping a half-done
//                    collective that its peers wait on forever
//   await_completion waits for a collective by polling: completion (an event query), the
//                    communicator's asynchronous error (ncclCommGetAsyncError), and a
//                    timeout; an error or the timeout throws CommFailure
//
// The timeout is NcclOptions::timeout, by default collective_timeout(), which reads
// MESHPLAN_NCCL_TIMEOUT_S (seconds) and is otherwise default_collective_timeout.

#include "meshplan/core/detail/public_begin.hpp"

#include <chrono>
#include <concepts>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

namespace meshplan::cuda {

/// A collective that failed on this rank (an NCCL error, an asynchronous error, a timeout,
/// or a call on communicators already aborted).
class CommFailure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Ends a group that is open when the guard goes out of scope. `end()` returns the end
/// call's result; during unwinding that result is dropped, as the exception in flight is
/// the error to report.
template <class End>
class GroupGuard {
 public:
  explicit GroupGuard(End end) : end_(std::move(end)) {}
  ~GroupGuard() {
    if (open_) (void)end_();
  }
  GroupGuard(const GroupGuard&) = delete;
  GroupGuard& operator=(const GroupGuard&) = delete;

  /// Ends the group now, once.
  auto close() {
    open_ = false;
    return end_();
  }

 private:
  End end_;
  bool open_ = true;
};

/// The text of the exception being handled.
inline std::string current_exception_text() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

/// `work()`; when it throws, `abort(why)` (why: the exception's text; what abort throws is
/// dropped) and the exception again.
template <class Work, class Abort>
decltype(auto) abort_on_failure(Work&& work, Abort&& abort) {
  try {
    return std::forward<Work>(work)();
  } catch (...) {
    try {
      abort(std::string_view(current_exception_text()));
    } catch (...) {
    }
    throw;
  }
}

/// Ten minutes: long enough for a large exchange behind a slow peer's step (or a first
/// collective that sets up its connections), short enough that a job whose peer died
/// ends the same hour. The same default as PyTorch's NCCL process groups.
inline constexpr std::chrono::milliseconds default_collective_timeout{std::chrono::minutes(10)};

/// The timeout `text` (seconds, as MESHPLAN_NCCL_TIMEOUT_S holds it) gives; null or empty:
/// the default. Anything but a positive number is refused.
inline std::chrono::milliseconds collective_timeout_from(const char* text) {
  if (text == nullptr || *text == '\0') return default_collective_timeout;
  char* end = nullptr;
  const double seconds = std::strtod(text, &end);
  if (end == text || *end != '\0' || !(seconds > 0) || seconds > 1e9)
    throw std::invalid_argument(std::string("meshplan: MESHPLAN_NCCL_TIMEOUT_S is '") + text +
                                "'; it must be a positive number of seconds (unset: " +
                                std::to_string(default_collective_timeout.count() / 1000) + ")");
  const auto ms = static_cast<long long>(seconds * 1000.0);
  return std::chrono::milliseconds(ms < 1 ? 1 : ms);
}

/// The timeout of NcclOptions by default: MESHPLAN_NCCL_TIMEOUT_S, or the default.
inline std::chrono::milliseconds collective_timeout() {
  return collective_timeout_from(std::getenv("MESHPLAN_NCCL_TIMEOUT_S"));
}

/// "600 s" or "250 ms".
inline std::string duration_text(std::chrono::milliseconds d) {
  if (d.count() % 1000 == 0) return std::to_string(d.count() / 1000) + " s";
  return std::to_string(d.count()) + " ms";
}

/// What await_completion asks about the collective it waits for.
template <class P>
concept CompletionProbe = requires(P& p) {
  { p.done() } -> std::convertible_to<bool>;                // complete (a CUDA error throws)
  { p.async_error() } -> std::convertible_to<std::string>;  // the communicator's error, empty if none
  { p.now() } -> std::convertible_to<std::chrono::steady_clock::time_point>;
  p.pause();  // between two polls
};

/// Waits until `probe.done()`. Throws CommFailure, naming `rank` and `what` (the collective
/// and its label), on an asynchronous error of the communicator or when `timeout` passes
/// first. The error is checked before completion: a communicator in error is not trusted
/// even where its stream has drained.
template <CompletionProbe Probe>
void await_completion(Probe& probe, std::chrono::milliseconds timeout, long long rank, std::string_view what) {
  const auto start = probe.now();
  for (;;) {
    if (std::string error = probe.async_error(); !error.empty())
      throw CommFailure("meshplan: NCCL error on rank " + std::to_string(rank) + " in " + std::string(what) +
                        " (reported while waiting for it): " + error);
    if (probe.done()) return;
    if (probe.now() - start >= timeout)
      throw CommFailure("meshplan: rank " + std::to_string(rank) + " waited " + duration_text(timeout) + " for " +
                        std::string(what) +
                        " to complete: a peer has failed, stopped or not reached it (the timeout is "
                        "NcclOptions::timeout, by default MESHPLAN_NCCL_TIMEOUT_S seconds or " +
                        duration_text(default_collective_timeout) + ")");
    probe.pause();
  }
}

/// Pauses between polls: a short spin of yields for the usual fast collective, then sleeps
/// that leave the core to the other ranks' threads.
class PollPause {
 public:
  void operator()() {
    if (polls_++ < 64)
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::microseconds(100));
  }

 private:
  int polls_ = 0;
};

}  // namespace meshplan::cuda

#include "meshplan/core/detail/public_end.hpp"
