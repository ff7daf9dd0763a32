// P2PEngine with a stand-in for the device: QueuedMover behaves like a CUDA stream (nothing
// it is asked runs before finish()) and writes down every step. On groups of every shape,
// for every collective and element type, the engine over it gives ThreadComm's bits and
// CommStats, so the engine finishes a rank's work where CudaLocalComm's stream must be
// synchronized; and the steps are the copy plan DeviceMover gets, written out per collective.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "meshplan/comm/detail/host_mover.hpp"
#include "meshplan/comm/detail/p2p_engine.hpp"
#include "meshplan/comm/detail/rendezvous.hpp"
#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/mesh/mesh_spec.hpp"

namespace mp = meshplan;
using mp::index_t;

namespace {

/// A mover whose work waits for finish(), as a stream's does, and which logs each step:
/// "stage 12", "copy 3", "reduce 12 of 4", "finish". What it stages starts as 0xFF bytes, so a
/// peer reading it before it is finished reads something else than the values.
class QueuedMover {
 public:
  explicit QueuedMover(std::vector<std::string>* log) : log_(log) {}

  template <class T>
  const T* stage(std::span<const T> data) {
    staged_.assign(data.size_bytes(), 0xFF);
    unsigned char* to = staged_.data();
    later("stage " + std::to_string(data.size()), [=] {
      if (!data.empty()) std::memcpy(to, data.data(), data.size_bytes());
    });
    return reinterpret_cast<const T*>(to);
  }

  template <class T>
  void copy(T* to, const T* from, std::size_t elements) {
    later("copy " + std::to_string(elements), [=] {
      if (elements > 0) std::memcpy(to, from, elements * sizeof(T));
    });
  }

  template <class T, class Input>
  void reduce(std::span<T> out, index_t members, Input&& input, mp::ReduceOp op) {
    // The inputs are taken now, as DeviceMover's table of pointers is.
    std::vector<const T*> inputs;
    for (index_t m = 0; m < members; ++m) inputs.push_back(input(m));
    later("reduce " + std::to_string(out.size()) + " of " + std::to_string(members), [=] {
      mp::HostMover{}.reduce(
          out, members, [&](index_t m) { return inputs[static_cast<std::size_t>(m)]; }, op);
    });
  }

  void finish() {
    for (auto& work : queue_) work();
    queue_.clear();
    log_->push_back("finish");
  }

 private:
  void later(std::string step, std::function<void()> work) {
    log_->push_back(std::move(step));
    queue_.push_back(std::move(work));
  }

  std::vector<std::string>* log_;
  std::vector<std::function<void()>> queue_;
  std::vector<unsigned char> staged_;
};

using QueuedComm = mp::P2PEngine<QueuedMover>;

/// Values of many magnitudes (so that the order of a float sum shows), different per seed.
template <class T>
std::vector<T> values(std::size_t n, int seed) {
  std::vector<T> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    const int k = static_cast<int>(i);
    const int whole = (seed * 31 + k * 17) % 97 - 48;
    if constexpr (std::is_integral_v<T>)
      v[i] = static_cast<T>(whole);
    else
      v[i] = T(std::ldexp(static_cast<float>(whole), (seed * k) % 7 * 5 - 15));
  }
  return v;
}

std::string steps(std::initializer_list<std::string> s) {
  std::string out;
  for (const auto& x : s) out += (out.empty() ? "" : "; ") + x;
  return out;
}
std::string copies(const std::vector<index_t>& counts) {
  std::string out;
  for (index_t c : counts) out += (out.empty() ? "" : "; ") + ("copy " + std::to_string(c));
  return out;
}

/// What one rank saw of one collective: its result as bytes, the plan expected of it, and
/// the steps its mover took (where the mover says).
struct Seen {
  std::vector<unsigned char> bits;
  std::string plan, steps;
};

