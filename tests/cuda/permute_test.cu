// DevicePermute against the CPU permutation (cpu/detail/permute.hpp, cpu/detail/combine.hpp): the sorted
// order, counts and offsets exactly; rows moved bit for bit (every access width, 16 bytes
// down to 1, every rows-per-thread split, float, bfloat16, half, uniform and skewed
// routings); the combine bit for bit (both sides sum in slot order with fused fp32
// multiply-adds from 0). The launch arithmetic (access widths, teams, grids, the division
// by top_k) and the refusals are "host:" tests, run without a GPU.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "cuda_support.hpp"
#include "meshplan/cpu/detail/combine.hpp"
#include "meshplan/cpu/detail/permute.hpp"
#include "meshplan/moe/detail/dispatch_plan.hpp"
#include "meshplan/cuda/permute/device_permute.cuh"

namespace mp = meshplan;
using mp::index_t;
using namespace cuda_support;

namespace {

enum class Skew { uniform, one_expert, half_idle };

std::vector<std::int32_t> expert_ids(index_t pairs, index_t experts, Skew skew, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(pairs));
  for (auto& id : ids) {
    const auto e = static_cast<std::int32_t>(rng() % static_cast<std::uint32_t>(experts));
    id = skew == Skew::uniform      ? e
         : skew == Skew::one_expert ? static_cast<std::int32_t>(experts - 1)
                                    : e / 2;  // the upper half never chosen
  }
  return ids;
}

template <class A, class B>
bool equal_as_index(const std::vector<A>& a, const std::vector<B>& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](A x, B y) {
           return static_cast<index_t>(x) == static_cast<index_t>(y);
         });
}

struct DeviceOrder {
  std::vector<std::int32_t> order, counts, offsets;
  int flag = 0;
};

DeviceOrder device_sort(const std::vector<std::int32_t>& ids, index_t experts) {
  const index_t pairs = static_cast<index_t>(ids.size());
  auto d_ids = upload(ids);
  mp::cuda::DeviceBuffer<std::int32_t> sorted(ids.size()), order(ids.size()), counts(static_cast<std::size_t>(experts)),
      offsets(static_cast<std::size_t>(experts + 1));
  mp::cuda::DeviceBuffer<int> flag(1);
  MESHPLAN_CUDA_CHECK(cudaMemset(flag.data(), 0, sizeof(int)));
  std::size_t sort_bytes = 0, count_bytes = 0;
  using P = mp::cuda::DevicePermute;
  P::sort_by_expert(nullptr, sort_bytes, d_ids.data(), sorted.data(), order.data(), pairs, experts, nullptr);
  P::expert_offsets(nullptr, count_bytes, sorted.data(), pairs, experts, counts.data(), offsets.data(), flag.data(),
                    nullptr);
  mp::cuda::DeviceBuffer<unsigned char> temp(std::max<std::size_t>({sort_bytes, count_bytes, 1}));
  P::sort_by_expert(temp.data(), sort_bytes, d_ids.data(), sorted.data(), order.data(), pairs, experts, nullptr);
  P::expert_offsets(temp.data(), count_bytes, sorted.data(), pairs, experts, counts.data(), offsets.data(), flag.data(),
                    nullptr);
  return {download(order), download(counts), download(offsets), download(flag)[0]};
}

}  // namespace

TEST_CASE("sort_by_expert and expert_offsets give the CPU's stable order, counts and offsets", "[permute]") {
  for (index_t experts : {1, 3, 8, 128, 256})
    for (index_t pairs : {0, 1, 7, 4099, 70001})
      for (Skew skew : {Skew::uniform, Skew::one_expert, Skew::half_idle}) {
        INFO(experts << " experts, " << pairs << " pairs, skew " << static_cast<int>(skew));
        const auto ids = expert_ids(pairs, experts, skew, static_cast<std::uint32_t>(experts * 7 + pairs));
        const mp::Routing routing{pairs, 1, ids, std::vector<float>(ids.size(), 1.0f)};
        const mp::ExpertOrder cpu = mp::cpu::sort_by_expert(routing, experts);
        const DeviceOrder gpu = device_sort(ids, experts);
        CHECK(equal_as_index(gpu.order, cpu.order));
        CHECK(equal_as_index(gpu.counts, cpu.counts));
        CHECK(equal_as_index(gpu.offsets, cpu.offsets));
        CHECK(gpu.flag == 0);
      }
}

