#pragma once
// The messages of reading and writing checkpoint files: a file that is not valid
// safetensors, a tensor a file does not hold, a file that cannot be opened, mapped or
// written. Each names the file, so that a user of a many-file checkpoint knows which.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <string_view>

#include "meshplan/core/diagnostic.hpp"

namespace meshplan::io_rules {

inline Message malformed(std::string_view source, std::string_view what) {
  return Message::rule("safetensors_malformed") << "'" << source << "' is not a valid safetensors file: " << what;
}
inline Message tensor_missing(std::string_view source, std::string_view name) {
  return Message::rule("safetensors_tensor_missing") << "'" << source << "' has no tensor '" << name << "'";
}
inline Message io_error(std::string_view what, std::string_view path) {
  return Message::rule("safetensors_io") << "cannot " << what << " '" << path << "'";
}
/// A tensor written to safetensors has an element type the format stores; `type` is its spelling.
constexpr Message element_type_stored(bool stored, std::string_view type) noexcept {
  if (stored) return {};
  return Message::rule("safetensors_element_type") << "a Tensor<" << type
                                                   << "> cannot be written: safetensors files here hold float, "
                                                      "bfloat16, int32 and int64";
}

}  // namespace meshplan::io_rules
