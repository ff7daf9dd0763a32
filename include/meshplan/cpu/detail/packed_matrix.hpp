#pragma once
// A weight matrix b [N, K] (out x in, as torch nn.Linear stores it), packed once into the
// layout the CPU GEMM kernels (cpu/detail/gemm.hpp) read: panels of `panel_width` output columns,
// each panel [K][panel_width] contiguous and 64-byte aligned, the last panel padded with
// zero columns. A kernel then reads, at every step k, the next panel_width weights in one
// contiguous line pair, whatever N and K are.
//
// The panels are fp32 whatever the source type: a bfloat16 weight converts exactly, so the
// kernels compute the same products as from the bf16 matrix. The cost is memory: 4 bytes
// per weight (twice the bf16 matrix), plus up to panel_width - 1 padding columns.
//
// One layout serves every instruction-set path (cpu/isa.hpp): the AVX-512 kernel takes a
// panel as two zmm vectors per step, the AVX2 kernel as two halves of two ymm vectors, the
// portable one column by column.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cstddef>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/cpu/thread_pool.hpp"

namespace meshplan::cpu {

/// Output columns per packed panel: two AVX-512 vectors of fp32.
inline constexpr index_t panel_width = 32;

/// b [N, K] packed into panels of elements P. Only fp32 panels exist (P = float): the
/// kernels' FMAs run on fp32, and a bf16 source is widened once here rather than at
/// every use.
template <StorageType P = float>
class PackedMatrix {
  static_assert(std::is_same_v<P, float>, "meshplan: PackedMatrix holds fp32 panels (pack widens bfloat16 sources)");

 public:
  PackedMatrix() = default;

  /// Packs b [n, k] (row o, column i at b[o * k + i]). Panels are independent; with a pool
  /// they are packed in parallel.
  template <StorageType W>
  static PackedMatrix pack(const W* b, index_t n, index_t k, ThreadPool* pool = nullptr) {
    enforce(n >= 0 && k >= 0 && (b != nullptr || n * k == 0)
                ? Message{}
                : Message::rule("gemm_shape") << "cannot pack a weight of shape [" << n << ", " << k << "]"
                                              << (b == nullptr ? " from a null pointer" : ""));
    PackedMatrix m = allocate(n, k);
    auto pack_panel = [&](index_t p) {
      float* dst = m.data_.get() + p * panel_width * k;
      index_t first = p * panel_width;
      index_t width = n - first < panel_width ? n - first : panel_width;
      std::memset(dst, 0, static_cast<std::size_t>(panel_width * k) * sizeof(float));
      // Column by column of the output: each source row is read once, contiguously.
      for (index_t j = 0; j < width; ++j) {
        const W* row = b + (first + j) * k;
        for (index_t i = 0; i < k; ++i) dst[i * panel_width + j] = to_float(row[i]);
      }
    };
    if (pool != nullptr)
      pool->parallel_for(m.panels_, pack_panel);
    else
      for (index_t p = 0; p < m.panels_; ++p) pack_panel(p);
    return m;
  }

  /// Packs the transpose of b [k, n] (row i, column o at b[i * ld + o], ld >= n): the
  /// product then reads b's columns as its rows, as the backward's dgrad and wgrad need.
  template <StorageType W>
  static PackedMatrix pack_transposed(const W* b, index_t k, index_t n, index_t ld, ThreadPool* pool = nullptr) {
    enforce(n >= 0 && k >= 0 && ld >= n && (b != nullptr || n * k == 0)
                ? Message{}
                : Message::rule("gemm_shape") << "cannot pack the transpose of a matrix of shape [" << k << ", " << n
                                              << "] with leading dimension " << ld);
    PackedMatrix m;
    m.assign_transposed([&](index_t i) { return b + i * ld; }, k, n, pool);
    return m;
  }

  /// Repacks this matrix as the transpose of k rows of n elements each, row i at
  /// row_of(i) (a pointer to a StorageType): the rows may be gathered from anywhere. The
  /// allocation is kept when it is large enough, so a workspace repacked every step does
  /// not fault its pages in again.
  template <class RowOf>
  void assign_transposed(RowOf&& row_of, index_t k, index_t n, ThreadPool* pool = nullptr) {
    reshape(n, k);
    auto pack_panel = [&](index_t p) {
      float* dst = data_.get() + p * panel_width * k;
      const index_t first = p * panel_width;
      const index_t width = n - first < panel_width ? n - first : panel_width;
      // Row i of the panel is row i's columns [first, +width): one contiguous read.
      for (index_t i = 0; i < k; ++i) {
        const auto* row = row_of(i) + first;
        float* out = dst + i * panel_width;
        for (index_t j = 0; j < width; ++j) out[j] = to_float(row[j]);
        for (index_t j = width; j < panel_width; ++j) out[j] = 0.0f;
      }
    };
    if (pool != nullptr)
      pool->parallel_for(panels_, pack_panel);
    else
      for (index_t p = 0; p < panels_; ++p) pack_panel(p);
  }

  /// N: the output columns of a product with this matrix.
  index_t rows() const noexcept { return rows_; }
  /// K: the reduction length.
  index_t cols() const noexcept { return cols_; }
  index_t panels() const noexcept { return panels_; }
  /// Panel p: [K][panel_width], column j of the panel is output column p * panel_width + j.
  const float* panel(index_t p) const noexcept { return data_.get() + p * panel_width * cols_; }
  /// Bytes the panels take.
  std::size_t bytes() const noexcept { return static_cast<std::size_t>(panels_ * panel_width * cols_) * sizeof(float); }

 private:
  static constexpr std::align_val_t alignment{64};

  /// The panels of an [n, k] matrix, uninitialized.
  static PackedMatrix allocate(index_t n, index_t k) {
    PackedMatrix m;
    m.reshape(n, k);
    return m;
  }
  /// Makes this the (uninitialized) panels of an [n, k] matrix, reusing the allocation
  /// where it is large enough.
  void reshape(index_t n, index_t k) {
    rows_ = n;
    cols_ = k;
    panels_ = (n + panel_width - 1) / panel_width;
    const auto elements = static_cast<std::size_t>(panels_ * panel_width * k);
    if (elements > 0 && (elements > capacity_ || data_ == nullptr)) {  // a moved-from matrix keeps its count, not its data
      data_.reset(static_cast<float*>(::operator new(elements * sizeof(float), alignment)));
      capacity_ = elements;
    }
  }
  struct AlignedDelete {
    void operator()(float* p) const noexcept { ::operator delete(p, alignment); }
  };

  index_t rows_ = 0;
  index_t cols_ = 0;
  index_t panels_ = 0;
  std::size_t capacity_ = 0;  // elements data_ holds
  std::unique_ptr<float, AlignedDelete> data_;
};

}  // namespace meshplan::cpu
