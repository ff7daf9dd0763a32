#pragma once
// bfloat16 storage: the top 16 bits of an IEEE float, rounded to nearest even. Arithmetic
// happens in float; only storage is 16 bits.

#include "meshplan/core/detail/public_begin.hpp"

#include <bit>
#include <cstdint>
#include <type_traits>

namespace meshplan {

struct bfloat16 {
  std::uint16_t bits = 0;

  constexpr bfloat16() = default;
  constexpr explicit bfloat16(float f) noexcept : bits(round(f)) {}
  constexpr explicit operator float() const noexcept {
    return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
  }
  static constexpr bfloat16 from_bits(std::uint16_t b) noexcept {
    bfloat16 h;
    h.bits = b;
    return h;
  }
  friend constexpr bool operator==(bfloat16 a, bfloat16 b) noexcept { return a.bits == b.bits; }

 private:
  static constexpr std::uint16_t round(float f) noexcept {
    std::uint32_t u = std::bit_cast<std::uint32_t>(f);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0)
      return static_cast<std::uint16_t>((u >> 16) | 0x0040u);  // NaN stays a (quiet) NaN
    u += 0x7fffu + ((u >> 16) & 1u);                          // round to nearest, ties to even
    return static_cast<std::uint16_t>(u >> 16);
  }
};

/// The element types meshplan stores: float and bfloat16.
template <class T>
concept StorageType = std::is_same_v<T, float> || std::is_same_v<T, bfloat16>;

template <StorageType T>
constexpr float to_float(T v) noexcept {
  return static_cast<float>(v);
}

template <StorageType T>
constexpr T from_float(float f) noexcept {
  if constexpr (std::is_same_v<T, float>) return f;
  else return T(f);
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
