// safetensors: round trips, every malformed-header check with its message, a mutation
// fuzzer on the header parser (run it under the debug preset's AddressSanitizer too), and
// the F16 conversion.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "meshplan/io/file_dtype.hpp"
#include "meshplan/io/detail/file_dtype_conversion.hpp"
#include "meshplan/io/safetensors_file.hpp"
#include "meshplan/io/safetensors_view.hpp"
#include "meshplan/io/safetensors_writer.hpp"

namespace mp = meshplan;
using mp::index_t;

namespace {
std::vector<std::byte> with_header(const std::string& json, std::size_t data_bytes = 64) {
  std::vector<std::byte> b(8 + json.size() + data_bytes);
  const std::uint64_t n = json.size();
  std::memcpy(b.data(), &n, 8);
  std::memcpy(b.data() + 8, json.data(), json.size());
  return b;
}

std::size_t detail_header_size(const std::vector<std::byte>& b) {
  std::uint64_t n = 0;
  std::memcpy(&n, b.data(), 8);
  return static_cast<std::size_t>(n);
}

std::vector<std::byte> sample() {
  mp::SafetensorsWriter w;
  mp::Tensor<float> a({2, 3});
  for (index_t i = 0; i < 6; ++i) a[i] = 0.5f * static_cast<float>(i) - 1;
  mp::Tensor<mp::bfloat16> b({4});
  for (index_t i = 0; i < 4; ++i) b[i] = mp::bfloat16(static_cast<float>(i) * 1.5f);
  mp::Tensor<std::int64_t> c({2, 2}, {7, -8, 9, 1LL << 40});
  w.add("a", a);
  w.add("b.weight", b);
  w.add("ids", c);
  w.add("empty", mp::Tensor<float>({0, 5}));
  w.metadata("made_by", "meshplan tests");
  return w.bytes();
}
}  // namespace

TEST_CASE("written files read back exactly, with conversions", "[safetensors]") {
  const auto bytes = sample();
  mp::SafetensorsView f(bytes);
  CHECK(f.tensors().size() == 4);
  CHECK(f.metadata().at("made_by") == "meshplan tests");
  CHECK(f.info("a").shape == std::vector<index_t>{2, 3});
  CHECK(f.info("a").dtype == mp::FileDType::f32);
  auto a = f.read<float>("a");
  CHECK(a[5] == 1.5f);
  CHECK(f.read<mp::bfloat16>("a")[1] == mp::bfloat16(-0.5f));
  CHECK(f.read<float>("b.weight").vector() == std::vector<float>{0, 1.5f, 3, 4.5f});
  CHECK(f.read<index_t>("ids").vector() == std::vector<index_t>{7, -8, 9, 1LL << 40});
  CHECK(f.read<float>("empty").numel() == 0);
  CHECK_THROWS_WITH(f.read<float>("nope"), "meshplan [safetensors_tensor_missing]: '<memory>' has no tensor 'nope'");

  // Through a file and mmap.
  const std::string path = "/tmp/meshplan_safetensors_test.safetensors";
  {
    mp::SafetensorsWriter w;
    w.add("x", a);
    w.write(path);
  }
  mp::SafetensorsFile file(path);
  CHECK(file.read<float>("x") == a);
  std::remove(path.c_str());
  CHECK_THROWS_WITH(mp::SafetensorsFile("/nonexistent/dir/x.safetensors"),
                    "meshplan [safetensors_io]: cannot open '/nonexistent/dir/x.safetensors'");
}

TEST_CASE("F16 converts exactly", "[safetensors]") {
  using mp::detail::half_to_float;
  CHECK(half_to_float(0x3c00) == 1.0f);
  CHECK(half_to_float(0xc000) == -2.0f);
  CHECK(half_to_float(0x7bff) == 65504.0f);
  CHECK(half_to_float(0x0001) == std::ldexp(1.0f, -24));  // the smallest subnormal
  CHECK(half_to_float(0x0200) == std::ldexp(1.0f, -15));
  CHECK(std::isinf(half_to_float(0x7c00)));
  CHECK(std::isnan(half_to_float(0x7e00)));
  CHECK(half_to_float(0x8000) == 0.0f);
}