TEST_CASE("the sort refuses temporary storage smaller than it asked for", "[permute]") {
  auto ids = upload(std::vector<std::int32_t>{3, 1, 2, 0});
  mp::cuda::DeviceBuffer<std::int32_t> sorted(4), order(4);
  std::size_t bytes = 0;
  mp::cuda::DevicePermute::sort_by_expert(nullptr, bytes, ids.data(), sorted.data(), order.data(), 4, 4, nullptr);
  REQUIRE(bytes > 0);
  mp::cuda::DeviceBuffer<unsigned char> temp(bytes);
  std::size_t short_bytes = bytes - 1;
  CHECK_THROWS_WITH(mp::cuda::DevicePermute::sort_by_expert(temp.data(), short_bytes, ids.data(), sorted.data(),
                                                            order.data(), 4, 4, nullptr),
                    Catch::Contains("[device_temp_storage]") && Catch::Contains("temporary storage"));
}

TEST_CASE("expert_offsets flags an expert id outside the expert count", "[permute]") {
  const std::vector<std::int32_t> ids = {0, 5, 1, 9};
  CHECK(device_sort(ids, 4).flag == 1);
  CHECK(device_sort({0, 1, 2, 3}, 4).flag == 0);
}

namespace {

/// The order of a routing of `pairs` pairs over 16 experts with `skew`, as the CPU sorts it.
std::vector<index_t> sorted_order(index_t tokens, index_t top_k, Skew skew) {
  const auto ids = expert_ids(tokens * top_k, 16, skew, static_cast<std::uint32_t>(tokens * 131 + top_k));
  return mp::cpu::sort_by_expert(mp::Routing{tokens, top_k, ids, std::vector<float>(ids.size(), 1.0f)}, 16).order;
}

/// Row counts of 3 sources x 4 local experts summing to `pairs`: random with some blocks
/// empty, or (skewed) all in one block.
std::vector<index_t> regroup_counts(index_t pairs, Skew skew) {
  std::vector<index_t> counts(12, 0);
  if (skew == Skew::one_expert) {
    counts[7] = pairs;
    return counts;
  }
  index_t left = pairs;
  std::mt19937 rng(static_cast<std::uint32_t>(pairs + 5));
  for (std::size_t b = 0; b + 1 < counts.size() && left > 0; ++b) {
    counts[b] = b % 5 == 2 ? 0 : std::min<index_t>(left, static_cast<index_t>(rng() % (pairs / 4 + 2)));
    left -= counts[b];
  }
  counts.back() += left;
  return counts;
}

}  // namespace

