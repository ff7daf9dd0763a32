#pragma once
// Tensor<T>: a row-major host tensor that owns its elements. The CPU reference works on
// these; T is a storage type (float or bfloat16) or float for fp32 intermediates.

#include "meshplan/core/detail/public_begin.hpp"

#include <algorithm>
#include <cstddef>
#include <initializer_list>
#include <span>
#include <utility>
#include <vector>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"

namespace meshplan {

/// "[2, 3, 4]"
inline Message& operator<<(Message& m, std::span<const index_t> shape) {
  m << "[";
  for (std::size_t i = 0; i < shape.size(); ++i) m << (i ? ", " : "") << shape[i];
  return m << "]";
}
inline Message& operator<<(Message& m, const std::vector<index_t>& shape) {
  return m << std::span<const index_t>(shape);
}

namespace tensor_rules {
inline Message shape_matches(std::string_view what, const std::vector<index_t>& got,
                             const std::vector<index_t>& expected) {
  if (got == expected) return {};
  Message m = Message::rule("shape_matches");
  m << what << " has shape " << got << " where " << expected << " is expected";
  return m;
}

inline Message extents_valid(const std::vector<index_t>& shape) {
  for (index_t e : shape)
    if (e < 0) return Message::rule("shape_matches") << "a tensor extent is negative (" << e << ")";
  return {};
}
}  // namespace tensor_rules

/// The number of elements of a tensor of this shape.
inline index_t element_count(const std::vector<index_t>& shape) noexcept {
  index_t n = 1;
  for (index_t e : shape) n *= e;
  return n;
}

template <class T>
class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::vector<index_t> shape) : shape_(std::move(shape)) {
    enforce(tensor_rules::extents_valid(shape_));
    data_.resize(static_cast<std::size_t>(count(shape_)));
  }
  Tensor(std::vector<index_t> shape, std::vector<T> data) : shape_(std::move(shape)), data_(std::move(data)) {
    enforce(tensor_rules::extents_valid(shape_));
    enforce(tensor_rules::shape_matches("the data", {static_cast<index_t>(data_.size())}, {count(shape_)}));
  }

  const std::vector<index_t>& shape() const noexcept { return shape_; }
  index_t rank() const noexcept { return static_cast<index_t>(shape_.size()); }
  index_t dim(std::size_t d) const noexcept { return shape_[d]; }
  index_t numel() const noexcept { return static_cast<index_t>(data_.size()); }
  bool empty() const noexcept { return data_.empty(); }

  T* data() noexcept { return data_.data(); }
  const T* data() const noexcept { return data_.data(); }
  std::span<T> span() noexcept { return data_; }
  std::span<const T> span() const noexcept { return data_; }
  std::vector<T>& vector() noexcept { return data_; }
  const std::vector<T>& vector() const noexcept { return data_; }

  /// Row i of the tensor viewed as [shape[0], rest...] (a whole sub-tensor for rank > 2).
  std::span<T> row(index_t i) noexcept { return {data_.data() + i * row_size(), static_cast<std::size_t>(row_size())}; }
  std::span<const T> row(index_t i) const noexcept {
    return {data_.data() + i * row_size(), static_cast<std::size_t>(row_size())};
  }
  index_t row_size() const noexcept { return shape_.empty() || shape_[0] == 0 ? 0 : numel() / shape_[0]; }

  T& operator[](index_t i) noexcept { return data_[static_cast<std::size_t>(i)]; }
  const T& operator[](index_t i) const noexcept { return data_[static_cast<std::size_t>(i)]; }

  void require_shape(std::string_view what, const std::vector<index_t>& expected) const {
    enforce(tensor_rules::shape_matches(what, shape_, expected));
  }

  /// Changes the shape, keeping the elements in order (the element count stays).
  void reshape(std::vector<index_t> shape) {
    enforce(tensor_rules::extents_valid(shape));
    enforce(tensor_rules::shape_matches("the reshaped tensor", std::vector<index_t>{count(shape)},
                                        std::vector<index_t>{numel()}));
    shape_ = std::move(shape);
  }

  friend bool operator==(const Tensor&, const Tensor&) = default;

 private:
  static index_t count(const std::vector<index_t>& shape) noexcept { return element_count(shape); }

  std::vector<index_t> shape_;
  std::vector<T> data_;
};

/// Element-wise conversion between storage types (rounding to nearest even into bfloat16).
template <class To, class From>
Tensor<To> convert(const Tensor<From>& t) {
  if (t.shape().empty() && t.empty()) return {};  // no tensor (not a scalar)
  Tensor<To> out(t.shape());
  for (index_t i = 0; i < t.numel(); ++i) {
    if constexpr (std::is_same_v<To, From>) out[i] = t[i];
    else out[i] = from_float<To>(to_float(t[i]));
  }
  return out;
}

/// Columns [first, first + count) of a matrix [rows, cols], as a matrix of their own.
template <class T>
Tensor<T> column_block(const Tensor<T>& m, index_t first, index_t count) {
  const index_t rows = m.dim(0), ld = m.dim(1);
  Tensor<T> out({rows, count});
  for (index_t r = 0; r < rows; ++r)
    std::copy_n(m.data() + r * ld + first, count, out.data() + r * count);
  return out;
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
