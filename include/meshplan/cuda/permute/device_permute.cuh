#pragma once
// DevicePermute: token permutation for expert parallelism on the GPU, one public entry per
// step (CUB's shape). Sizes are checked on the host before every launch; nothing here waits
// for the device.
//
//   size_t bytes = 0;
//   DevicePermute::sort_by_expert(nullptr, bytes, ids, sorted, order, pairs, experts, s);
//   ... allocate bytes ...
//   DevicePermute::sort_by_expert(temp, bytes, ids, sorted, order, pairs, experts, s);
//
// sort_by_expert   stable radix sort of the pairs' expert ids over only the bits the expert
//                  count needs, the pair indices carried as values
// expert_offsets   per-expert counts (histogram) and offsets (exclusive scan), E + 1 of them
// gather_rows      rows of the pairs in expert order, 16-byte vectors where the rows allow
// regroup          rows received per (source, local expert) into expert-major order, or back
// combine          out[t] = sum over slots, in order, of w[t, s] * y[row of (t, s)]

#include <cuda_runtime_api.h>

#include <cub/device/device_histogram.cuh>
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/row_block.hpp"
#include "meshplan/cuda/core/buffer.cuh"
#include "meshplan/cuda/core/device_types.cuh"
#include "meshplan/cuda/core/error.cuh"
#include "meshplan/cuda/core/launch.cuh"
#include "meshplan/cuda/permute/kernels.cuh"
#include "meshplan/cuda/permute/policy.cuh"

