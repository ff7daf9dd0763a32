// The host side of the device communicators' failure handling and of DeviceBuffer's
// ownership, without a GPU (names "host: ..."): the NCCL and CUDA calls are stand-ins that
// record what they were asked, so the tests see a group ended after a throw inside it, the
// communicators aborted on an error or a timeout with the message a user reads, and every
// allocation freed once, on the stream it belongs to.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "meshplan/cuda/comm/collective_failure.cuh"
#include "meshplan/cuda/core/buffer.cuh"

namespace mp = meshplan;
using namespace std::chrono_literals;

namespace {

/// ncclGroupStart / ncclGroupEnd / ncclCommAbort, counted.
struct FakeNccl {
  int starts = 0, ends = 0, aborts = 0;
  std::string abort_reason;
  int start() { return ++starts, 0; }
  int end() { return ++ends, 0; }
  void abort(std::string_view why) {
    ++aborts;
    abort_reason = std::string(why);
  }
};

/// A grouped collective as NcclComm writes it, whose `calls`-th call in the group throws
/// (0: none does).
void grouped_collective(FakeNccl& nccl, int calls, int throwing) {
  mp::cuda::abort_on_failure(
      [&] {
        nccl.start();
        mp::cuda::GroupGuard group([&] { return nccl.end(); });
        for (int i = 1; i <= calls; ++i)
          if (i == throwing)
            throw std::runtime_error("meshplan: NCCL error on rank 1 in all_to_all_v: invalid argument");
        CHECK(group.close() == 0);
      },
      [&](std::string_view why) { nccl.abort(why); });
}

/// A collective's completion as the stand-in sees it: done after `done_after` polls, an
/// asynchronous error from poll `error_at` on, a clock advanced `step` by every pause.
struct FakeProbe {
  int done_after = std::numeric_limits<int>::max();
  int error_at = std::numeric_limits<int>::max();
  std::chrono::milliseconds step = 10ms;
  bool throw_cuda_at_first_poll = false;
  int polls = 0;
  std::chrono::steady_clock::time_point clock{};

  bool done() {
    if (throw_cuda_at_first_poll) throw std::runtime_error("CUDA error cudaErrorLaunchFailure in cudaEventQuery");
    return ++polls >= done_after;
  }
  std::string async_error() const {
    return polls + 1 >= error_at ? "remote process exited or there was a network error" : "";
  }
  std::chrono::steady_clock::time_point now() const { return clock; }
  void pause() { clock += step; }
};

/// A wait as NcclComm's: await_completion inside abort_on_failure.
void wait(FakeProbe& probe, FakeNccl& nccl, std::chrono::milliseconds timeout) {
  mp::cuda::abort_on_failure([&] { mp::cuda::await_completion(probe, timeout, 2, "all_reduce 'grads'"); },
                             [&](std::string_view why) { nccl.abort(why); });
}

}  // namespace

TEST_CASE("host: a throw inside an NCCL group ends the group once and aborts", "[host]") {
  FakeNccl nccl;
  CHECK_THROWS_WITH(grouped_collective(nccl, 4, 3), Catch::Contains("in all_to_all_v: invalid argument"));
  CHECK(nccl.starts == 1);
  CHECK(nccl.ends == 1);
  CHECK(nccl.aborts == 1);
  CHECK(nccl.abort_reason == "meshplan: NCCL error on rank 1 in all_to_all_v: invalid argument");

  FakeNccl fine;
  grouped_collective(fine, 4, 0);
  CHECK(fine.ends == 1);  // closed once, not again by the guard
  CHECK(fine.aborts == 0);
}

TEST_CASE("host: an asynchronous NCCL error while waiting aborts and names the rank and the collective", "[host]") {
  FakeNccl nccl;
  FakeProbe probe;
  probe.error_at = 4;
  CHECK_THROWS_AS(wait(probe, nccl, 10s), mp::cuda::CommFailure);
  CHECK(nccl.aborts == 1);
  CHECK(nccl.abort_reason ==
        "meshplan: NCCL error on rank 2 in all_reduce 'grads' (reported while waiting for it): remote process exited "
        "or there was a network error");
  CHECK(probe.polls == 3);  // the error is seen at the poll it appears, not later
}

