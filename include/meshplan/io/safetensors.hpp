#pragma once
// safetensors files: read through mmap, written whole.
//
// The format: 8 bytes (little-endian u64) N; N bytes of JSON, an object mapping each tensor
// name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets into the data that
// follows), plus an optional "__metadata__" object of strings; then the data.
//
//   mp::SafetensorsFile f("block.safetensors");            // mmap; the header is checked
//   f.info("experts.down_proj").shape                      // {E, H, I}
//   mp::Tensor<float> w = f.read<float>("gate.weight");    // converted from F32/BF16/F16
//
// The header is parsed by nlohmann/json and checked before any data is touched: the header
// length within the file, the JSON an object, every entry with a known dtype, a shape of
// non-negative integers and offsets inside the data whose length matches the shape, no two
// tensors overlapping. A malformed file is refused with RuleViolation; nothing is ever read
// outside the file. Dtypes: F32, BF16, F16 (as floats), I32, I64 (as integers).

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "meshplan/core/bfloat16.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/core/type_name.hpp"
#include "meshplan/core/tensor.hpp"

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

namespace io_rules {
inline Message malformed(std::string_view source, std::string_view what) {
  return Message::rule("safetensors_malformed") << "'" << source << "' is not a valid safetensors file: " << what;
}
inline Message tensor_missing(std::string_view source, std::string_view name) {
  return Message::rule("safetensors_tensor_missing") << "'" << source << "' has no tensor '" << name << "'";
}
inline Message io_error(std::string_view what, std::string_view path) {
  return Message::rule("safetensors_io") << "cannot " << what << " '" << path << "'";
}
}  // namespace io_rules

namespace detail {
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
}  // namespace detail

/// A checked view of safetensors bytes (an mmap, or a buffer in memory).
class SafetensorsView {
 public:
  /// Parses and checks the header; `source` names the file in messages.
  SafetensorsView(std::span<const std::byte> bytes, std::string source = "<memory>")
      : bytes_(bytes), source_(std::move(source)) {
    parse();
  }