namespace meshplan::cuda {

namespace permute_rules {
inline Message count_valid(std::string_view what, long long n) {
  if (n >= 0 && n <= INT32_MAX) return {};
  return Message::rule("device_sizes") << what << " is " << n << "; the device kernels take 0 to " << INT32_MAX;
}
inline Message pointer_given(std::string_view what, const void* p, long long n) {
  if (p || n == 0) return {};
  return Message::rule("device_sizes") << what << " is null but " << n << " elements are asked for";
}
inline Message temp_large_enough(std::size_t given, std::size_t needed) {
  if (given >= needed) return {};
  return Message::rule("device_sizes") << "the temporary storage has " << given << " bytes where " << needed
                                       << " are needed (ask with a null pointer first)";
}
inline Message experts_valid(long long experts) {
  if (experts >= 1 && experts <= (1 << 20)) return {};
  return Message::rule("device_sizes") << "the expert count " << experts << " is outside 1.." << (1 << 20);
}
}  // namespace permute_rules

/// The number of key bits needed to sort ids in [0, experts).
constexpr int expert_bits(long long experts) noexcept {
  int bits = 0;
  while ((1LL << bits) < experts) ++bits;
  return bits == 0 ? 1 : bits;
}

struct DevicePermute {
  /// Stable sort of `pairs` expert ids; `order[i]` is the pair at sorted position i. The
  /// temporary storage holds the value iota and CUB's radix sort storage.
  static void sort_by_expert(void* temp, std::size_t& temp_bytes, const std::int32_t* expert_ids,
                             std::int32_t* sorted_ids, std::int32_t* order, long long pairs, long long experts,
                             cudaStream_t stream) {
    enforce(first_of({permute_rules::count_valid("the pair count", pairs), permute_rules::experts_valid(experts),
                      permute_rules::pointer_given("expert_ids", expert_ids, pairs),
                      permute_rules::pointer_given("sorted_ids", sorted_ids, pairs),
                      permute_rules::pointer_given("order", order, pairs)}));
    const int n = static_cast<int>(pairs);
    std::size_t sort_bytes = 0;
    MESHPLAN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, expert_ids, sorted_ids,
                                                        static_cast<const std::int32_t*>(nullptr), order, n, 0,
                                                        expert_bits(experts), stream));
    const std::size_t iota_bytes = round_up(static_cast<std::size_t>(n) * sizeof(std::int32_t));
    if (!temp) {
      temp_bytes = iota_bytes + sort_bytes;
      return;
    }
    enforce(permute_rules::temp_large_enough(temp_bytes, iota_bytes + sort_bytes));
    if (n == 0) return;
    auto* iota = static_cast<std::int32_t*>(temp);
    kernels::iota<<<grid_for(n, 256), 256, 0, stream>>>(iota, n);
    MESHPLAN_CUDA_CHECK(cudaGetLastError());
    MESHPLAN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(static_cast<char*>(temp) + iota_bytes, sort_bytes, expert_ids,
                                                        sorted_ids, iota, order, n, 0, expert_bits(experts), stream));
  }

  /// counts[e] = pairs routed to e; offsets[e] = sum of counts before e, offsets[E] = pairs.
  /// `flag` (device int, zeroed by the caller) is set when an id is outside [0, experts).
  static void expert_offsets(void* temp, std::size_t& temp_bytes, const std::int32_t* expert_ids, long long pairs,
                             long long experts, std::int32_t* counts, std::int32_t* offsets, int* flag,
                             cudaStream_t stream) {
    enforce(first_of({permute_rules::count_valid("the pair count", pairs), permute_rules::experts_valid(experts),
                      permute_rules::pointer_given("expert_ids", expert_ids, pairs),
                      permute_rules::pointer_given("counts", counts, experts),
                      permute_rules::pointer_given("offsets", offsets, experts + 1)}));
    const int n = static_cast<int>(pairs), E = static_cast<int>(experts);
    std::size_t hist_bytes = 0, scan_bytes = 0;
    MESHPLAN_CUDA_CHECK(
        cub::DeviceHistogram::HistogramEven(nullptr, hist_bytes, expert_ids, counts, E + 1, 0, E, n, stream));
    MESHPLAN_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes, counts, offsets, E + 1, stream));
    const std::size_t needed =
        std::max(hist_bytes, scan_bytes) + round_up(sizeof(std::int32_t) * static_cast<std::size_t>(E + 1));
    if (!temp) {
      temp_bytes = needed;
      return;
    }
    enforce(permute_rules::temp_large_enough(temp_bytes, needed));
    // counts has E entries; the scan reads E + 1 from a copy whose last entry is zero.
    auto* padded = static_cast<std::int32_t*>(temp);
    void* work = static_cast<char*>(temp) + round_up(sizeof(std::int32_t) * static_cast<std::size_t>(E + 1));
    MESHPLAN_CUDA_CHECK(
        cub::DeviceHistogram::HistogramEven(work, hist_bytes, expert_ids, counts, E + 1, 0, E, n, stream));
    MESHPLAN_CUDA_CHECK(cudaMemsetAsync(padded + E, 0, sizeof(std::int32_t), stream));
    MESHPLAN_CUDA_CHECK(cudaMemcpyAsync(padded, counts, sizeof(std::int32_t) * E, cudaMemcpyDeviceToDevice, stream));
    MESHPLAN_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(work, scan_bytes, padded, offsets, E + 1, stream));
    if (n > 0 && flag) {
      kernels::check_expert_ids<<<grid_for(n, 256), 256, 0, stream>>>(expert_ids, n, E, flag);
      MESHPLAN_CUDA_CHECK(cudaGetLastError());
    }
  }

  /// out[i] = x[order[i] / top_k] for rows of `hidden` elements of T.
  template <DeviceElement T>
  static void gather_rows(const T* x, const std::int32_t* order, long long top_k, long long rows, long long hidden,
                          T* out, cudaStream_t stream) {
    enforce(
        first_of({permute_rules::count_valid("the row count", rows),
                  permute_rules::count_valid("the row width in bytes", hidden * static_cast<long long>(sizeof(T))),
                  permute_rules::pointer_given("the rows", x, rows), permute_rules::pointer_given("out", out, rows)}));
    if (rows == 0 || hidden == 0) return;
    const PermutePolicy policy = permute_policy(current_sm());
    const int row_bytes = static_cast<int>(hidden * static_cast<long long>(sizeof(T)));
    const bool vectors = row_bytes % 16 == 0 && aligned16(x) && aligned16(out);
    kernels::gather_rows<<<grid_for(static_cast<int>(rows), policy.rows_per_block), policy.threads, 0, stream>>>(
        reinterpret_cast<const unsigned char*>(x), order, static_cast<int>(top_k), static_cast<int>(rows), row_bytes,
        vectors, policy.rows_per_block, reinterpret_cast<unsigned char*>(out));
    MESHPLAN_CUDA_CHECK(cudaGetLastError());
  }

  /// Rows received as (source, local expert) blocks into expert-major order (`inverse`:
  /// back). `blocks` come from regroup_blocks (moe/dispatch_plan.hpp); they are uploaded into `table`.
  template <DeviceElement T>
  static void regroup(const T* in, T* out, std::span<const RowBlock> blocks, long long hidden, bool inverse,
                      DeviceBuffer<kernels::RowBlock>& table, cudaStream_t stream) {
    long long total = 0;
    std::vector<kernels::RowBlock> rows;
    for (const auto& b : blocks) {
      rows.push_back({b.from, b.to, b.rows});
      total += b.rows;
    }
    enforce(first_of({permute_rules::count_valid("the regrouped row count", total),
                      permute_rules::count_valid("the row width in bytes", hidden * static_cast<long long>(sizeof(T))),
                      permute_rules::pointer_given("the rows", in, total),
                      permute_rules::pointer_given("out", out, total)}));
    if (total == 0 || hidden == 0) return;
    table.upload(rows, stream);
    const PermutePolicy policy = permute_policy(current_sm());
    const int row_bytes = static_cast<int>(hidden * static_cast<long long>(sizeof(T)));
    const bool vectors = row_bytes % 16 == 0 && aligned16(in) && aligned16(out);
    kernels::regroup_rows<<<grid_for(static_cast<int>(total), policy.rows_per_block), policy.threads, 0, stream>>>(
        reinterpret_cast<const unsigned char*>(in), reinterpret_cast<unsigned char*>(out), table.data(),
        static_cast<int>(rows.size()), static_cast<int>(total), row_bytes, vectors, inverse, policy.rows_per_block);
    MESHPLAN_CUDA_CHECK(cudaGetLastError());
  }

  /// inverse[order[i]] = i.
  static void inverse(const std::int32_t* order, long long n, std::int32_t* inverse_out, cudaStream_t stream) {
    enforce(permute_rules::count_valid("the pair count", n));
    if (n == 0) return;
    kernels::inverse_permutation<<<grid_for(static_cast<int>(n), 256), 256, 0, stream>>>(order, static_cast<int>(n),
                                                                                         inverse_out);
    MESHPLAN_CUDA_CHECK(cudaGetLastError());
  }

  /// out[t] = sum over slots of weights[t, s] * y[inverse[t * k + s]], in slot order, in
  /// fp32, stored as Out.
  template <class Y, DeviceElement Out>
  static void combine(const Y* y, const std::int32_t* inverse, const float* weights, long long tokens, long long top_k,
                      long long hidden, Out* out, cudaStream_t stream) {
    enforce(first_of({permute_rules::count_valid("the token count", tokens),
                      permute_rules::count_valid("the pair count", tokens * top_k),
                      permute_rules::count_valid("the hidden size", hidden),
                      permute_rules::pointer_given("the expert rows", y, tokens * top_k * hidden),
                      permute_rules::pointer_given("out", out, tokens * hidden)}));
    if (tokens == 0 || hidden == 0) return;
    const PermutePolicy policy = permute_policy(current_sm());
    // 16-byte loads of y where the rows allow; the same sums in the same order either way.
    constexpr int N = 16 / sizeof(Y) > 0 ? static_cast<int>(16 / sizeof(Y)) : 1;
    const bool vectors = hidden % N == 0 && aligned(y, sizeof(Y) * N) && aligned(out, sizeof(Out) * N);
    const auto grid = static_cast<unsigned>(tokens);
    const int h = static_cast<int>(hidden), n = static_cast<int>(tokens), k = static_cast<int>(top_k);
    if (vectors)
      kernels::combine<Y, Out, N><<<grid, policy.combine_threads, 0, stream>>>(y, inverse, weights, n, k, h, out);
    else
      kernels::combine<Y, Out, 1><<<grid, policy.combine_threads, 0, stream>>>(y, inverse, weights, n, k, h, out);
    MESHPLAN_CUDA_CHECK(cudaGetLastError());
  }

 private:
  static std::size_t round_up(std::size_t bytes) noexcept { return (bytes + 255) / 256 * 256; }
  static bool aligned(const void* p, std::size_t bytes) noexcept {
    return reinterpret_cast<std::uintptr_t>(p) % bytes == 0;
  }
  static bool aligned16(const void* p) noexcept { return aligned(p, 16); }
};

}  // namespace meshplan::cuda