template <class T>
std::vector<unsigned char> bits(const std::vector<T>& v) {
  std::vector<unsigned char> b(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

/// Runs every collective on every group and records each result, the plan each should have
/// (the same for any mover: what ThreadComm's memcpy and CudaLocalComm's copies carry out),
/// and `steps_taken()`, what the mover did during the call.
template <class T, class Comm, class Steps>
std::map<std::string, Seen> exercise(Comm& comm, const mp::MeshSpec& mesh,
                                     const std::vector<std::vector<std::string_view>>& shapes, Steps&& steps_taken) {
  std::map<std::string, Seen> seen;
  const index_t me = comm.rank();
  for (const auto& axes : shapes) {
    const mp::Group g = mesh.group(me, axes);
    const index_t n = g.size();
    std::string shape;
    for (auto a : axes) shape += std::string(a) + " ";
    const auto data = values<T>(12, static_cast<int>(me + 1));
    auto record = [&](const std::string& what, const std::vector<T>& result, std::string plan) {
      seen[shape + what] = {bits(result), std::move(plan), steps_taken()};
    };
    for (mp::ReduceOp op : {mp::ReduceOp::sum, mp::ReduceOp::max, mp::ReduceOp::min, mp::ReduceOp::avg}) {
      std::vector<T> d = data;
      comm.all_reduce(std::span<T>(d), g, op, "all_reduce");
      record("all_reduce " + std::to_string(static_cast<int>(op)), d,
             steps({"stage 12", "finish", "reduce 12 of " + std::to_string(n), "finish"}));
    }
    {
      std::vector<T> send(data.begin(), data.begin() + 3), recv(static_cast<std::size_t>(3 * n));
      comm.all_gather(std::span<const T>(send), std::span<T>(recv), g, "all_gather");
      record("all_gather", recv,
             steps({"finish", copies(std::vector<index_t>(static_cast<std::size_t>(n), 3)), "finish"}));
    }
    {
      std::vector<index_t> counts;
      for (index_t m : g.members) counts.push_back(m % 4);
      std::vector<T> send(data.begin(), data.begin() + me % 4), recv;
      for (index_t c : counts) recv.resize(recv.size() + static_cast<std::size_t>(c));
      comm.all_gather_v(std::span<const T>(send), std::span<T>(recv), counts, g, "all_gather_v");
      record("all_gather_v", recv, steps({"finish", copies(counts), "finish"}));
    }
    {
      std::vector<T> recv(12 / static_cast<std::size_t>(n));
      comm.reduce_scatter(std::span<const T>(data), std::span<T>(recv), g, mp::ReduceOp::sum, "reduce_scatter");
      record("reduce_scatter", recv,
             steps({"finish", "reduce " + std::to_string(12 / n) + " of " + std::to_string(n), "finish"}));
    }
    {
      std::vector<T> recv(12);
      comm.all_to_all(std::span<const T>(data), std::span<T>(recv), g, "all_to_all");
      record("all_to_all", recv,
             steps({"finish", copies(std::vector<index_t>(static_cast<std::size_t>(n), 12 / n)), "finish"}));
    }
    {
      // Member s sends (s + d) % 3 elements to the member at position d: some parts empty.
      std::vector<index_t> send_counts, recv_counts;
      index_t sent = 0, received = 0;
      for (index_t d = 0; d < n; ++d) sent += send_counts.emplace_back((me + d) % 3);
      for (index_t s : g.members) received += recv_counts.emplace_back((s + g.rank) % 3);
      std::vector<T> send(data.begin(), data.begin() + sent), recv(static_cast<std::size_t>(received));
      comm.all_to_all_v(std::span<const T>(send), send_counts, std::span<T>(recv), recv_counts, g, "all_to_all_v");
      record("all_to_all_v", recv, steps({"finish", copies(recv_counts), "finish"}));
    }
    for (index_t root : {index_t{0}, n - 1}) {
      std::vector<T> d = data;
      comm.broadcast(std::span<T>(d), root, g, "broadcast");
      record("broadcast from " + std::to_string(root), d,
             g.rank == root ? steps({"finish", "finish"}) : steps({"finish", "copy 12", "finish"}));
    }
    comm.barrier(g);
    record("barrier", {}, "finish");
  }
  return seen;
}

/// The steps the mover logged since the last call, joined as the plans above are.
std::string take(std::vector<std::string>& log) {
  std::string out;
  for (const auto& s : log) out += (out.empty() ? "" : "; ") + s;
  log.clear();
  return out;
}

}  // namespace

TEMPLATE_TEST_CASE("P2PEngine over a stream-like mover gives ThreadComm's bits, stats and plan", "[comm][engine]",
                   float, mp::bfloat16, std::int32_t, index_t) {
  using T = TestType;
  const auto mesh = mp::MeshSpec::parse("a=2,b=3,c=1");
  // One member, one axis, two axes in mesh order and the other way round, the whole world.
  const std::vector<std::vector<std::string_view>> shapes = {{"c"}, {"a"}, {"b"}, {"b", "a"}, {"a", "b", "c"}};
  const auto ranks = static_cast<std::size_t>(mesh.size());

  std::vector<std::map<std::string, Seen>> host(ranks), queued(ranks);
  std::vector<mp::CommStats> host_stats(ranks), queued_stats(ranks);
  mp::ThreadWorld threads(mesh.size());
  threads.run([&](mp::ThreadComm& comm) {
    const auto r = static_cast<std::size_t>(comm.rank());
    host[r] = exercise<T>(comm, mesh, shapes, [] { return std::string(); });
    host_stats[r] = comm.stats();
  });

  std::vector<std::vector<std::string>> logs(ranks);  // each rank's mover's steps
  mp::Rendezvous world(mesh.size());
  world.run([&](index_t r) { return QueuedComm(world, r, QueuedMover(&logs[static_cast<std::size_t>(r)])); },
            [&](QueuedComm& comm) {
              const auto r = static_cast<std::size_t>(comm.rank());
              queued[r] = exercise<T>(comm, mesh, shapes, [&] { return take(logs[r]); });
              queued_stats[r] = comm.stats();
            });

  for (std::size_t r = 0; r < ranks; ++r) {
    REQUIRE(queued[r].size() == host[r].size());
    for (const auto& [what, expected] : host[r]) {
      INFO("rank " << r << ": " << what);
      const Seen& q = queued[r].at(what);
      CHECK(q.bits == expected.bits);
      CHECK(q.steps == q.plan);
    }
    for (const auto& [label, entry] : host_stats[r].by_label) {
      INFO("rank " << r << ": " << label);
      CHECK(queued_stats[r].by_label.at(label).calls == entry.calls);
      CHECK(queued_stats[r].by_label.at(label).bytes == entry.bytes);
    }
    CHECK(queued_stats[r].by_label.size() == host_stats[r].by_label.size());
  }
}
