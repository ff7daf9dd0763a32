// DevicePermute against the CPU permutation (cpu/permute.hpp, cpu/combine.hpp): the sorted
// order, counts and offsets exactly; rows moved bit for bit (vector and scalar paths,
// float, bfloat16, half); the combine bit for bit (both sides sum in slot order with
// separate fp32 multiplies and adds: the host code is built without FMA contraction, as
// g++ builds x86-64 by default).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "cuda_support.hpp"
#include "meshplan/cpu/combine.hpp"
#include "meshplan/cpu/permute.hpp"
#include "meshplan/moe/dispatch_plan.hpp"
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
                    Catch::Contains("[device_sizes]") && Catch::Contains("temporary storage"));
}

TEST_CASE("expert_offsets flags an expert id outside the expert count", "[permute]") {
  const std::vector<std::int32_t> ids = {0, 5, 1, 9};
  CHECK(device_sort(ids, 4).flag == 1);
  CHECK(device_sort({0, 1, 2, 3}, 4).flag == 0);
}

TEMPLATE_TEST_CASE("gather_rows, regroup and its inverse move the CPU's rows bit for bit", "[permute]", float,
                   __nv_bfloat16, __half) {
  using T = TestType;
  for (index_t hidden : {7, 64, 2048, 7168})
    for (index_t tokens : {0, 1, 33, 1000})
      for (index_t top_k : {1, 2, 8})
        for (bool offset_by_one : {false, true}) {  // a misaligned base takes the scalar path
          INFO(hidden << " hidden, " << tokens << " tokens, top-" << top_k << (offset_by_one ? ", misaligned" : ""));
          const index_t pairs = tokens * top_k, H = hidden;
          const auto x =
              random_bits<T>(static_cast<std::size_t>(tokens * H + 1), static_cast<std::uint32_t>(H + tokens));
          std::vector<index_t> order(static_cast<std::size_t>(pairs));
          std::iota(order.begin(), order.end(), 0);
          std::shuffle(order.begin(), order.end(), std::mt19937(static_cast<std::uint32_t>(pairs)));
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
          mp::cuda::DeviceBuffer<T> gathered(static_cast<std::size_t>(pairs * H + 1));
          mp::cuda::DevicePermute::gather_rows(d_x.data() + shift, d_order.data(), top_k, pairs, H,
                                               gathered.data() + shift, nullptr);
          std::vector<T> got = download(gathered);
          got.erase(got.begin(), got.begin() + shift);
          got.resize(expected.size());
          CHECK(same_bits(got, expected));

          // Regroup the gathered rows as if received from 3 sources for 4 local experts,
          // some blocks empty, then back.
          std::vector<index_t> counts(12, 0);
          index_t left = pairs;
          std::mt19937 rng(static_cast<std::uint32_t>(pairs + 5));
          for (std::size_t b = 0; b + 1 < counts.size() && left > 0; ++b) {
            counts[b] = b % 5 == 2 ? 0 : std::min<index_t>(left, static_cast<index_t>(rng() % (pairs / 4 + 2)));
            left -= counts[b];
          }
          counts.back() += left;
          const auto blocks = mp::regroup_blocks(counts, 3, 4);
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

TEMPLATE_TEST_CASE("combine is the CPU's weighted sum in slot order, bit for bit", "[permute]", float, mp::bfloat16) {
  using Y = TestType;
  using DY = mp::cuda::device_type_t<Y>;
  for (index_t hidden : {7, 64, 2048})
    for (index_t tokens : {0, 1, 1000})
      for (index_t top_k : {1, 2, 8}) {
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
