// The fast CPU kernels against the defined order, bit for bit: gemm and gemm_batch on odd
// shapes, float and bf16, through row indices or read transposed, on 1 to 3 threads and
// every instruction-set path this machine runs; repacking into a kept allocation; exp_fixed
// against std::exp; silu_mul and the SwiGLU's backward identical on every path;
// the thread pool; the choice of path (MESHPLAN_CPU_ISA).
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

#include "meshplan/cpu/detail/fast_math.hpp"
#include "meshplan/cpu/detail/gemm.hpp"
#include "meshplan/cpu/isa.hpp"
#include "meshplan/cpu/detail/packed_matrix.hpp"
#include "meshplan/cpu/thread_pool.hpp"

namespace mp = meshplan;
namespace cpu = meshplan::cpu;
using mp::bfloat16;
using mp::index_t;

namespace {

// Unoptimized builds (the debug preset, under AddressSanitizer) look for memory errors, not
// numerics: they skip the largest shapes and sweep exp more sparsely, to finish in seconds.
#if defined(__OPTIMIZE__)
constexpr bool full_size = true;
#else
constexpr bool full_size = false;
#endif

// Sets an environment variable for one scope and restores what was there.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_, old_->c_str(), 1);
    else
      ::unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

std::string rule_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const mp::RuleViolation& e) {
    return e.rule();
  }
  return "(nothing thrown)";
}

template <class T>
std::vector<T> random_values(std::size_t count, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<T> v(count);
  for (std::size_t i = 0; i < count; ++i) {
    float x = uniform(rng);
    if (i % 97 == 3) x = 0.0f;   // exact zeros and signed zeros: the sign of a zero sum
    if (i % 89 == 5) x = -0.0f;  // must follow the chain too
    if (i % 101 == 7) x *= 1e4f;
    v[i] = mp::from_float<T>(x);
  }
  return v;
}

// The defined order, literally.
template <class X, class W>
std::vector<float> reference(const cpu::RowSource<X>& a, index_t m, const std::vector<W>& b, index_t n, index_t k) {
  std::vector<float> c(static_cast<std::size_t>(m * n));
  for (index_t i = 0; i < m; ++i) {
    const X* row = a.row(i);
    for (index_t j = 0; j < n; ++j) {
      float acc = 0.0f;
      for (index_t kk = 0; kk < k; ++kk) acc = std::fmaf(mp::to_float(row[kk]), mp::to_float(b[j * k + kk]), acc);
      c[i * n + j] = acc;
    }
  }
  return c;
}

// Whether c [m, ldc] holds exactly `expected` [m, n] and its padding columns still hold `pad`.
bool same_bits(const std::vector<float>& c, index_t ldc, const std::vector<float>& expected, index_t m, index_t n,
               float pad) {
  for (index_t i = 0; i < m; ++i) {
    if (n > 0 && std::memcmp(&c[i * ldc], &expected[i * n], static_cast<std::size_t>(n) * sizeof(float)) != 0)
      return false;
    for (index_t j = n; j < ldc; ++j)
      if (std::bit_cast<std::uint32_t>(c[i * ldc + j]) != std::bit_cast<std::uint32_t>(pad)) return false;
  }
  return true;
}

std::vector<cpu::ThreadPool*> pools() {
  static cpu::ThreadPool one(1), two(2), three(3);
  return {&one, &two, &three};
}

// gemm of a [m, k] (rows at stride k + 3) with b [n, k] on every path and pool, against the
// defined order. With `all_pools` false, the pool cycles with `variant` (for large shapes).
template <class X, class W>
void check_gemm_shape(index_t m, index_t n, index_t k, std::uint32_t seed, bool all_pools, int variant) {
  const index_t lda = k + 3, ldc = n + 2;
  std::vector<X> a = random_values<X>(static_cast<std::size_t>(std::max<index_t>(m, 1) * lda), seed);
  std::vector<W> b = random_values<W>(static_cast<std::size_t>(n * k), seed + 1);
  cpu::RowSource<X> rows{a.data(), lda};
  std::vector<float> expected = reference(rows, m, b, n, k);
  cpu::PackedMatrix<float> packed = cpu::PackedMatrix<float>::pack(b.data(), n, k);
  REQUIRE(packed.rows() == n);
  REQUIRE(packed.cols() == k);
  const float pad = -7.25f;
  std::vector<cpu::ThreadPool*> all = pools();
  for (cpu::Isa isa : cpu::runnable_isas()) {
    for (std::size_t p = 0; p < all.size(); ++p) {
      if (!all_pools && p != static_cast<std::size_t>(variant) % all.size()) continue;
      std::vector<float> c(static_cast<std::size_t>(std::max<index_t>(m, 1) * ldc), pad);
      cpu::gemm(cpu::GemmTask<X>{rows, m, &packed, c.data(), ldc}, *all[p], isa);
      INFO("isa " << cpu::to_string(isa) << ", threads " << all[p]->size() << ", m " << m << ", n " << n << ", k "
                  << k);
      CHECK(same_bits(c, ldc, expected, m, n, pad));
    }
  }
}