TEST_CASE("malformed files are refused with what is wrong", "[safetensors]") {
  auto refused = [](const std::vector<std::byte>& b) {
    try {
      mp::SafetensorsView v(b, "f");
    } catch (const mp::RuleViolation& e) {
      CHECK(e.rule() == "safetensors_malformed");
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  const std::string ok = R"({"t": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}})";
  CHECK(refused(with_header(ok)) == "accepted");
  CHECK(refused(std::vector<std::byte>(5)) ==
        "meshplan [safetensors_malformed]: 'f' is not a valid safetensors file: it is shorter than the 8-byte header "
        "length");
  auto long_header = with_header(ok);
  const std::uint64_t big = 1000;
  std::memcpy(long_header.data(), &big, 8);
  CHECK_THAT(refused(long_header), Catch::EndsWith("its header length runs past the end of the file"));
  const std::uint64_t huge = 1ull << 40;
  std::memcpy(long_header.data(), &huge, 8);
  CHECK_THAT(refused(long_header), Catch::EndsWith("its header length is over 100 MiB"));
  CHECK_THAT(refused(with_header("{\"t\": ")), Catch::Contains("its header is not JSON"));
  CHECK_THAT(refused(with_header("[1, 2]")), Catch::EndsWith("its header is not a JSON object"));
  CHECK_THAT(refused(with_header(R"({"t": 3})")), Catch::EndsWith("tensor 't' is not described by an object"));
  CHECK_THAT(refused(with_header(R"({"t": {"dtype": "F32", "shape": [2]}})")),
             Catch::EndsWith("tensor 't' has no 'data_offsets'"));
  CHECK_THAT(refused(with_header(R"({"t": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}})")),
             Catch::EndsWith("tensor 't' has dtype 'F8_E4M3'; meshplan reads F32, BF16, F16, I32 and I64"));
  CHECK_THAT(refused(with_header(R"({"t": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})")),
             Catch::EndsWith("tensor 't' has a shape entry that is not a non-negative integer"));
  CHECK_THAT(refused(with_header(R"({"t": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}})")),
             Catch::EndsWith("tensor 't' has a shape that is not an array"));
  CHECK_THAT(refused(with_header(R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 800]}})")),
             Catch::EndsWith("tensor 't' has data_offsets outside the file's data"));
  CHECK_THAT(refused(with_header(R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [8, 4]}})")),
             Catch::EndsWith("tensor 't' has data_offsets outside the file's data"));
  CHECK_THAT(refused(with_header(R"({"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})")),
             Catch::EndsWith("tensor 't' has 8 bytes of data for a F32 tensor of 3 elements"));
  CHECK_THAT(refused(with_header(R"({"t": {"dtype": "F32", "shape": [4294967296, 4294967296, 4294967296],
                                      "data_offsets": [0, 8]}})")),
             Catch::EndsWith("tensor 't' has a shape too large to address"));
  CHECK_THAT(refused(with_header(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                                      "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})")),
             Catch::EndsWith("tensors 'a' and 'b' overlap"));
  CHECK_THAT(refused(with_header(R"({"__metadata__": {"k": 1}})")),
             Catch::EndsWith("__metadata__ value 'k' is not a string"));
}

TEST_CASE("the header parser survives random mutations", "[safetensors][fuzz]") {
  const auto good = sample();
  std::mt19937 rng(4242);
  int accepted = 0, refused = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    std::vector<std::byte> b = good;
    const int edits = std::uniform_int_distribution<int>(1, 4)(rng);
    for (int e = 0; e < edits; ++e) {
      switch (std::uniform_int_distribution<int>(0, 4)(rng)) {
        case 0: {  // flip a byte anywhere in the length or header
          const auto header = 8 + detail_header_size(good);
          b[std::uniform_int_distribution<std::size_t>(0, header - 1)(rng)] ^=
              static_cast<std::byte>(std::uniform_int_distribution<int>(1, 255)(rng));
          break;
        }
        case 1:  // truncate
          b.resize(std::uniform_int_distribution<std::size_t>(0, b.size())(rng));
          break;
        case 2: {  // change the header length
          if (b.size() < 8) break;
          std::uint64_t n = std::uniform_int_distribution<std::uint64_t>(0, b.size() + 16)(rng);
          std::memcpy(b.data(), &n, 8);
          break;
        }
        case 3: {  // replace a digit in the header with another digit
          for (int tries = 0; tries < 50 && b.size() > 8; ++tries) {
            auto i = std::uniform_int_distribution<std::size_t>(8, b.size() - 1)(rng);
            if (static_cast<char>(b[i]) >= '0' && static_cast<char>(b[i]) <= '9') {
              b[i] = static_cast<std::byte>('0' + std::uniform_int_distribution<int>(0, 9)(rng));
              break;
            }
          }
          break;
        }
        default:  // insert a byte
          if (!b.empty())
            b.insert(b.begin() + std::uniform_int_distribution<std::ptrdiff_t>(0, static_cast<std::ptrdiff_t>(b.size()) - 1)(rng),
                     static_cast<std::byte>(std::uniform_int_distribution<int>(0, 255)(rng)));
      }
    }
    try {
      mp::SafetensorsView v(b);
      ++accepted;
      // What the parser accepted must be readable within the buffer.
      for (const auto& t : v.tensors()) {
        auto raw = v.raw(t);
        REQUIRE(raw.data() >= b.data());
        REQUIRE(raw.data() + raw.size() <= b.data() + b.size());
        (void)v.read<float>(t.name);
      }
    } catch (const mp::RuleViolation&) {
      ++refused;
    }
  }
  CHECK(accepted > 0);
  CHECK(refused > 0);
}