TEMPLATE_TEST_CASE("gather_rows, regroup and its inverse move the CPU's rows bit for bit", "[permute]", float,
                   __nv_bfloat16, __half) {
  using T = TestType;
  int case_number = 0;
  // Row sizes at and off the 16-byte multiple (for 2-byte T: 14, 16, 24, 128 bytes...).
  for (index_t hidden : {7, 8, 12, 64, 2048, 7168})
    for (index_t tokens : {0, 1, 33, 1000})
      for (index_t top_k : {1, 3, 8})
        for (bool offset_by_one : {false, true}) {  // a base one element off: narrower accesses
          // The routings take turns, so each meets every size.
          const Skew skew = static_cast<Skew>(case_number++ % 3);
          INFO(hidden << " hidden, " << tokens << " tokens, top-" << top_k << (offset_by_one ? ", misaligned" : "")
                      << ", skew " << static_cast<int>(skew));
          const index_t pairs = tokens * top_k, H = hidden;
          const auto x =
              random_bits<T>(static_cast<std::size_t>(tokens * H + 1), static_cast<std::uint32_t>(H + tokens));
          const std::vector<index_t> order = sorted_order(tokens, top_k, skew);
          std::vector<std::int32_t> order32(order.begin(), order.end());
          const index_t shift = offset_by_one ? 1 : 0;

          // Gather: out[i] = x[order[i] / k].
          std::vector<index_t> tokens_of(order.size());
          for (std::size_t i = 0; i < order.size(); ++i) tokens_of[i] = order[i] / top_k;
          std::vector<T> expected(static_cast<std::size_t>(pairs * H));
          mp::cpu::gather_rows<T>(std::span<const T>(x).subspan(static_cast<std::size_t>(shift)), tokens_of, H,
                                  expected);
          auto d_x = upload(x);
          auto d_order = upload(order32);
          // One row's worth of guard after the rows: nothing may be written past them.
          const std::vector<T> guard = random_bits<T>(static_cast<std::size_t>(pairs * H + H + 1), 99);
          auto gathered = upload(guard);
          mp::cuda::DevicePermute::gather_rows(d_x.data() + shift, d_order.data(), top_k, pairs, H,
                                               gathered.data() + shift, nullptr);
          std::vector<T> got = download(gathered);
          CHECK(same_bits(std::vector<T>(got.begin(), got.begin() + shift),
                          std::vector<T>(guard.begin(), guard.begin() + shift)));
          CHECK(same_bits(std::vector<T>(got.begin() + shift + pairs * H, got.end()),
                          std::vector<T>(guard.begin() + shift + pairs * H, guard.end())));
          got.erase(got.begin(), got.begin() + shift);
          got.resize(expected.size());
          CHECK(same_bits(got, expected));

          // Regroup the gathered rows as if received from 3 sources for 4 local experts,
          // then back.
          const auto blocks = mp::regroup_blocks(regroup_counts(pairs, skew), 3, 4);
          std::vector<T> regrouped_cpu(expected.size());
          mp::cpu::copy_row_blocks<T>(expected, blocks, H, false, regrouped_cpu);
          mp::cuda::DeviceBuffer<T> regrouped(expected.size()), back(expected.size());
          mp::cuda::DeviceBuffer<mp::cuda::kernels::RowBlock> table;
          mp::cuda::DevicePermute::regroup(gathered.data() + shift, regrouped.data(), blocks, H, false, table, nullptr);
          mp::cuda::DevicePermute::regroup(regrouped.data(), back.data(), blocks, H, true, table, nullptr);
          CHECK(same_bits(download(regrouped), regrouped_cpu));
          CHECK(same_bits(download(back), expected));
        }
}

