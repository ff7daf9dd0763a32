#pragma once
// SafetensorsWriter: collects tensors and writes one safetensors file whole, in the format
// io/safetensors_header.hpp reads (tensors in the order added, the header padded with
// spaces to a multiple of 8 bytes so that the data that follows is aligned).
//
//   mp::SafetensorsWriter out;                             // float, bfloat16, int32, int64
//   out.add("hidden_states", y);
//   out.metadata("made_by", "me");
//   out.write("out.safetensors");                          // or out.bytes()

#include "meshplan/core/detail/public_begin.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/core/tensor.hpp"
#include "meshplan/core/detail/type_name.hpp"
#include "meshplan/io/file_dtype.hpp"
#include "meshplan/io/detail/io_rules.hpp"

namespace meshplan {

class SafetensorsWriter {
 public:
  template <class T>
  void add(std::string name, const Tensor<T>& t) {
    constexpr bool stored = std::is_same_v<T, float> || std::is_same_v<T, bfloat16> ||
                            std::is_same_v<T, std::int32_t> || std::is_same_v<T, std::int64_t>;
    static_assert(rule_check<io_rules::element_type_stored(stored, type_name<T>())>::passed);
    FileDType d = FileDType::f32;
    if constexpr (std::is_same_v<T, float>) d = FileDType::f32;
    else if constexpr (std::is_same_v<T, bfloat16>) d = FileDType::bf16;
    else if constexpr (std::is_same_v<T, std::int32_t>) d = FileDType::i32;
    else if constexpr (std::is_same_v<T, std::int64_t>) d = FileDType::i64;
    std::vector<std::byte> bytes(static_cast<std::size_t>(t.numel()) * sizeof(T));
    if (!bytes.empty()) std::memcpy(bytes.data(), t.data(), bytes.size());
    entries_.push_back({std::move(name), d, t.shape(), std::move(bytes)});
  }

  void metadata(std::string key, std::string value) { metadata_[std::move(key)] = std::move(value); }

  std::vector<std::byte> bytes() const {
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::size_t offset = 0;
    for (const auto& e : entries_) {
      header[e.name] = {{"dtype", std::string(to_string(e.dtype))},
                        {"shape", e.shape},
                        {"data_offsets", {offset, offset + e.data.size()}}};
      offset += e.data.size();
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    std::vector<std::byte> out(8 + text.size() + offset);
    const std::uint64_t n = text.size();
    std::memcpy(out.data(), &n, 8);
    std::memcpy(out.data() + 8, text.data(), text.size());
    std::size_t at = 8 + text.size();
    for (const auto& e : entries_) {
      if (!e.data.empty()) std::memcpy(out.data() + at, e.data.data(), e.data.size());
      at += e.data.size();
    }
    return out;
  }

  void write(const std::string& path) const {
    const std::vector<std::byte> b = bytes();
    std::ofstream f(path, std::ios::binary);
    if (!f) throw RuleViolation(io_rules::io_error("create", path));
    f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    if (!f) throw RuleViolation(io_rules::io_error("write", path));
  }

 private:
  struct Entry {
    std::string name;
    FileDType dtype;
    std::vector<index_t> shape;
    std::vector<std::byte> data;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