  const std::string& source() const noexcept { return source_; }
  /// The file holding tensor `name` (this one; a set of files answers per tensor).
  const std::string& source_of(std::string_view /*name*/) const noexcept { return source_; }
  const std::vector<TensorInfo>& tensors() const noexcept { return tensors_; }
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }

  bool contains(std::string_view name) const noexcept { return find(name) != nullptr; }

  const TensorInfo& info(std::string_view name) const {
    const TensorInfo* t = find(name);
    if (!t) throw RuleViolation(io_rules::tensor_missing(source_, name));
    return *t;
  }

  /// The raw bytes of a tensor.
  std::span<const std::byte> raw(const TensorInfo& t) const noexcept {
    return bytes_.subspan(data_start_ + t.begin, t.end - t.begin);
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
    for (const auto& t : tensors_)
      if (t.name == name) return &t;
    return nullptr;
  }

  [[noreturn]] void fail(std::string_view what) const { throw RuleViolation(io_rules::malformed(source_, what)); }

  void parse() {
    if (bytes_.size() < 8) fail("it is shorter than the 8-byte header length");
    const std::uint64_t n = detail::load<std::uint64_t>(bytes_.data());  // little-endian, as on x86-64 and Arm
    constexpr std::uint64_t limit = 100u << 20;  // the format's own limit on header size
    if (n > limit) fail("its header length is over 100 MiB");
    if (n > bytes_.size() - 8) fail("its header length runs past the end of the file");
    data_start_ = 8 + static_cast<std::size_t>(n);
    const std::string_view text(reinterpret_cast<const char*>(bytes_.data() + 8), static_cast<std::size_t>(n));

    nlohmann::json header;
    try {
      header = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      fail(std::string("its header is not JSON (") + e.what() + ")");
    }
    if (!header.is_object()) fail("its header is not a JSON object");
    const std::size_t data_size = bytes_.size() - data_start_;
    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") {
        if (!entry.is_object()) fail("__metadata__ is not an object");
        for (const auto& [key, value] : entry.items()) {
          if (!value.is_string()) fail("__metadata__ value '" + key + "' is not a string");
          metadata_[key] = value.get<std::string>();
        }
        continue;
      }
      tensors_.push_back(parse_entry(name, entry, data_size));
    }
    // No two tensors share bytes.
    std::vector<const TensorInfo*> order;
    for (const auto& t : tensors_) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
    for (std::size_t i = 1; i < order.size(); ++i)
      if (order[i]->begin < order[i - 1]->end)
        fail("tensors '" + order[i - 1]->name + "' and '" + order[i]->name + "' overlap");
  }

  TensorInfo parse_entry(const std::string& name, const nlohmann::json& e, std::size_t data_size) const {
    const std::string what = "tensor '" + name + "' ";
    if (!e.is_object()) fail(what + "is not described by an object");
    for (const char* key : {"dtype", "shape", "data_offsets"})
      if (!e.contains(key)) fail(what + "has no '" + key + "'");
    TensorInfo t;
    t.name = name;
    if (!e["dtype"].is_string()) fail(what + "has a dtype that is not a string");
    const std::string dtype = e["dtype"].get<std::string>();
    if (dtype == "F32") t.dtype = FileDType::f32;
    else if (dtype == "BF16") t.dtype = FileDType::bf16;
    else if (dtype == "F16") t.dtype = FileDType::f16;
    else if (dtype == "I32") t.dtype = FileDType::i32;
    else if (dtype == "I64") t.dtype = FileDType::i64;
    else fail(what + "has dtype '" + dtype + "'; meshplan reads F32, BF16, F16, I32 and I64");

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

  std::span<const std::byte> bytes_;
  std::string source_;
  std::size_t data_start_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// A safetensors file mapped into memory (read-only). Pages are touched only where a tensor,
/// or the piece of it a rank reads, lies.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path) : map_(std::make_shared<Mapping>(path)) {
    view_ = std::make_unique<SafetensorsView>(map_->bytes(), path);
  }

  const SafetensorsView& view() const noexcept { return *view_; }
  const std::vector<TensorInfo>& tensors() const noexcept { return view_->tensors(); }
  const std::map<std::string, std::string>& metadata() const noexcept { return view_->metadata(); }
  bool contains(std::string_view name) const noexcept { return view_->contains(name); }
  const TensorInfo& info(std::string_view name) const { return view_->info(name); }
  template <class T>
  Tensor<T> read(std::string_view name) const {
    return view_->read<T>(name);
  }

 private:
  class Mapping {
   public:
    explicit Mapping(const std::string& path) {
      const int fd = ::open(path.c_str(), O_RDONLY);
      if (fd < 0) throw RuleViolation(io_rules::io_error("open", path));
      struct stat st {};
      if (::fstat(fd, &st) != 0) {
        ::close(fd);
        throw RuleViolation(io_rules::io_error("stat", path));
      }
      size_ = static_cast<std::size_t>(st.st_size);
      if (size_ > 0) {
        data_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
        if (data_ == MAP_FAILED) {
          ::close(fd);
          throw RuleViolation(io_rules::io_error("map", path));
        }
      }
      ::close(fd);
    }
    ~Mapping() {
      if (data_ && data_ != MAP_FAILED) ::munmap(data_, size_);
    }
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    std::span<const std::byte> bytes() const noexcept { return {static_cast<const std::byte*>(data_), size_}; }

   private:
    void* data_ = nullptr;
    std::size_t size_ = 0;
  };

  std::shared_ptr<Mapping> map_;
  std::unique_ptr<SafetensorsView> view_;
};

/// Collects tensors and writes one safetensors file (tensors in the order added, the header
/// padded with spaces to a multiple of 8 bytes).
class SafetensorsWriter {
 public:
  template <class T>
  void add(std::string name, const Tensor<T>& t) {
    FileDType d;
    if constexpr (std::is_same_v<T, float>) d = FileDType::f32;
    else if constexpr (std::is_same_v<T, bfloat16>) d = FileDType::bf16;
    else if constexpr (std::is_same_v<T, std::int32_t>) d = FileDType::i32;
    else if constexpr (std::is_same_v<T, std::int64_t>) d = FileDType::i64;
    else static_assert(dependent_false<T>, "meshplan: safetensors stores float, bfloat16, int32 and int64");
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
