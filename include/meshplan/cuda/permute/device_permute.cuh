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
// gather_rows      rows of the pairs in expert order, in the widest accesses the rows allow
// regroup          rows received per (source, local expert) into expert-major order, or back
// combine          out[t] = sum over slots, in order, of w[t, s] * y[row of (t, s)]

#include "meshplan/core/detail/public_begin.hpp"

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
#include "meshplan/core/detail/row_block.hpp"
#include "meshplan/cuda/core/buffer.cuh"
#include "meshplan/cuda/core/detail/device_types.cuh"
#include "meshplan/cuda/core/error.cuh"
#include "meshplan/cuda/core/detail/launch.cuh"
#include "meshplan/cuda/permute/detail/kernels.cuh"
#include "meshplan/cuda/permute/detail/policy.cuh"

namespace meshplan::cuda {

namespace permute_rules {
inline Message count_valid(std::string_view what, long long n) {
  if (n >= 0 && n <= INT32_MAX) return {};
  return Message::rule("device_size_range") << what << " is " << n << "; the device kernels take 0 to " << INT32_MAX;
}
inline Message pointer_given(std::string_view what, const void* p, long long n) {
  if (p || n == 0) return {};
  return Message::rule("device_buffer_given") << what << " is null but " << n << " elements are asked for";
}
inline Message temp_large_enough(std::size_t given, std::size_t needed) {
  if (given >= needed) return {};
  return Message::rule("device_temp_storage") << "the temporary storage has " << given << " bytes where " << needed
                                       << " are needed (ask with a null pointer first)";
}
inline Message experts_valid(long long experts) {
  if (experts >= 1 && experts <= (1 << 20)) return {};
  return Message::rule("device_expert_count") << "the expert count " << experts << " is outside 1.." << (1 << 20);
}
}  // namespace permute_rules

/// The number of key bits needed to sort ids in [0, experts).
constexpr int expert_bits(long long experts) noexcept {
  int bits = 0;
  while ((1LL << bits) < experts) ++bits;
  return bits == 0 ? 1 : bits;
}

/// How a row kernel (gather, regroup) is launched: plain host arithmetic, so the host tests
/// check it. Teams of 2^lanes_log2 threads move a row in `access_bytes` accesses; each
/// thread keeps rows_per_thread x (kernels::row_loads / rows_per_thread) loads in flight.
struct RowLaunch {
  int access_bytes;     // 16, 8, 4, 2 or 1
  int vectors;          // accesses per row
  int rows_per_thread;  // 1, 2, 4 or 8
  int lanes_log2;       // threads per row: 1 << lanes_log2, at most `threads`
  int threads;          // per block
  unsigned blocks;
};

/// The widest access, up to 16 bytes, that divides the row size and both bases: 16 for
/// aligned rows of whole 16-byte vectors, less for others (no row size is refused).
constexpr int access_bytes(long long row_bytes, std::uintptr_t in, std::uintptr_t out) noexcept {
  int w = 16;
  while (w > 1 && (row_bytes % w != 0 || in % w != 0 || out % w != 0)) w /= 2;
  return w;
}

/// log2 of the threads per row: the fewest (a power of two, at most `threads`, itself a
/// power of two) that cover `vectors` accesses at `cols` each; wider rows loop.
constexpr int lanes_log2_for(long long vectors, int cols, int threads) noexcept {
  int log2 = 0;
  while ((1LL << log2) * cols < vectors && (2 << log2) <= threads) ++log2;
  return log2;
}

/// The launch of a row kernel over `rows` rows of `row_bytes` bytes between bases `in` and
/// `out`. Every split of kernels::row_loads into rows x columns keeps as many loads in
/// flight, and 8 rows x 1 column leaves no more column slots idle than the others (the cap
/// on threads a row only makes the wider splits worse) while loading the most indices at
/// once; so 8 rows a thread, unless a grid of fewer than `min_blocks` blocks would leave
/// SMs idle (a few wide rows): then the split with the most blocks, the most rows a thread
/// among equals.
inline RowLaunch row_launch(long long rows, long long row_bytes, std::uintptr_t in, std::uintptr_t out, int threads,
                            long long min_blocks) noexcept {
  const int bytes = access_bytes(row_bytes, in, out);
  const long long vectors = row_bytes / bytes;
  RowLaunch best{bytes, static_cast<int>(vectors), 0, 0, threads, 0};
  for (int r = kernels::row_loads; r >= 1 && (best.rows_per_thread == 0 || best.blocks < min_blocks); r /= 2) {
    const int log2 = lanes_log2_for(vectors, kernels::row_loads / r, threads);
    const long long teams = (rows + r - 1) / r;
    const unsigned blocks = grid_for(teams << log2, threads);
    if (best.rows_per_thread == 0 || blocks > best.blocks)
      best = {bytes, static_cast<int>(vectors), r, log2, threads, blocks};
  }
  return best;
}

/// The combine's launch: a team of 2^lanes_log2 threads per token, kernels::combine_packs
/// packs a thread per pass.
struct CombineLaunch {
  int lanes_log2;
  unsigned blocks;
};

inline CombineLaunch combine_launch(long long tokens, long long packs, int threads) noexcept {
  const int log2 = lanes_log2_for(packs, kernels::combine_packs, threads);
  return {log2, grid_for(tokens << log2, threads)};
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

  /// out[i] = x[order[i] / top_k] for rows of `hidden` elements of T. Every row is moved
  /// (none dropped or padded); rows whose size or bases are not 16-byte multiples move in
  /// the widest accesses that fit them (row_launch).
  template <DeviceElement T>
  static void gather_rows(const T* x, const std::int32_t* order, long long top_k, long long rows, long long hidden,
                          T* out, cudaStream_t stream) {
    enforce(
        first_of({permute_rules::count_valid("the row count", rows),
                  permute_rules::count_valid("the row width in bytes", hidden * static_cast<long long>(sizeof(T))),
                  permute_rules::pointer_given("the rows", x, rows), permute_rules::pointer_given("out", out, rows),
                  permute_rules::pointer_given("order", order, rows), top_k_valid(top_k, rows)}));
    if (rows == 0 || hidden == 0) return;
    const long long row_bytes = hidden * static_cast<long long>(sizeof(T));
    const RowLaunch l = row_launch(rows, row_bytes, address(x), address(out), permute_policy(current_sm()).threads,
                                   2LL * multiprocessors());
    const auto divide = kernels::FastDivide::of(static_cast<std::uint32_t>(top_k));
    with_access(l, [&]<class V, int Rows>() {
      kernels::gather_rows<V, Rows><<<l.blocks, l.threads, 0, stream>>>(reinterpret_cast<const V*>(x), order, divide,
                                                                       static_cast<int>(rows), l.vectors,
                                                                       l.lanes_log2, reinterpret_cast<V*>(out));
    });
    MESHPLAN_CUDA_CHECK(cudaGetLastError());
  }

  /// Rows received as (source, local expert) blocks into expert-major order (`inverse`:
  /// back). `blocks` come from regroup_blocks (moe/detail/dispatch_plan.hpp); they are uploaded into `table`.
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
    const long long row_bytes = hidden * static_cast<long long>(sizeof(T));
    const RowLaunch l = row_launch(total, row_bytes, address(in), address(out), permute_policy(current_sm()).threads,
                                   2LL * multiprocessors());
    with_access(l, [&]<class V, int Rows>() {
      kernels::regroup_rows<V, Rows><<<l.blocks, l.threads, 0, stream>>>(
          reinterpret_cast<const V*>(in), reinterpret_cast<V*>(out), table.data(), static_cast<int>(rows.size()),
          static_cast<int>(total), l.vectors, inverse, l.lanes_log2);
    });
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
                      permute_rules::pointer_given("out", out, tokens * hidden),
                      permute_rules::pointer_given("inverse", inverse, tokens * top_k),
                      permute_rules::pointer_given("weights", weights, tokens * top_k)}));
    if (tokens == 0 || hidden == 0) return;
    const int threads = permute_policy(current_sm()).combine_threads;
    // 16-byte loads of y where the rows allow; the same sums in the same order either way.
    constexpr int N = 16 / sizeof(Y) > 0 ? static_cast<int>(16 / sizeof(Y)) : 1;
    const bool vectors = hidden % N == 0 && aligned(y, sizeof(Y) * N) && aligned(out, sizeof(Out) * N);
    const int n = static_cast<int>(tokens), k = static_cast<int>(top_k);
    if (vectors) {
      const CombineLaunch l = combine_launch(tokens, hidden / N, threads);
      kernels::combine<Y, Out, N><<<l.blocks, threads, 0, stream>>>(y, inverse, weights, n, k,
                                                                    static_cast<int>(hidden / N), l.lanes_log2, out);
    } else {
      const CombineLaunch l = combine_launch(tokens, hidden, threads);
      kernels::combine<Y, Out, 1><<<l.blocks, threads, 0, stream>>>(y, inverse, weights, n, k,
                                                                    static_cast<int>(hidden), l.lanes_log2, out);
    }
    MESHPLAN_CUDA_CHECK(cudaGetLastError());
  }

 private:
  static std::size_t round_up(std::size_t bytes) noexcept { return (bytes + 255) / 256 * 256; }
  static bool aligned(const void* p, std::size_t bytes) noexcept {
    return reinterpret_cast<std::uintptr_t>(p) % bytes == 0;
  }
  static std::uintptr_t address(const void* p) noexcept { return reinterpret_cast<std::uintptr_t>(p); }
  static int multiprocessors() {
    int device = 0, count = 0;
    MESHPLAN_CUDA_CHECK(cudaGetDevice(&device));
    MESHPLAN_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    return count;
  }

  /// The gather divides pair indices by top_k: it must be at least 1 when there are rows.
  static Message top_k_valid(long long top_k, long long rows) {
    if (rows == 0 || (top_k >= 1 && top_k <= INT32_MAX)) return {};
    return Message::rule("device_size_range") << "top_k is " << top_k << "; the gather takes 1 to " << INT32_MAX;
  }

  /// Calls launch.template operator()<V, Rows>() with V the unsigned type of l.access_bytes
  /// bytes and Rows = l.rows_per_thread: the kernel instantiations a RowLaunch can choose.
  template <class Launch>
  static void with_access(const RowLaunch& l, Launch&& launch) {
    auto rows = [&]<class V>() {
      switch (l.rows_per_thread) {
        case 8: return launch.template operator()<V, 8>();
        case 4: return launch.template operator()<V, 4>();
        case 2: return launch.template operator()<V, 2>();
        default: return launch.template operator()<V, 1>();
      }
    };
    switch (l.access_bytes) {
      case 16: return rows.template operator()<uint4>();
      case 8: return rows.template operator()<uint2>();
      case 4: return rows.template operator()<unsigned>();
      case 2: return rows.template operator()<unsigned short>();
      default: return rows.template operator()<unsigned char>();
    }
  }
};

}  // namespace meshplan::cuda

#include "meshplan/core/detail/public_end.hpp"
