#pragma once
// Element types of stored tensors. Arithmetic is always fp32; these are storage types.

#include "meshplan/core/detail/public_begin.hpp"

#include <cstddef>
#include <string_view>

#include "meshplan/core/diagnostic.hpp"

namespace meshplan {

enum class DType : unsigned char { f32, bf16, f16 };

constexpr std::size_t size_of(DType t) noexcept { return t == DType::f32 ? 4 : 2; }

/// safetensors' spelling: "F32", "BF16", "F16".
constexpr std::string_view to_string(DType t) noexcept {
  switch (t) {
    case DType::f32: return "F32";
    case DType::bf16: return "BF16";
    case DType::f16: return "F16";
  }
  return "?";
}

/// Reads "f32"/"float32"/"F32", "bf16"/"bfloat16"/"BF16", "f16"/"float16"/"F16".
inline DType parse_dtype(std::string_view s) {
  if (s == "f32" || s == "float32" || s == "F32" || s == "fp32") return DType::f32;
  if (s == "bf16" || s == "bfloat16" || s == "BF16") return DType::bf16;
  if (s == "f16" || s == "float16" || s == "F16" || s == "fp16") return DType::f16;
  throw RuleViolation(Message::rule("dtype_known") << "unknown dtype '" << s << "'; use f32, bf16 or f16");
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
