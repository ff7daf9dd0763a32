#pragma once
// Elements of a file's raw data, of any FileDType, converted to the type a tensor stores
// (float, bfloat16, std::int32_t or index_t). The data may be unaligned (it lies where the
// file put it), so every element is loaded with memcpy; a run that needs no conversion
// (F32 into float, BF16 into bfloat16) is one memcpy.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/io/file_dtype.hpp"

namespace meshplan::detail {

/// IEEE half to float.
inline float half_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      exp = 127 - 15 + 1;
      while (!(mant & 0x400u)) {
        mant <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

template <class T>
T load(const std::byte* p) noexcept {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

/// Element i of raw data of dtype `d`, as a float.
inline float element_as_float(const std::byte* data, FileDType d, std::size_t i) noexcept {
  switch (d) {
    case FileDType::f32: return load<float>(data + 4 * i);
    case FileDType::bf16: return static_cast<float>(bfloat16::from_bits(load<std::uint16_t>(data + 2 * i)));
    case FileDType::f16: return half_to_float(load<std::uint16_t>(data + 2 * i));
    case FileDType::i32: return static_cast<float>(load<std::int32_t>(data + 4 * i));
    case FileDType::i64: return static_cast<float>(load<std::int64_t>(data + 8 * i));
  }
  return 0;
}

inline index_t element_as_integer(const std::byte* data, FileDType d, std::size_t i) noexcept {
  switch (d) {
    case FileDType::i32: return load<std::int32_t>(data + 4 * i);
    case FileDType::i64: return load<std::int64_t>(data + 8 * i);
    default: return static_cast<index_t>(element_as_float(data, d, i));
  }
}

/// Converts `count` elements starting at element `first` of raw data into out[0..count).
template <class T>
void convert_elements(const std::byte* data, FileDType d, std::size_t first, std::size_t count, T* out) {
  if constexpr (std::is_same_v<T, float>) {
    if (d == FileDType::f32) {
      std::memcpy(out, data + 4 * first, 4 * count);
      return;
    }
  } else if constexpr (std::is_same_v<T, bfloat16>) {
    if (d == FileDType::bf16) {
      std::memcpy(out, data + 2 * first, 2 * count);
      return;
    }
  }
  for (std::size_t i = 0; i < count; ++i) {
    if constexpr (std::is_integral_v<T>) out[i] = static_cast<T>(element_as_integer(data, d, first + i));
    else out[i] = from_float<T>(element_as_float(data, d, first + i));
  }
}

}  // namespace meshplan::detail