namespace {

/// The gather and regroup kernels launched directly with V accesses, Rows rows a thread,
/// 2^lanes_log2 threads a row and `blocks` blocks of 256 threads, against the CPU.
template <class V, int Rows>
void check_row_kernels(int lanes_log2, unsigned blocks) {
  using T = __nv_bfloat16;
  const index_t tokens = 37, top_k = 3, H = 40, pairs = tokens * top_k;  // rows of 80 bytes
  const int vectors = static_cast<int>(H * sizeof(T) / sizeof(V));
  INFO(sizeof(V) << "-byte accesses, " << Rows << " rows a thread, " << (1 << lanes_log2) << " threads a row, "
                 << blocks << " blocks");
  const auto x = random_bits<T>(static_cast<std::size_t>(tokens * H), 7);
  const std::vector<index_t> order = sorted_order(tokens, top_k, Skew::half_idle);
  std::vector<index_t> tokens_of(order.size());
  for (std::size_t i = 0; i < order.size(); ++i) tokens_of[i] = order[i] / top_k;
  std::vector<T> expected(static_cast<std::size_t>(pairs * H));
  mp::cpu::gather_rows<T>(x, tokens_of, H, expected);

  auto d_x = upload(x);
  auto d_order = upload(std::vector<std::int32_t>(order.begin(), order.end()));
  mp::cuda::DeviceBuffer<T> gathered(expected.size()), regrouped(expected.size());
  mp::cuda::kernels::gather_rows<V, Rows><<<blocks, 256>>>(
      reinterpret_cast<const V*>(d_x.data()), d_order.data(), mp::cuda::kernels::FastDivide::of(top_k),
      static_cast<int>(pairs), vectors, lanes_log2, reinterpret_cast<V*>(gathered.data()));
  MESHPLAN_CUDA_CHECK(cudaGetLastError());
  CHECK(same_bits(download(gathered), expected));

  const auto blocks_of_rows = mp::regroup_blocks(regroup_counts(pairs, Skew::uniform), 3, 4);
  std::vector<mp::cuda::kernels::RowBlock> table_rows;
  for (const auto& b : blocks_of_rows) table_rows.push_back({b.from, b.to, b.rows});
  auto table = upload(table_rows);
  std::vector<T> regrouped_cpu(expected.size());
  mp::cpu::copy_row_blocks<T>(expected, blocks_of_rows, H, false, regrouped_cpu);
  mp::cuda::kernels::regroup_rows<V, Rows><<<blocks, 256>>>(
      reinterpret_cast<const V*>(gathered.data()), reinterpret_cast<V*>(regrouped.data()), table.data(),
      static_cast<int>(table_rows.size()), static_cast<int>(pairs), vectors, false, lanes_log2);
  MESHPLAN_CUDA_CHECK(cudaGetLastError());
  CHECK(same_bits(download(regrouped), regrouped_cpu));
}

template <class V>
void check_row_kernels_all_splits() {
  // Teams narrower and wider than a row, one block (grid-stride loops) and many.
  for (int lanes_log2 : {0, 2, 5, 8})
    for (unsigned blocks : {1u, 3u, 64u}) {
      check_row_kernels<V, 1>(lanes_log2, blocks);
      check_row_kernels<V, 2>(lanes_log2, blocks);
      check_row_kernels<V, 4>(lanes_log2, blocks);
      check_row_kernels<V, 8>(lanes_log2, blocks);
    }
}

}  // namespace

TEST_CASE("the row kernels move every row with each access width, rows per thread and team width", "[permute]") {
  check_row_kernels_all_splits<uint4>();
  check_row_kernels_all_splits<uint2>();
  check_row_kernels_all_splits<unsigned>();
  check_row_kernels_all_splits<unsigned short>();
  check_row_kernels_all_splits<unsigned char>();
}

TEMPLATE_TEST_CASE("combine is the CPU's weighted sum in slot order, bit for bit", "[permute]", float, mp::bfloat16) {
  using Y = TestType;
  using DY = mp::cuda::device_type_t<Y>;
  // hidden 7: the scalar path; 24: 3 packs of 8 bfloat16 (6 of 4 floats), fewer than a
  // team's lanes x packs; top-10: more slots than the kernel loads at once.
  for (index_t hidden : {7, 24, 64, 2048})
    for (index_t tokens : {0, 1, 33, 1000})
      for (index_t top_k : {1, 2, 8, 10}) {
        INFO(hidden << " hidden, " << tokens << " tokens, top-" << top_k);
        const index_t pairs = tokens * top_k, H = hidden;
        std::mt19937 rng(static_cast<std::uint32_t>(H * 31 + pairs));
        std::normal_distribution<float> normal;
        std::vector<Y> y_sorted(static_cast<std::size_t>(pairs * H));
        for (auto& v : y_sorted) v = mp::from_float<Y>(normal(rng));
        std::vector<float> weights(static_cast<std::size_t>(pairs));
        for (auto& w : weights) w = std::abs(normal(rng));
        std::vector<index_t> order(static_cast<std::size_t>(pairs));
        std::iota(order.begin(), order.end(), 0);
        std::shuffle(order.begin(), order.end(), rng);

        // Pair order[i] is sorted row i; the CPU reads it through the inverse, as the GPU does.
        std::vector<std::int32_t> position(static_cast<std::size_t>(pairs));
        for (std::size_t i = 0; i < order.size(); ++i) position[static_cast<std::size_t>(order[i])] = static_cast<std::int32_t>(i);
        const mp::Routing routing{tokens, top_k, std::vector<std::int32_t>(static_cast<std::size_t>(pairs), 0),
                                  weights};
        std::vector<float> expected(static_cast<std::size_t>(tokens * H));
        mp::cpu::combine<Y>(routing, y_sorted, position, H, expected);

        auto d_y = upload(y_sorted);
        auto d_order = upload(std::vector<std::int32_t>(order.begin(), order.end()));
        auto d_weights = upload(weights);
        mp::cuda::DeviceBuffer<std::int32_t> inverse(static_cast<std::size_t>(pairs));
        mp::cuda::DevicePermute::inverse(d_order.data(), pairs, inverse.data(), nullptr);
        mp::cuda::DeviceBuffer<float> out(static_cast<std::size_t>(tokens * H));
        mp::cuda::DevicePermute::combine(reinterpret_cast<const DY*>(d_y.data()), inverse.data(), d_weights.data(),
                                         tokens, top_k, H, out.data(), nullptr);
        CHECK(same_bits(download(out), expected));

        // Stored as bfloat16: the same sums, rounded once.
        mp::cuda::DeviceBuffer<__nv_bfloat16> out16(static_cast<std::size_t>(tokens * H));
        mp::cuda::DevicePermute::combine(reinterpret_cast<const DY*>(d_y.data()), inverse.data(), d_weights.data(),
                                         tokens, top_k, H, out16.data(), nullptr);
        std::vector<mp::bfloat16> rounded(expected.size());
        for (std::size_t i = 0; i < expected.size(); ++i) rounded[i] = mp::bfloat16(expected[i]);
        CHECK(same_bits(download(out16), rounded));
      }
}

