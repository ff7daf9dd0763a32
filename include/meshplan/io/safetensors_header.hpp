#pragma once
// The safetensors format's header, parsed and checked.
//
// A file is: 8 bytes (little-endian u64) N; N bytes of JSON, an object mapping each tensor
// name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets into the data that
// follows), plus an optional "__metadata__" object of strings; then the data.
//
// The header is parsed by nlohmann/json and checked before any data is touched: the header
// length within the file, the JSON an object, every entry with a known dtype, a shape of
// non-negative integers and offsets inside the data whose length matches the shape, no two
// tensors overlapping. A malformed file is refused with RuleViolation
// (io_rules::malformed), so that nothing is ever read outside the file.

#include "meshplan/core/detail/public_begin.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/io/file_dtype.hpp"
#include "meshplan/io/detail/io_rules.hpp"

namespace meshplan {

/// One tensor of a safetensors file, as its header describes it.
struct TensorInfo {
  std::string name;
  FileDType dtype = FileDType::f32;
  std::vector<index_t> shape;
  std::size_t begin = 0;  // byte offsets into the data section
  std::size_t end = 0;

  index_t numel() const noexcept {
    index_t n = 1;
    for (index_t e : shape) n *= e;
    return n;
  }
};

/// A checked header: where the data starts in the file, the tensors in the header's order,
/// and the metadata.
struct SafetensorsHeader {
  std::size_t data_start = 0;
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
};

namespace detail {

class SafetensorsHeaderParser {
 public:
  explicit SafetensorsHeaderParser(std::string_view source) : source_(source) {}

  SafetensorsHeader parse(std::span<const std::byte> bytes) const {
    if (bytes.size() < 8) fail("it is shorter than the 8-byte header length");
    std::uint64_t n;  // little-endian, as on x86-64 and Arm
    std::memcpy(&n, bytes.data(), sizeof n);
    constexpr std::uint64_t limit = 100u << 20;  // the format's own limit on header size
    if (n > limit) fail("its header length is over 100 MiB");
    if (n > bytes.size() - 8) fail("its header length runs past the end of the file");
    SafetensorsHeader out;
    out.data_start = 8 + static_cast<std::size_t>(n);
    const std::string_view text(reinterpret_cast<const char*>(bytes.data() + 8), static_cast<std::size_t>(n));

    nlohmann::json header;
    try {
      header = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      fail(std::string("its header is not JSON (") + e.what() + ")");
    }
    if (!header.is_object()) fail("its header is not a JSON object");
    const std::size_t data_size = bytes.size() - out.data_start;
    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") {
        if (!entry.is_object()) fail("__metadata__ is not an object");
        for (const auto& [key, value] : entry.items()) {
          if (!value.is_string()) fail("__metadata__ value '" + key + "' is not a string");
          out.metadata[key] = value.get<std::string>();
        }
        continue;
      }
      out.tensors.push_back(parse_entry(name, entry, data_size));
    }
    // No two tensors share bytes.
    std::vector<const TensorInfo*> order;
    for (const auto& t : out.tensors) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
    for (std::size_t i = 1; i < order.size(); ++i)
      if (order[i]->begin < order[i - 1]->end)
        fail("tensors '" + order[i - 1]->name + "' and '" + order[i]->name + "' overlap");
    return out;
  }

 private:
  [[noreturn]] void fail(std::string_view what) const { throw RuleViolation(io_rules::malformed(source_, what)); }

  TensorInfo parse_entry(const std::string& name, const nlohmann::json& e, std::size_t data_size) const {
    const std::string what = "tensor '" + name + "' ";
    if (!e.is_object()) fail(what + "is not described by an object");
    for (const char* key : {"dtype", "shape", "data_offsets"})
      if (!e.contains(key)) fail(what + "has no '" + key + "'");
    TensorInfo t;
    t.name = name;
    if (!e["dtype"].is_string()) fail(what + "has a dtype that is not a string");
    const std::string dtype = e["dtype"].get<std::string>();
    const std::optional<FileDType> known = file_dtype_named(dtype);
    if (!known) fail(what + "has dtype '" + dtype + "'; meshplan reads F32, BF16, F16, I32 and I64");
    t.dtype = *known;

    const auto& shape = e["shape"];
    if (!shape.is_array()) fail(what + "has a shape that is not an array");
    std::uint64_t elements = 1;
    for (const auto& d : shape) {
      if (!d.is_number_unsigned()) fail(what + "has a shape entry that is not a non-negative integer");
      const std::uint64_t v = d.get<std::uint64_t>();
      if (v > static_cast<std::uint64_t>(std::numeric_limits<index_t>::max()) ||
          (v != 0 && elements > std::numeric_limits<std::uint64_t>::max() / v))
        fail(what + "has a shape too large to address");
      elements *= v;
      t.shape.push_back(static_cast<index_t>(v));
    }
    const auto& offsets = e["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned())
      fail(what + "needs data_offsets [begin, end] of non-negative integers");
    const std::uint64_t begin = offsets[0].get<std::uint64_t>(), end = offsets[1].get<std::uint64_t>();
    if (begin > end || end > data_size) fail(what + "has data_offsets outside the file's data");
    if (elements > std::numeric_limits<std::uint64_t>::max() / size_of(t.dtype) ||
        end - begin != elements * size_of(t.dtype))
      fail(what + "has " + std::to_string(end - begin) + " bytes of data for a " + dtype + " tensor of " +
           std::to_string(elements) + " elements");
    t.begin = static_cast<std::size_t>(begin);
    t.end = static_cast<std::size_t>(end);
    return t;
  }

  std::string_view source_;
};

}  // namespace detail

/// Parses and checks the header of safetensors bytes; `source` names the file in messages.
inline SafetensorsHeader parse_safetensors_header(std::span<const std::byte> bytes, std::string_view source) {
  return detail::SafetensorsHeaderParser(source).parse(bytes);
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
