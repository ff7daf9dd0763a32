#pragma once
// SafetensorsView: the tensors of safetensors bytes held elsewhere (a mapped file, or a
// buffer in memory), by name, checked when the view is made
// (io/safetensors_header.hpp) and read converted to the type a tensor stores.
//
//   mp::SafetensorsView v(bytes, "block.safetensors");
//   v.info("experts.down_proj").shape                      // {E, H, I}
//   mp::Tensor<float> w = v.read<float>("gate.weight");    // converted from F32/BF16/F16
//
// The bytes must outlive the view.

#include "meshplan/core/detail/public_begin.hpp"

#include <cstddef>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/io/detail/file_dtype_conversion.hpp"
#include "meshplan/io/detail/io_rules.hpp"
#include "meshplan/io/safetensors_header.hpp"

namespace meshplan {

class SafetensorsView {
 public:
  /// Parses and checks the header; `source` names the file in messages.
  SafetensorsView(std::span<const std::byte> bytes, std::string source = "<memory>")
      : bytes_(bytes), source_(std::move(source)), header_(parse_safetensors_header(bytes_, source_)) {}

  const std::string& source() const noexcept { return source_; }
  /// The file holding tensor `name` (this one; a set of files answers per tensor).
  const std::string& source_of(std::string_view /*name*/) const noexcept { return source_; }
  const std::vector<TensorInfo>& tensors() const noexcept { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const noexcept { return header_.metadata; }

  bool contains(std::string_view name) const noexcept { return find(name) != nullptr; }

  const TensorInfo& info(std::string_view name) const {
    const TensorInfo* t = find(name);
    if (!t) throw RuleViolation(io_rules::tensor_missing(source_, name));
    return *t;
  }

  /// The raw bytes of a tensor.
  std::span<const std::byte> raw(const TensorInfo& t) const noexcept {
    return bytes_.subspan(header_.data_start + t.begin, t.end - t.begin);
  }

  /// A whole tensor, converted to T (float, bfloat16, std::int32_t or index_t).
  template <class T>
  Tensor<T> read(std::string_view name) const {
    const TensorInfo& t = info(name);
    Tensor<T> out(t.shape);
    detail::convert_elements<T>(raw(t).data(), t.dtype, 0, static_cast<std::size_t>(t.numel()), out.data());
    return out;
  }

 private:
  const TensorInfo* find(std::string_view name) const noexcept {
    for (const auto& t : header_.tensors)
      if (t.name == name) return &t;
    return nullptr;
  }

  std::span<const std::byte> bytes_;
  std::string source_;
  SafetensorsHeader header_;
};

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