// --- The host side: launch arithmetic and refusals, checked without a GPU ---------------

TEST_CASE("host: FastDivide divides every pair index by top_k as / does", "[host]") {
  std::mt19937 rng(11);
  std::vector<std::uint32_t> divisors;
  for (std::uint32_t d = 1; d <= 300; ++d) divisors.push_back(d);
  for (std::uint32_t d : {1000u, 4097u, 65535u, 65536u, 1u << 20, 12345677u, (1u << 30) + 1, INT32_MAX - 1u,
                          static_cast<std::uint32_t>(INT32_MAX)})
    divisors.push_back(d);
  for (std::uint32_t d : divisors) {
    const auto divide = mp::cuda::kernels::FastDivide::of(d);
    std::vector<std::uint32_t> n;
    for (std::uint32_t i = 0; i < 4096; ++i) n.push_back(i);
    for (std::uint32_t q : {1u, 2u, 1000u, (INT32_MAX - 1u) / d})  // around multiples of d
      for (std::uint32_t e : {0u, 1u, d - 1})
        if (static_cast<std::uint64_t>(q) * d + e <= INT32_MAX) n.push_back(q * d + e);
    for (std::uint32_t i = 0; i < 2000; ++i) n.push_back(static_cast<std::uint32_t>(rng() % (1u << 31)));
    n.push_back(INT32_MAX);
    n.push_back(INT32_MAX - 1u);
    std::size_t wrong = 0;
    for (std::uint32_t v : n) wrong += divide(v) != v / d;
    INFO("divisor " << d);
    CHECK(wrong == 0);
  }
}

TEST_CASE("host: the row kernels take the widest access the row size and both bases allow", "[host]") {
  using mp::cuda::access_bytes;
  CHECK(access_bytes(4096, 0x1000, 0x2000) == 16);  // bfloat16 x 2048, aligned
  CHECK(access_bytes(14336, 0x100, 0x200) == 16);   // bfloat16 x 7168
  CHECK(access_bytes(24, 0x100, 0x200) == 8);       // bfloat16 x 12
  CHECK(access_bytes(28, 0x100, 0x200) == 4);       // float x 7
  CHECK(access_bytes(14, 0x100, 0x200) == 2);       // bfloat16 x 7
  CHECK(access_bytes(7, 0x100, 0x200) == 1);
  CHECK(access_bytes(4096, 0x1002, 0x2000) == 2);  // a base one bfloat16 off
  CHECK(access_bytes(4096, 0x1000, 0x2004) == 4);  // a base one float off
  CHECK(access_bytes(4096, 0x1008, 0x2008) == 8);
  CHECK(access_bytes(4096, 0x1001, 0x2000) == 1);
}

