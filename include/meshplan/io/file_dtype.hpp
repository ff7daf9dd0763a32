#pragma once
// The element types a safetensors file may hold that meshplan reads, by the names the
// format gives them: F32, BF16, F16 (read as floats), I32, I64 (read as integers).

#include "meshplan/core/detail/public_begin.hpp"

#include <cstddef>
#include <optional>
#include <string_view>

namespace meshplan {

enum class FileDType : unsigned char { f32, bf16, f16, i32, i64 };

constexpr std::size_t size_of(FileDType t) noexcept {
  switch (t) {
    case FileDType::f32:
    case FileDType::i32: return 4;
    case FileDType::bf16:
    case FileDType::f16: return 2;
    case FileDType::i64: return 8;
  }
  return 0;
}

/// The format's name of a dtype ("F32", "BF16", ...).
constexpr std::string_view to_string(FileDType t) noexcept {
  switch (t) {
    case FileDType::f32: return "F32";
    case FileDType::bf16: return "BF16";
    case FileDType::f16: return "F16";
    case FileDType::i32: return "I32";
    case FileDType::i64: return "I64";
  }
  return "?";
}

/// The dtype the format names `name`; none for a dtype meshplan does not read.
constexpr std::optional<FileDType> file_dtype_named(std::string_view name) noexcept {
  for (FileDType t : {FileDType::f32, FileDType::bf16, FileDType::f16, FileDType::i32, FileDType::i64})
    if (to_string(t) == name) return t;
  return std::nullopt;
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