TEST_CASE("host: a collective that does not complete in time aborts with the timeout and how to set it", "[host]") {
  FakeNccl nccl;
  FakeProbe probe;
  probe.step = 10ms;
  CHECK_THROWS_WITH(wait(probe, nccl, 250ms),
                    "meshplan: rank 2 waited 250 ms for all_reduce 'grads' to complete: a peer has failed, stopped or "
                    "not reached it (the timeout is NcclOptions::timeout, by default MESHPLAN_NCCL_TIMEOUT_S seconds "
                    "or 600 s)");
  CHECK(nccl.aborts == 1);
  CHECK(probe.polls == 26);  // polled until 250 ms had passed, not before
}

TEST_CASE("host: a collective that completes is waited for, nothing aborted", "[host]") {
  FakeNccl nccl;
  FakeProbe probe;
  probe.done_after = 5;
  wait(probe, nccl, 1s);
  CHECK(probe.polls == 5);
  CHECK(nccl.aborts == 0);

  FakeProbe failing;
  failing.throw_cuda_at_first_poll = true;
  CHECK_THROWS_WITH(wait(failing, nccl, 1s), Catch::Contains("cudaErrorLaunchFailure"));
  CHECK(nccl.aborts == 1);  // a CUDA error while waiting aborts too
}

TEST_CASE("host: the collective timeout comes from MESHPLAN_NCCL_TIMEOUT_S or is ten minutes", "[host]") {
  CHECK(mp::cuda::collective_timeout_from(nullptr) == 600s);
  CHECK(mp::cuda::collective_timeout_from("") == 600s);
  CHECK(mp::cuda::collective_timeout_from("30") == 30s);
  CHECK(mp::cuda::collective_timeout_from("2.5") == 2500ms);
  for (const char* bad : {"0", "-3", "ten", "5s", "nan"})
    CHECK_THROWS_WITH(mp::cuda::collective_timeout_from(bad),
                      "meshplan: MESHPLAN_NCCL_TIMEOUT_S is '" + std::string(bad) +
                          "'; it must be a positive number of seconds (unset: 600)");
  CHECK(mp::cuda::duration_text(600s) == "600 s");
  CHECK(mp::cuda::duration_text(1500ms) == "1500 ms");
}

namespace {

/// DeviceBuffer's CUDA calls, recorded; memory from the host heap.
struct Ledger {
  struct Call {
    std::string what;
    std::uintptr_t stream;
    std::size_t bytes;
  };
  static inline std::vector<Call> calls;
  static inline std::vector<void*> live;
};
struct FakeMemory {
  static void* allocate(std::size_t bytes, cudaStream_t stream) {
    void* p = ::operator new(bytes);
    Ledger::calls.push_back({"allocate", reinterpret_cast<std::uintptr_t>(stream), bytes});
    Ledger::live.push_back(p);
    return p;
  }
  static void release(void* p, cudaStream_t stream) noexcept {
    Ledger::calls.push_back({"release", reinterpret_cast<std::uintptr_t>(stream), 0});
    std::erase(Ledger::live, p);
    ::operator delete(p);
  }
  static void hand_over(cudaStream_t from, cudaStream_t to) {
    Ledger::calls.push_back({"hand_over", reinterpret_cast<std::uintptr_t>(from),
                             static_cast<std::size_t>(reinterpret_cast<std::uintptr_t>(to))});
  }
};
template <class T>
using Buffer = mp::cuda::BasicDeviceBuffer<T, FakeMemory>;

cudaStream_t stream(std::uintptr_t id) { return reinterpret_cast<cudaStream_t>(id); }

std::vector<std::string> call_list() {
  std::vector<std::string> out;
  for (const auto& c : Ledger::calls) {
    std::string line = c.what;
    line += ' ';
    line += std::to_string(c.stream);
    if (c.what != "release") {
      line += ' ';
      line += std::to_string(c.bytes);
    }
    out.push_back(line);
  }
  return out;
}

}  // namespace

static_assert(std::is_same_v<mp::cuda::DeviceBuffer<float>, mp::cuda::BasicDeviceBuffer<float, mp::cuda::CudaMemory>>);