namespace {

/// Counts how often the kernels' loops (kernels::RowTeam, then rows first, first + Rows...
/// and columns lane, lane + lanes...) visit each (row, vector) of a launch.
std::vector<int> visits(const mp::cuda::RowLaunch& l, long long rows) {
  std::vector<int> seen(static_cast<std::size_t>(rows * l.vectors), 0);
  const int lanes = 1 << l.lanes_log2, cols = mp::cuda::kernels::row_loads / l.rows_per_thread;
  for (long long block = 0; block < l.blocks; ++block)
    for (unsigned thread = 0; thread < static_cast<unsigned>(l.threads); ++thread) {
      const auto me = mp::cuda::kernels::RowTeam::of(block, thread, static_cast<unsigned>(l.threads), l.blocks,
                                                     l.lanes_log2);
      for (long long first = me.team * l.rows_per_thread; first < rows; first += me.teams * l.rows_per_thread)
        for (int i = 0; i < l.rows_per_thread; ++i)
          for (int c0 = me.lane; c0 < l.vectors; c0 += lanes * cols)
            for (int j = 0; j < cols; ++j)
              if (first + i < rows && c0 + j * lanes < l.vectors)
                ++seen[static_cast<std::size_t>((first + i) * l.vectors + c0 + j * lanes)];
    }
  return seen;
}

}  // namespace

TEST_CASE("host: row launches give each row a team and 8 loads in flight a thread", "[host]") {
  using mp::cuda::row_launch;
  // bfloat16 x 2048 on 32768 rows (4096 tokens, top-8): 16-byte accesses, 8 rows a thread,
  // a row per block of 256 threads.
  auto l = row_launch(32768, 4096, 0, 0, 256, 264);
  CHECK(l.access_bytes == 16);
  CHECK(l.vectors == 256);
  CHECK(l.rows_per_thread == 8);
  CHECK(l.lanes_log2 == 8);
  CHECK(l.blocks == 4096u);
  // 128-byte rows: teams of 8 threads, 32 teams a block.
  l = row_launch(32768, 128, 0, 0, 256, 264);
  CHECK(l.rows_per_thread == 8);
  CHECK(l.lanes_log2 == 3);
  CHECK(l.blocks == 128u);
  // bfloat16 x 7168: 896 vectors, more than a block: 256 threads loop over the row.
  l = row_launch(65536, 14336, 0, 0, 256, 264);
  CHECK(l.vectors == 896);
  CHECK(l.rows_per_thread == 8);
  CHECK(l.lanes_log2 == 8);
  // Enough blocks already: 8 rows a thread however few rows (264 rows of 4096 bytes, 33
  // blocks: narrower teams of fewer rows would give as many).
  l = row_launch(264, 4096, 0, 0, 256, 264);
  CHECK(l.rows_per_thread == 8);
  CHECK(l.blocks == 33u);
  // A few wide rows: fewer rows a thread spread them over more blocks (rows x columns still 8).
  l = row_launch(8, 14336, 0, 0, 256, 264);
  CHECK(l.rows_per_thread == 2);  // 1, 2, 4 blocks for 8, 4, 2 rows a thread; 1 row: 4 again
  CHECK(l.lanes_log2 == 8);
  CHECK(l.blocks == 4u);
  l = row_launch(64, 14336, 0, 0, 256, 264);
  CHECK(l.rows_per_thread == 2);
  CHECK(l.blocks == 32u);
  l = row_launch(64, 14336, 0, 0, 256, 16);  // 4 rows a thread already give 16 blocks
  CHECK(l.rows_per_thread == 4);
  CHECK(l.blocks == 16u);
  l = row_launch(1, 14336, 0, 0, 256, 264);  // one row: one block whatever the split...
  CHECK(l.rows_per_thread == 8);             // ...so the first is kept
  CHECK(l.blocks == 1u);
  // Off the 16-byte multiple: float x 7 in 4-byte accesses.
  l = row_launch(1000, 28, 0, 0, 256, 0);
  CHECK(l.access_bytes == 4);
  CHECK(l.vectors == 7);
  CHECK(l.lanes_log2 == 3);
}

