#pragma once
// The whole-model tests' files: the golden checkpoints made by transformers
// (tools/golden/make_models.py), their batch, and scratch directories.

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include <unistd.h>

#include "meshplan/io/safetensors_file.hpp"
#include "meshplan/nn/causal_lm.hpp"

namespace model_files {

/// tests/data/golden/models/<family>: config.json, model.safetensors, input, expected,
/// gradients and sgd safetensors.
inline std::string golden(std::string_view family) {
  return std::string(MESHPLAN_TEST_DATA) + "/golden/models/" + std::string(family);
}

/// The golden batch (4 x 8 tokens with labels).
inline meshplan::nn::TokenBatch golden_batch(const std::string& dir) {
  meshplan::SafetensorsFile input(dir + "/input.safetensors");
  const auto ids = input.read<std::int64_t>("input_ids");
  const auto labels = input.read<std::int64_t>("labels");
  return {ids.dim(0), ids.dim(1), ids.vector(), labels.vector()};
}

/// A directory under the system's temporary directory, removed with this object.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(std::string_view tag)
      : path(std::filesystem::temp_directory_path() /
             ("meshplan_" + std::string(tag) + "_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

}  // namespace model_files