template <class X, class W>
void check_gemm_shapes() {
  std::uint32_t seed = 10;
  int variant = 0;
  for (index_t m : {0, 1, 2, 7, 33, 257})
    for (index_t n : {1, 3, 17, 33, 100, 1030}) check_gemm_shape<X, W>(m, n, 5, ++seed, true, variant++);
  for (index_t m : {0, 1, 2, 7, 33, 257})
    for (index_t k : {1, 64, 513, 1031}) check_gemm_shape<X, W>(m, 33, k, ++seed, m * k < 20000, variant++);
  for (index_t n : {1, 3, 17, 100, 1030})
    for (index_t k : {1, 64, 513, 1031}) check_gemm_shape<X, W>(7, n, k, ++seed, n * k < 20000, variant++);
  if (!full_size) return;
  check_gemm_shape<X, W>(257, 100, 513, ++seed, false, variant++);
  check_gemm_shape<X, W>(33, 1030, 1031, ++seed, false, variant++);
  check_gemm_shape<X, W>(257, 1030, 64, ++seed, false, variant++);
}

}  // namespace

// ---- Choosing the path ---------------------------------------------------------------------

TEST_CASE("cpu kernels: the instruction-set paths, their detection and MESHPLAN_CPU_ISA", "[cpu][gemm]") {
  CHECK(cpu::to_string(cpu::Isa::portable) == "portable");
  CHECK(cpu::to_string(cpu::Isa::avx2) == "avx2");
  CHECK(cpu::to_string(cpu::Isa::avx512) == "avx512");

  std::vector<cpu::Isa> runnable = cpu::runnable_isas();
  REQUIRE(!runnable.empty());
  CHECK(runnable.front() == cpu::Isa::portable);
  CHECK(runnable.back() == cpu::best_isa());
  for (cpu::Isa isa : runnable) CHECK(cpu::parse_isa(cpu::to_string(isa)) == isa);
#if !defined(__x86_64__)
  CHECK(runnable.size() == 1);
#endif

  SECTION("forcing a runnable path") {
    for (cpu::Isa isa : runnable) {
      ScopedEnv env("MESHPLAN_CPU_ISA", std::string(cpu::to_string(isa)).c_str());
      CHECK(cpu::isa_from_environment() == isa);
    }
    ScopedEnv unset("MESHPLAN_CPU_ISA", nullptr);
    CHECK(cpu::isa_from_environment() == cpu::best_isa());
    ScopedEnv empty("MESHPLAN_CPU_ISA", "");
    CHECK(cpu::isa_from_environment() == cpu::best_isa());
  }
  SECTION("an unknown name throws cpu_isa") {
    ScopedEnv env("MESHPLAN_CPU_ISA", "avx1024");
    CHECK(rule_of([] { cpu::isa_from_environment(); }) == "cpu_isa");
    CHECK_THROWS_WITH(cpu::isa_from_environment(), Catch::Contains("'avx1024' is not a path"));
    CHECK(rule_of([] { cpu::parse_isa("AVX2"); }) == "cpu_isa");
  }
  SECTION("a path this CPU cannot run throws cpu_isa") {
    for (cpu::Isa isa : {cpu::Isa::avx2, cpu::Isa::avx512}) {
      if (cpu::isa_runnable(isa)) continue;
      ScopedEnv env("MESHPLAN_CPU_ISA", std::string(cpu::to_string(isa)).c_str());
      CHECK(rule_of([] { cpu::isa_from_environment(); }) == "cpu_isa");
      cpu::ThreadPool pool(1);
      cpu::PackedMatrix<float> b = cpu::PackedMatrix<float>::pack(std::vector<float>(4, 1.0f).data(), 2, 2);
      std::vector<float> a(4, 1.0f), c(4);
      CHECK(rule_of([&] {
              cpu::gemm(cpu::GemmTask<float>{{a.data(), 2}, 2, &b, c.data(), 2}, pool, isa);
            }) == "cpu_isa");
    }
  }
  SECTION("the active path is one this CPU runs, and the default of the kernels") {
    if (const char* forced = std::getenv("MESHPLAN_CPU_ISA"); forced != nullptr && *forced != '\0')
      CHECK(cpu::to_string(cpu::active_isa()) == forced);
    else
      CHECK(cpu::active_isa() == cpu::best_isa());
    CHECK(cpu::isa_runnable(cpu::active_isa()));
  }
}

// ---- Thread pool -----------------------------------------------------------------------------

TEST_CASE("cpu kernels: the thread pool visits every index exactly once", "[cpu][gemm]") {
  for (int threads : {1, 2, 3, 5}) {
    cpu::ThreadPool pool(threads);
    CHECK(pool.size() == threads);
    for (index_t n : {0, 1, 2, 7, 1000, 20000}) {
      std::vector<std::atomic<int>> visits(static_cast<std::size_t>(n));
      for (int round = 0; round < 3; ++round)
        pool.parallel_for(n, [&](index_t i) { ++visits[static_cast<std::size_t>(i)]; });
      bool all_three = true;
      for (auto& v : visits) all_three = all_three && v.load() == 3;
      INFO("threads " << threads << ", n " << n);
      CHECK(all_three);
    }
  }
  SECTION("one thread runs inline") {
    cpu::ThreadPool pool(1);
    const std::thread::id caller = std::this_thread::get_id();
    bool all_inline = true;
    pool.parallel_for(100, [&](index_t) { all_inline = all_inline && std::this_thread::get_id() == caller; });
    CHECK(all_inline);
  }
  SECTION("a parallel_for inside an item runs inline instead of waiting for itself") {
    cpu::ThreadPool pool(3);
    std::vector<std::atomic<int>> visits(64);
    pool.parallel_for(8, [&](index_t outer) {
      pool.parallel_for(8, [&](index_t inner) { ++visits[static_cast<std::size_t>(outer * 8 + inner)]; });
    });
    bool once = true;
    for (auto& v : visits) once = once && v.load() == 1;
    CHECK(once);
  }
  SECTION("several threads share the work") {
    cpu::ThreadPool pool(2);
    std::mutex mutex;
    std::vector<std::thread::id> seen;
    std::atomic<int> arrived{0};
    // Each of the two items waits (bounded) for the other to start: two threads run them.
    pool.parallel_for(2, [&](index_t) {
      ++arrived;
      for (int spin = 0; spin < 2000 && arrived.load() < 2; ++spin)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      std::lock_guard lock(mutex);
      seen.push_back(std::this_thread::get_id());
    });
    REQUIRE(seen.size() == 2);
    CHECK(seen[0] != seen[1]);
  }
  CHECK(rule_of([] { cpu::ThreadPool pool(0); }) == "thread_pool_size");
}