TEST_CASE("host: every (row, vector) of a row launch is moved exactly once", "[host]") {
  for (long long rows : {1LL, 2LL, 7LL, 33LL, 1000LL})
    for (long long row_bytes : {2LL, 14LL, 24LL, 128LL, 4096LL, 14336LL, 36864LL})
      for (std::uintptr_t base : {std::uintptr_t{0}, std::uintptr_t{2}})
        for (int threads : {128, 256})
          for (long long min_blocks : {0LL, 8LL, 264LL}) {
            const auto l = mp::cuda::row_launch(rows, row_bytes, base, 0, threads, min_blocks);
            INFO(rows << " rows of " << row_bytes << " bytes, base " << base << ", " << threads << " threads, "
                      << min_blocks << " blocks wanted: " << l.access_bytes << "-byte accesses, "
                      << l.rows_per_thread << " rows a thread, 2^" << l.lanes_log2 << " lanes, " << l.blocks
                      << " blocks");
            REQUIRE(l.access_bytes * static_cast<long long>(l.vectors) == row_bytes);
            REQUIRE((1 << l.lanes_log2) <= threads);
            const auto seen = visits(l, rows);
            CHECK(std::all_of(seen.begin(), seen.end(), [](int v) { return v == 1; }));
          }
}

TEST_CASE("host: the combine gives each token a team that covers its packs", "[host]") {
  using mp::cuda::combine_launch;
  // bfloat16 x 2048 in packs of 8: 256 packs, 2 a thread: 128 threads a token.
  auto l = combine_launch(4096, 256, 128);
  CHECK(l.lanes_log2 == 7);
  CHECK(l.blocks == 4096u);
  // 3 packs (bfloat16 x 24): teams of 2, 64 tokens a block.
  l = combine_launch(1000, 3, 128);
  CHECK(l.lanes_log2 == 1);
  CHECK(l.blocks == 16u);
  // bfloat16 x 7168: 896 packs, more than a block covers at once: 128 threads loop.
  l = combine_launch(33, 896, 128);
  CHECK(l.lanes_log2 == 7);
  CHECK(l.blocks == 33u);
}

TEST_CASE("host: the gather and the combine refuse a missing index or weight and a top_k below 1", "[host]") {
  using P = mp::cuda::DevicePermute;
  const float* rows = reinterpret_cast<const float*>(std::uintptr_t{256});  // never read: refused first
  float* out = reinterpret_cast<float*>(std::uintptr_t{512});
  const std::int32_t* order = reinterpret_cast<const std::int32_t*>(std::uintptr_t{1024});
  CHECK_THROWS_WITH(P::gather_rows(rows, static_cast<const std::int32_t*>(nullptr), 2, 10, 64, out, nullptr),
                    Catch::Contains("[device_buffer_given]") && Catch::Contains("order is null but 10 elements"));
  CHECK_THROWS_WITH(P::gather_rows(rows, order, 0, 10, 64, out, nullptr),
                    Catch::Contains("[device_size_range]") && Catch::Contains("top_k is 0; the gather takes 1 to"));
  CHECK_THROWS_WITH(P::gather_rows(rows, order, -3, 10, 64, out, nullptr), Catch::Contains("top_k is -3"));
  CHECK_THROWS_WITH(P::combine(rows, static_cast<const std::int32_t*>(nullptr), reinterpret_cast<const float*>(rows),
                               5, 2, 64, out, nullptr),
                    Catch::Contains("inverse is null but 10 elements"));
  CHECK_THROWS_WITH(P::combine(rows, order, static_cast<const float*>(nullptr), 5, 2, 64, out, nullptr),
                    Catch::Contains("weights is null but 10 elements"));
  CHECK_NOTHROW(P::gather_rows(rows, order, 0, 0, 64, out, nullptr));  // no rows: nothing divided, no launch
}