TEST_CASE("host: a stream-owned buffer allocates, regrows and frees on its stream", "[host]") {
  Ledger::calls.clear();
  {
    Buffer<float> b(4, stream(7));
    CHECK(b.stream() == stream(7));
    CHECK(b.size() == 4);
    CHECK(b.bytes() == 16);
    b.resize(2);  // shrinking keeps the memory
    CHECK(b.size() == 2);
    CHECK(b.capacity() == 4);
    b.resize(8);  // growing frees the old memory in the stream's order, then allocates
  }
  CHECK(call_list() == std::vector<std::string>{"allocate 7 16", "release 7", "allocate 7 32", "release 7"});
  CHECK(Ledger::live.empty());
}

TEST_CASE("host: a buffer without a stream keeps cudaMalloc and cudaFree", "[host]") {
  Ledger::calls.clear();
  { Buffer<double> b(3); }
  { Buffer<double> b(3, nullptr); }
  CHECK(call_list() == std::vector<std::string>{"allocate 0 24", "release 0", "allocate 0 24", "release 0"});
  mp::cuda::DeviceBuffer<float> none(0);  // the real one: nothing asked of CUDA for no elements
  CHECK(none.data() == nullptr);
  CHECK(none.span().empty());
}

TEST_CASE("host: moving a buffer moves its memory and its stream, and frees each allocation once", "[host]") {
  Ledger::calls.clear();
  {
    Buffer<int> a(5, stream(3));
    const int* memory = a.data();
    Buffer<int> b(std::move(a));
    CHECK(b.data() == memory);
    CHECK(b.size() == 5);
    CHECK(b.stream() == stream(3));
    CHECK(a.data() == nullptr);
    CHECK(a.size() == 0);
    CHECK(a.capacity() == 0);

    Buffer<int> c(2, stream(9));
    c = std::move(b);  // c's own memory goes, on its own stream
    CHECK(c.data() == memory);
    CHECK(c.stream() == stream(3));
    CHECK(b.data() == nullptr);
  }
  CHECK(call_list() == std::vector<std::string>{"allocate 3 20", "allocate 9 8", "release 9", "release 3"});
  CHECK(Ledger::live.empty());
}

TEST_CASE("host: handing a buffer to another stream orders it and moves its free there", "[host]") {
  Ledger::calls.clear();
  {
    Buffer<float> b(4, stream(1));
    b.use_on(stream(1));  // already its owner: nothing to do
    b.use_on(stream(2));
    CHECK(b.stream() == stream(2));
    b.resize(16);
    CHECK_THROWS_WITH(b.use_on(nullptr),
                      Catch::Contains("[buffer_stream]") && Catch::Contains("cannot be the legacy default stream"));
  }
  CHECK(call_list() ==
        std::vector<std::string>{"allocate 1 16", "hand_over 1 2", "release 2", "allocate 2 64", "release 2"});

  Ledger::calls.clear();
  {
    Buffer<float> legacy(4);
    legacy.use_on(stream(5));  // nothing queued on an owner to order after; cudaMalloc's memory keeps cudaFree
    legacy.resize(8);
  }
  CHECK(call_list() == std::vector<std::string>{"allocate 0 16", "release 0", "allocate 5 32", "release 5"});
  CHECK(Ledger::live.empty());
}

TEST_CASE("host: a buffer refuses a byte count that overflows, and a foreign stream, before any CUDA call", "[host]") {
  Ledger::calls.clear();
  Buffer<float> b;
  const std::size_t too_many = std::numeric_limits<std::size_t>::max() / 4 + 1;
  CHECK_THROWS_WITH(b.resize(too_many), "meshplan [device_size_range]: a device buffer of " + std::to_string(too_many) +
                                            " elements of 4 bytes overflows the byte count");
  CHECK(mp::cuda::buffer_bytes_fit(too_many - 1, 4).ok());
  CHECK(mp::cuda::buffer_bytes_fit(std::numeric_limits<std::size_t>::max(), 1).ok());
  CHECK(b.data() == nullptr);

  Buffer<float> owned(2, stream(4));
  const std::vector<float> host = {1, 2};
  CHECK_THROWS_WITH(owned.upload(std::span<const float>(host), stream(6)),
                    Catch::Contains("[buffer_stream]: upload on a stream other than the device buffer's own"));
  CHECK_THROWS_WITH(owned.download(stream(6)), Catch::Contains("download on a stream other"));
  CHECK(call_list() == std::vector<std::string>{"allocate 4 8"});
}