TEST_CASE("cpu kernels: the thread pool rethrows the first exception after all work stopped", "[cpu][gemm]") {
  for (int threads : {1, 2, 3}) {
    cpu::ThreadPool pool(threads);
    std::atomic<int> running{0}, started{0};
    auto job = [&](index_t i) {
      ++running;
      ++started;
      if (i == 5) {
        --running;
        throw std::runtime_error("item 5 failed");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      --running;
    };
    INFO("threads " << threads);
    CHECK_THROWS_WITH(pool.parallel_for(200, job), "item 5 failed");
    // Every item had finished before the exception reached the caller, and later items were not started.
    CHECK(running.load() == 0);
    CHECK(started.load() < 200);
    int after = started.load();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    CHECK(started.load() == after);
    // The pool still works.
    std::atomic<int> count{0};
    pool.parallel_for(50, [&](index_t) { ++count; });
    CHECK(count.load() == 50);
  }
}

TEST_CASE("cpu kernels: default_threads shares the hardware threads among the simulated ranks", "[cpu][gemm]") {
  const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  CHECK(cpu::default_threads(1) == hardware);
  CHECK(cpu::default_threads(0) == hardware);
  CHECK(cpu::default_threads(2) == std::max(1, hardware / 2));
  CHECK(cpu::default_threads(100000) == 1);
}

// ---- Packing --------------------------------------------------------------------------------

TEST_CASE("cpu kernels: a packed matrix holds panels [K][32], zero-padded, bf16 widened exactly", "[cpu][gemm]") {
  const index_t n = 37, k = 5;
  std::vector<bfloat16> b = random_values<bfloat16>(static_cast<std::size_t>(n * k), 3);
  cpu::ThreadPool pool(2);
  for (cpu::ThreadPool* use : {static_cast<cpu::ThreadPool*>(nullptr), &pool}) {
    cpu::PackedMatrix<float> packed = cpu::PackedMatrix<float>::pack(b.data(), n, k, use);
    CHECK(packed.rows() == n);
    CHECK(packed.cols() == k);
    REQUIRE(packed.panels() == 2);
    CHECK(packed.bytes() == 2 * 32 * k * sizeof(float));
    CHECK(reinterpret_cast<std::uintptr_t>(packed.panel(0)) % 64 == 0);
    bool layout = true;
    for (index_t p = 0; p < 2; ++p)
      for (index_t kk = 0; kk < k; ++kk)
        for (index_t j = 0; j < 32; ++j) {
          index_t o = p * 32 + j;
          float want = o < n ? mp::to_float(b[o * k + kk]) : 0.0f;
          layout = layout &&
                   std::bit_cast<std::uint32_t>(packed.panel(p)[kk * 32 + j]) == std::bit_cast<std::uint32_t>(want);
        }
    CHECK(layout);
  }
  cpu::PackedMatrix<float> empty = cpu::PackedMatrix<float>::pack(static_cast<const float*>(nullptr), 0, 9);
  CHECK(empty.rows() == 0);
  CHECK(empty.panels() == 0);
  CHECK(rule_of([] { cpu::PackedMatrix<float>::pack(static_cast<const float*>(nullptr), 3, 3); }) == "gemm_shape");
}

// ---- gemm -------------------------------------------------------------------------------------

TEST_CASE("cpu kernels: gemm gives the defined order's bits, float rows and float weights", "[cpu][gemm]") {
  check_gemm_shapes<float, float>();
}

TEST_CASE("cpu kernels: gemm gives the defined order's bits, bf16 rows and bf16 weights", "[cpu][gemm]") {
  check_gemm_shapes<bfloat16, bfloat16>();
}

TEST_CASE("cpu kernels: gemm gives the defined order's bits, mixed float and bf16", "[cpu][gemm]") {
  std::uint32_t seed = 500;
  int variant = 0;
  for (index_t m : {1, 7, 33})
    for (index_t n : {3, 33, 100}) {
      check_gemm_shape<float, bfloat16>(m, n, 513, ++seed, false, variant++);
      check_gemm_shape<bfloat16, float>(m, n, 64, ++seed, false, variant++);
    }
}

TEST_CASE("cpu kernels: a large gemm gives the defined order's bits on every path", "[cpu][gemm]") {
  if (full_size)
    check_gemm_shape<float, float>(257, 1030, 1031, 900, false, 2);
  else
    check_gemm_shape<float, float>(40, 1030, 600, 900, false, 2);
}

TEST_CASE("cpu kernels: gemm reads rows through an index of (token, slot) pairs", "[cpu][gemm]") {
  const index_t tokens = 50, k = 131, n = 45, lda = k;
  for (index_t div : {1, 4}) {
    std::vector<float> a_float = random_values<float>(static_cast<std::size_t>(tokens * lda), 77);
    std::vector<bfloat16> a_bf16 = random_values<bfloat16>(static_cast<std::size_t>(tokens * lda), 78);
    std::vector<float> b = random_values<float>(static_cast<std::size_t>(n * k), 79);
    cpu::PackedMatrix<float> packed = cpu::PackedMatrix<float>::pack(b.data(), n, k);
    // A permutation of every pair, then some pairs again: with div 4 each token repeats, and
    // the repeated pairs repeat rows with div 1 too.
    std::vector<std::int32_t> index(static_cast<std::size_t>(tokens * div));
    for (std::size_t i = 0; i < index.size(); ++i) index[i] = static_cast<std::int32_t>(i);
    std::shuffle(index.begin(), index.end(), std::mt19937(static_cast<std::uint32_t>(div)));
    for (std::int32_t extra : {3, 3, 0, static_cast<std::int32_t>(tokens * div - 1)}) index.push_back(extra);
    const index_t m = static_cast<index_t>(index.size());
    auto run = [&](const auto& a) {
      using X = typename std::remove_cvref_t<decltype(a)>::value_type;
      cpu::RowSource<X> rows{a.data(), lda, index.data(), div};
      std::vector<float> expected = reference(rows, m, b, n, k);
      // The index really gathers: row i is token index[i] / div.
      std::vector<float> direct = reference(cpu::RowSource<X>{a.data() + (index[7] / div) * lda, lda}, 1, b, n, k);
      REQUIRE(std::memcmp(direct.data(), &expected[7 * n], static_cast<std::size_t>(n) * sizeof(float)) == 0);
      for (cpu::Isa isa : cpu::runnable_isas())
        for (cpu::ThreadPool* pool : pools()) {
          std::vector<float> c(static_cast<std::size_t>(m * n), -1.0f);
          cpu::gemm(cpu::GemmTask<X>{rows, m, &packed, c.data(), n}, *pool, isa);
          INFO("div " << div << ", isa " << cpu::to_string(isa) << ", threads " << pool->size());
          CHECK(same_bits(c, n, expected, m, n, 0.0f));
        }
    };
    run(a_float);
    run(a_bf16);
  }
}

TEST_CASE("cpu kernels: gemm reads A transposed in place, and continues chains with accumulate", "[cpu][gemm]") {
  // A [m, k] is the transpose of g [k, ldg] (columns [0, m) of it), as the weight gradients
  // read their output gradients: the same bits as from an explicit transposed copy.
  for (auto [m, k, n] : {std::tuple<index_t, index_t, index_t>{1, 1, 1}, {13, 5, 33}, {40, 300, 70}, {130, 17, 3}}) {
    const index_t ldg = m + 5;
    std::vector<float> g = random_values<float>(static_cast<std::size_t>(k * ldg), 41);
    std::vector<float> b = random_values<float>(static_cast<std::size_t>(n * k), 42);
    std::vector<float> start = random_values<float>(static_cast<std::size_t>(m * n), 43);
    std::vector<float> a(static_cast<std::size_t>(m * k));
    for (index_t i = 0; i < m; ++i)
      for (index_t kk = 0; kk < k; ++kk) a[i * k + kk] = g[kk * ldg + i];
    const cpu::PackedMatrix<float> packed = cpu::PackedMatrix<float>::pack(b.data(), n, k);
    const std::vector<float> expected = reference(cpu::RowSource<float>{a.data(), k}, m, b, n, k);
    // With accumulate, each chain starts from what c holds: the defined order from `start`.
    std::vector<float> continued(start);
    for (index_t i = 0; i < m; ++i)
      for (index_t j = 0; j < n; ++j)
        for (index_t kk = 0; kk < k; ++kk)
          continued[i * n + j] = std::fmaf(a[i * k + kk], b[j * k + kk], continued[i * n + j]);
    for (cpu::Isa isa : cpu::runnable_isas())
      for (cpu::ThreadPool* pool : pools()) {
        INFO("m " << m << ", k " << k << ", n " << n << ", isa " << cpu::to_string(isa) << ", threads "
                  << pool->size());
        const auto source = cpu::RowSource<float>::transposed(g.data(), ldg);
        std::vector<float> c(static_cast<std::size_t>(m * n), -1.0f);
        cpu::gemm(cpu::GemmTask<float>{source, m, &packed, c.data(), n}, *pool, isa);
        CHECK(same_bits(c, n, expected, m, n, 0.0f));
        std::vector<float> acc(start);
        cpu::gemm(cpu::GemmTask<float>{source, m, &packed, acc.data(), n, true}, *pool, isa);
        CHECK(same_bits(acc, n, continued, m, n, 0.0f));
      }
  }
  // A transposed source whose rows would overlap is refused.
  cpu::ThreadPool pool(1);
  std::vector<float> g(64), c(64);
  const cpu::PackedMatrix<float> packed = cpu::PackedMatrix<float>::pack(g.data(), 2, 4);
  CHECK_THROWS_WITH(cpu::gemm(cpu::GemmTask<float>{cpu::RowSource<float>::transposed(g.data(), 3), 8, &packed,
                                                   c.data(), 2},
                              pool),
                    Catch::Contains("[gemm_shape]") && Catch::Contains("element step 3"));
}

TEST_CASE("cpu kernels: a repacked matrix equals a fresh packing, reusing its memory", "[cpu][gemm]") {
  // Rows gathered through a pointer per row, bf16 widened; smaller then larger than before,
  // and from a moved-from matrix.
  std::vector<bfloat16> src = random_values<bfloat16>(40 * 70, 44);
  auto row = [&](index_t i) { return src.data() + (39 - i) * 70; };  // rows in reverse
  auto same = [](const cpu::PackedMatrix<float>& x, const cpu::PackedMatrix<float>& y) {
    return x.rows() == y.rows() && x.cols() == y.cols() && x.bytes() == y.bytes() &&
           std::memcmp(x.panel(0), y.panel(0), x.bytes()) == 0;
  };
  cpu::PackedMatrix<float> m;
  cpu::ThreadPool pool(2);
  for (auto [k, n] : {std::pair<index_t, index_t>{40, 70}, {3, 33}, {40, 64}, {17, 70}}) {
    INFO("k " << k << ", n " << n);
    std::vector<bfloat16> rows;
    for (index_t i = 0; i < k; ++i) rows.insert(rows.end(), row(i), row(i) + n);
    const auto fresh = cpu::PackedMatrix<float>::pack_transposed(rows.data(), k, n, n);
    m.assign_transposed(row, k, n, k % 2 ? &pool : nullptr);
    CHECK(same(m, fresh));
  }
  const cpu::PackedMatrix<float> taken = std::move(m);
  m.assign_transposed(row, 5, 40);  // NOLINT(bugprone-use-after-move): a moved-from matrix repacks
  std::vector<bfloat16> rows;
  for (index_t i = 0; i < 5; ++i) rows.insert(rows.end(), row(i), row(i) + 40);
  CHECK(same(m, cpu::PackedMatrix<float>::pack_transposed(rows.data(), 5, 40, 40)));
  CHECK(taken.rows() == 70);
}

TEST_CASE("cpu kernels: gemm with the default path equals the explicit active path", "[cpu][gemm]") {
  const index_t m = 19, n = 40, k = 70;
  std::vector<float> a = random_values<float>(static_cast<std::size_t>(m * k), 5);
  std::vector<float> b = random_values<float>(static_cast<std::size_t>(n * k), 6);
  cpu::PackedMatrix<float> packed = cpu::PackedMatrix<float>::pack(b.data(), n, k);
  cpu::ThreadPool pool(2);
  std::vector<float> c(static_cast<std::size_t>(m * n)),
      expected = reference(cpu::RowSource<float>{a.data(), k}, m, b, n, k);
  cpu::gemm(cpu::GemmTask<float>{{a.data(), k}, m, &packed, c.data(), n}, pool);
  CHECK(same_bits(c, n, expected, m, n, 0.0f));
}

TEST_CASE("cpu kernels: gemm with K = 0 writes zeros, and refuses bad shapes", "[cpu][gemm]") {
  cpu::ThreadPool pool(2);
  cpu::PackedMatrix<float> packed = cpu::PackedMatrix<float>::pack(static_cast<const float*>(nullptr), 5, 0);
  std::vector<float> a(1), c(3 * 6, 9.0f);
  for (cpu::Isa isa : cpu::runnable_isas()) {
    std::fill(c.begin(), c.end(), 9.0f);
    cpu::gemm(cpu::GemmTask<float>{{a.data(), 0}, 3, &packed, c.data(), 6}, pool, isa);
    CHECK(same_bits(c, 6, std::vector<float>(15, 0.0f), 3, 5, 9.0f));
  }
  std::vector<float> b(12, 1.0f);
  cpu::PackedMatrix<float> b34 = cpu::PackedMatrix<float>::pack(b.data(), 3, 4);
  CHECK(rule_of([&] {
          cpu::gemm(cpu::GemmTask<float>{{a.data(), 4}, 2, nullptr, c.data(), 3}, pool);
        }) == "gemm_shape");
  CHECK(rule_of([&] { cpu::gemm(cpu::GemmTask<float>{{a.data(), 4}, 2, &b34, c.data(), 2}, pool); }) == "gemm_shape");
  CHECK(rule_of([&] { cpu::gemm(cpu::GemmTask<float>{{a.data(), 3}, 2, &b34, c.data(), 3}, pool); }) == "gemm_shape");
  CHECK(rule_of([&] { cpu::gemm(cpu::GemmTask<float>{{nullptr, 4}, 2, &b34, c.data(), 3}, pool); }) == "gemm_shape");
  CHECK(rule_of([&] { cpu::gemm(cpu::GemmTask<float>{{a.data(), 4}, -1, &b34, c.data(), 3}, pool); }) == "gemm_shape");
}

// ---- gemm_batch -------------------------------------------------------------------------------

TEST_CASE("cpu kernels: gemm_batch runs every expert's product with the defined order's bits", "[cpu][gemm]") {
  // An MoE layer: experts with 0, 1, 2, 7, 33, 257 ... rows, each reading its rows through a
  // shared permutation of (token, slot) pairs, each with its own weight, one output buffer.
  const index_t tokens = 200, slots = 4, k = 133, n = 70;
  const std::vector<index_t> counts = {0, 1, 2, 7, 33, 257, 0, 5, 100, 1, 0, 390};
  index_t pairs = 0;
  for (index_t m : counts) pairs += m;
  REQUIRE(pairs <= tokens * slots);
  std::vector<std::int32_t> index(static_cast<std::size_t>(tokens * slots));
  for (std::size_t i = 0; i < index.size(); ++i) index[i] = static_cast<std::int32_t>(i);
  std::shuffle(index.begin(), index.end(), std::mt19937(11));

  auto run = [&](auto element) {
    using X = decltype(element);
    std::vector<X> a = random_values<X>(static_cast<std::size_t>(tokens * k), 21);
    std::vector<std::vector<bfloat16>> weights;
    std::vector<cpu::PackedMatrix<float>> packed;
    for (std::size_t e = 0; e < counts.size(); ++e) {
      // Experts differ in N too (the batch need not share a shape).
      index_t ne = n + static_cast<index_t>(e % 3);
      weights.push_back(random_values<bfloat16>(static_cast<std::size_t>(ne * k), 30 + static_cast<std::uint32_t>(e)));
      packed.push_back(cpu::PackedMatrix<float>::pack(weights.back().data(), ne, k));
    }
    const index_t ldc = n + 2;
    std::vector<float> expected(static_cast<std::size_t>(pairs * ldc), -3.0f);
    std::vector<cpu::GemmTask<X>> tasks;
    index_t offset = 0;
    for (std::size_t e = 0; e < counts.size(); ++e) {
      cpu::RowSource<X> rows{a.data(), k, index.data() + offset, slots};
      std::vector<float> r = reference(rows, counts[e], weights[e], packed[e].rows(), k);
      for (index_t i = 0; i < counts[e]; ++i)
        std::memcpy(&expected[(offset + i) * ldc], &r[i * packed[e].rows()],
                    static_cast<std::size_t>(packed[e].rows()) * sizeof(float));
      tasks.push_back({rows, counts[e], &packed[e], nullptr, ldc});
      offset += counts[e];
    }
    for (cpu::Isa isa : cpu::runnable_isas())
      for (cpu::ThreadPool* pool : pools()) {
        std::vector<float> c(expected.size(), -3.0f);
        offset = 0;
        for (std::size_t e = 0; e < tasks.size(); ++e) {
          tasks[e].c = c.data() + offset * ldc;
          offset += counts[e];
        }
        cpu::gemm_batch(std::span<const cpu::GemmTask<X>>(tasks), *pool, isa);
        INFO("isa " << cpu::to_string(isa) << ", threads " << pool->size());
        CHECK(std::memcmp(c.data(), expected.data(), c.size() * sizeof(float)) == 0);
      }
  };
  run(float{});
  run(bfloat16{});
}

TEST_CASE("cpu kernels: gemm_batch of nothing, or of empty experts, does nothing", "[cpu][gemm]") {
  cpu::ThreadPool pool(3);
  cpu::gemm_batch(std::span<const cpu::GemmTask<float>>(), pool);
  std::vector<float> b(6, 1.0f);
  cpu::PackedMatrix<float> packed = cpu::PackedMatrix<float>::pack(b.data(), 2, 3);
  std::vector<cpu::GemmTask<float>> none(4, cpu::GemmTask<float>{{nullptr, 0}, 0, &packed, nullptr, 0});
  for (cpu::Isa isa : cpu::runnable_isas())
    CHECK_NOTHROW(cpu::gemm_batch(std::span<const cpu::GemmTask<float>>(none), pool, isa));
}

// ---- exp, SiLU --------------------------------------------------------------------------------

namespace {
// Distance in representable floats (both finite or both the same infinity).
std::int64_t ulp_distance(float x, float y) {
  auto ordered = [](float f) {
    std::int32_t i = std::bit_cast<std::int32_t>(f);
    return i < 0 ? -static_cast<std::int64_t>(i & 0x7fffffff) : static_cast<std::int64_t>(i);
  };
  return std::llabs(ordered(x) - ordered(y));
}

std::vector<float> special_inputs() {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  return {0.0f,
          -0.0f,
          inf,
          -inf,
          nan,
          -nan,
          1.0f,
          -1.0f,
          88.72283f,
          88.72284f,
          89.0f,
          -87.33f,
          -87.34f,
          -100.0f,
          -103.9f,
          -103.98f,
          -104.0f,
          -104.01f,
          -150.0f,
          1e-30f,
          -1e-30f,
          1e-45f,
          1e30f,
          -1e30f,
          0.5f,
          0.34657359f,
          -0.34657359f,
          20.0f,
          -20.0f,
          std::numeric_limits<float>::denorm_min(),
          std::bit_cast<float>(0x7fa00000u) /* signalling NaN */,
          std::numeric_limits<float>::max(),
          std::numeric_limits<float>::lowest()};
}
}  // namespace

TEST_CASE("cpu kernels: exp_fixed is within 2 ulp of std::exp over the float range", "[cpu][gemm]") {
  // A dense sweep: every 61st float of [-104.5, 89], both signs (some 1.4e7 values; every
  // 977th in unoptimized builds). An exhaustive run over all 2^32 floats found at most 1 ulp.
  const std::uint32_t stride = full_size ? 61 : 977;
  std::int64_t worst = 0;
  float worst_at = 0.0f;
  std::size_t checked = 0;
  for (std::uint32_t sign : {0u, 0x80000000u}) {
    const float limit = sign ? 104.5f : 89.0f;
    for (std::uint32_t bits = 0; bits <= std::bit_cast<std::uint32_t>(limit); bits += stride) {
      float x = std::bit_cast<float>(bits | sign);
      std::int64_t d = ulp_distance(cpu::exp_fixed(x), std::exp(x));
      if (d > worst) {
        worst = d;
        worst_at = x;
      }
      ++checked;
    }
  }
  INFO("worst " << worst << " ulp at " << worst_at << " over " << checked << " inputs");
  CHECK(worst <= 2);
  CHECK(checked > (full_size ? 10000000u : 800000u));

  const float inf = std::numeric_limits<float>::infinity();
  CHECK(cpu::exp_fixed(0.0f) == 1.0f);
  CHECK(cpu::exp_fixed(-0.0f) == 1.0f);
  CHECK(cpu::exp_fixed(inf) == inf);
  CHECK(cpu::exp_fixed(89.0f) == inf);
  CHECK(cpu::exp_fixed(88.72284f) == inf);
  CHECK(std::isfinite(cpu::exp_fixed(88.72283f)));
  CHECK(std::bit_cast<std::uint32_t>(cpu::exp_fixed(-inf)) == 0u);
  CHECK(std::bit_cast<std::uint32_t>(cpu::exp_fixed(-200.0f)) == 0u);
  CHECK(std::isnan(cpu::exp_fixed(std::numeric_limits<float>::quiet_NaN())));
  CHECK(std::isnan(cpu::exp_fixed(std::bit_cast<float>(0x7fa00000u))));
  for (float x : special_inputs()) {
    if (std::isnan(x)) continue;
    INFO("x = " << x);
    CHECK(ulp_distance(cpu::exp_fixed(x), std::exp(x)) <= 2);
  }
  // Subnormal results round once: e^-100 = 3.72e-44 is 26.6 times the smallest subnormal.
  CHECK(ulp_distance(cpu::exp_fixed(-100.0f), std::exp(-100.0f)) <= 1);
  CHECK(cpu::exp_fixed(-100.0f) > 0.0f);
}

TEST_CASE("cpu kernels: exp_fixed on arrays gives the scalar bits on every path", "[cpu][gemm]") {
  std::vector<float> x = special_inputs();
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> wide(-110.0f, 95.0f);
  std::uniform_int_distribution<std::uint32_t> any_bits;
  for (int i = 0; i < 20000; ++i) x.push_back(wide(rng));
  for (int i = 0; i < 20000; ++i) x.push_back(std::bit_cast<float>(any_bits(rng)));
  x.push_back(1.0f);  // an odd count: the vector paths' tails
  std::vector<float> scalar(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) scalar[i] = cpu::exp_fixed(x[i]);
  for (cpu::Isa isa : cpu::runnable_isas())
    for (std::size_t count : {x.size(), std::size_t{1}, std::size_t{7}, std::size_t{17}}) {
      std::vector<float> y(count, -1.0f);
      cpu::exp_fixed(x.data(), static_cast<index_t>(count), y.data(), isa);
      INFO("isa " << cpu::to_string(isa) << ", count " << count);
      CHECK(std::memcmp(y.data(), scalar.data(), count * sizeof(float)) == 0);
    }
}

TEST_CASE("cpu kernels: silu_fixed on special values", "[cpu][gemm]") {
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(std::bit_cast<std::uint32_t>(cpu::silu_fixed(0.0f)) == 0u);
  CHECK(std::bit_cast<std::uint32_t>(cpu::silu_fixed(-0.0f)) == 0x80000000u);
  CHECK(cpu::silu_fixed(inf) == inf);
  CHECK(std::isnan(cpu::silu_fixed(-inf)));  // -inf * sigmoid(-inf) = -inf * 0, as torch gives
  CHECK(std::isnan(cpu::silu_fixed(std::numeric_limits<float>::quiet_NaN())));
  CHECK(std::bit_cast<std::uint32_t>(cpu::silu_fixed(-200.0f)) == 0x80000000u);  // -200 / inf
  CHECK(cpu::silu_fixed(200.0f) == 200.0f);
  for (float g : {-5.0f, -1.0f, -0.25f, 0.3f, 1.0f, 4.0f, 30.0f}) {
    INFO("g = " << g);
    CHECK(cpu::silu_fixed(g) == Approx(g / (1.0f + std::exp(-g))).epsilon(1e-6));
  }
}

namespace {
template <class T>
void check_silu_mul_paths() {
  std::vector<float> values = special_inputs();
  for (float big : {60.0f, -60.0f, 87.5f, -87.5f, 88.8f, -88.8f, 104.0f, -104.0f, 1e6f, -1e6f}) values.push_back(big);
  std::mt19937 rng(8);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (index_t inter : {1, 7, 8, 16, 17, 33, 100}) {
    const index_t rows = 5, ld = 2 * inter + 3, ld_act = inter + 1;
    std::vector<float> gate_up(static_cast<std::size_t>(rows * ld));
    for (std::size_t i = 0; i < gate_up.size(); ++i)
      gate_up[i] = i % 5 == 0 ? values[(i / 5) % values.size()] : normal(rng);
    const T fill = mp::from_float<T>(-9.0f);
    std::vector<T> expected(static_cast<std::size_t>(rows * ld_act), fill);
    for (index_t r = 0; r < rows; ++r)
      for (index_t i = 0; i < inter; ++i)
        expected[r * ld_act + i] =
            mp::from_float<T>(cpu::silu_fixed(gate_up[r * ld + i]) * gate_up[r * ld + inter + i]);
    for (cpu::Isa isa : cpu::runnable_isas()) {
      std::vector<T> act(expected.size(), fill);
      cpu::silu_mul(gate_up.data(), rows, inter, ld, act.data(), ld_act, isa);
      INFO("isa " << cpu::to_string(isa) << ", inter " << inter);
      CHECK(std::memcmp(act.data(), expected.data(), act.size() * sizeof(T)) == 0);
    }
  }
}
}  // namespace

TEST_CASE("cpu kernels: the SwiGLU's backward gives the scalar expressions' bits on every path", "[cpu][gemm]") {
  std::vector<float> values = special_inputs();
  for (float big : {60.0f, -60.0f, 87.5f, -87.5f, 88.8f, -88.8f, 104.0f, -104.0f, 1e6f, -1e6f}) values.push_back(big);
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (index_t inter : {1, 7, 8, 16, 17, 33, 100}) {
    const index_t rows = 5;
    std::vector<float> gate_up(static_cast<std::size_t>(rows * 2 * inter)), da(static_cast<std::size_t>(rows * inter));
    for (std::size_t i = 0; i < gate_up.size(); ++i)
      gate_up[i] = i % 5 == 0 ? values[(i / 5) % values.size()] : normal(rng);
    for (float& d : da) d = normal(rng);
    std::vector<float> expected(gate_up.size());
    for (index_t r = 0; r < rows; ++r)
      for (index_t i = 0; i < inter; ++i) {
        const float g = gate_up[r * 2 * inter + i], u = gate_up[r * 2 * inter + inter + i], d = da[r * inter + i];
        expected[r * 2 * inter + i] = d * u * cpu::silu_grad_fixed(g);
        expected[r * 2 * inter + inter + i] = d * cpu::silu_fixed(g);
      }
    for (cpu::Isa isa : cpu::runnable_isas()) {
      std::vector<float> got(expected.size(), -9.0f);
      cpu::swiglu_grad(gate_up.data(), da.data(), rows, inter, got.data(), isa);
      INFO("isa " << cpu::to_string(isa) << ", inter " << inter);
      CHECK(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)) == 0);
    }
  }
  // silu' against its closed form in double.
  for (float g : {-8.0f, -1.0f, -0.25f, 0.0f, 0.3f, 1.0f, 4.0f, 12.0f}) {
    const double s = 1.0 / (1.0 + std::exp(-static_cast<double>(g)));
    INFO("g = " << g);
    CHECK(cpu::silu_grad_fixed(g) == Approx(s * (1.0 + g * (1.0 - s))).epsilon(1e-6).margin(1e-7));
  }
}

TEST_CASE("cpu kernels: silu_mul gives identical bits on every path, float and bf16", "[cpu][gemm]") {
  check_silu_mul_paths<float>();
  check_silu_mul_paths<bfloat16>();
}

TEST_CASE("cpu kernels: silu_mul's bf16 store rounds exactly as from_float", "[cpu][gemm]") {
  // Products landing on ties, near ties, NaN payloads, infinities and subnormals: silu(128) is
  // exactly 128 (e^-128 underflows to 0), so act = from_float(128 * u) with u = p / 128, which
  // is p itself wherever the scaling by a power of 2 is exact.
  std::vector<float> products;
  std::mt19937 rng(12);
  std::uniform_int_distribution<std::uint32_t> any_bits;
  for (std::uint32_t low : {0x8000u, 0x7fffu, 0x8001u, 0x18000u, 0x0u, 0xffffu})
    for (std::uint32_t high : {0x3f800000u, 0xbf800000u, 0x00010000u, 0x7f7f0000u, 0x7f800000u, 0x7fc10000u})
      products.push_back(std::bit_cast<float>(high | low));
  for (int i = 0; i < 5000; ++i) products.push_back(std::bit_cast<float>(any_bits(rng)));
  REQUIRE(cpu::silu_fixed(128.0f) == 128.0f);
  const index_t inter = static_cast<index_t>(products.size());
  std::vector<float> gate_up(static_cast<std::size_t>(2 * inter));
  for (index_t i = 0; i < inter; ++i) {
    gate_up[i] = 128.0f;
    gate_up[inter + i] = products[i] / 128.0f;
  }
  std::vector<bfloat16> expected(static_cast<std::size_t>(inter));
  for (index_t i = 0; i < inter; ++i)
    expected[i] = mp::from_float<bfloat16>(cpu::silu_fixed(128.0f) * gate_up[inter + i]);
  for (cpu::Isa isa : cpu::runnable_isas()) {
    std::vector<bfloat16> act(static_cast<std::size_t>(inter));
    cpu::silu_mul(gate_up.data(), 1, inter, 2 * inter, act.data(), inter, isa);
    INFO("isa " << cpu::to_string(isa));
    CHECK(std::memcmp(act.data(), expected.data(), act.size() * sizeof(bfloat16)) == 0);
  }
  // And directly: the vector rounding is from_float on every bit pattern class.
  for (float p : products) {
    std::uint16_t want = mp::from_float<bfloat16>(p).bits;
    CHECK(cpu::fast_math_detail::bf16_bits(std::bit_cast<std::uint32_t>(p)) == want);
  }
}
