#pragma once
// SafetensorsSet: a checkpoint's tensors spread over several safetensors files, as
// transformers saves large models: model.safetensors.index.json maps every tensor name to
// the file holding it ({"weight_map": {"model.embed_tokens.weight":
// "model-00001-of-00004.safetensors", ...}}). A set of one file serves a plain
// model.safetensors the same way. Shard-on-read (io/shard_read.hpp) reads from either.
//
// Every file is mapped (pages are touched only where a rank's pieces lie); messages name
// the file holding the tensor, or the index for a tensor it does not list.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/io/detail/io_rules.hpp"
#include "meshplan/io/safetensors_file.hpp"
#include "meshplan/io/safetensors_header.hpp"
#include "meshplan/io/safetensors_view.hpp"

namespace meshplan {

class SafetensorsSet {
 public:
  /// One file.
  static SafetensorsSet single(const std::string& path) {
    SafetensorsSet s;
    s.index_ = path;
    s.files_.push_back(std::make_shared<SafetensorsFile>(path));
    for (const auto& t : s.files_.front()->tensors()) s.file_of_.emplace(t.name, 0);
    return s;
  }

  /// The files an index.json names, relative to its directory.
  static SafetensorsSet from_index(const std::string& index_path) {
    SafetensorsSet s;
    s.index_ = index_path;
    std::ifstream in(index_path);
    if (!in) throw RuleViolation(io_rules::io_error("open", index_path));
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::parse_error& e) {
      throw RuleViolation(Message::rule("checkpoint_index") << "'" << index_path << "' is not valid JSON: " << e.what());
    }
    if (!j.is_object() || !j.contains("weight_map") || !j.at("weight_map").is_object())
      throw RuleViolation(Message::rule("checkpoint_index") << "'" << index_path << "' has no \"weight_map\" object");
    const std::filesystem::path dir = std::filesystem::path(index_path).parent_path();
    std::map<std::string, std::size_t> opened;
    for (const auto& [name, file] : j.at("weight_map").items()) {
      if (!file.is_string())
        throw RuleViolation(Message::rule("checkpoint_index")
                            << "'" << index_path << "' maps '" << name << "' to something not a file name");
      const std::string f = file.get<std::string>();
      if (f.find('/') != std::string::npos || f == "..")
        throw RuleViolation(Message::rule("checkpoint_index")
                            << "'" << index_path << "' names '" << f << "', not a file beside it");
      auto [it, added] = opened.emplace(f, s.files_.size());
      if (added) s.files_.push_back(std::make_shared<SafetensorsFile>((dir / f).string()));
      s.file_of_.emplace(name, it->second);
    }
    return s;
  }

  bool contains(std::string_view name) const {
    const auto it = file_of_.find(std::string(name));
    return it != file_of_.end() && files_[it->second]->contains(name);
  }
  const TensorInfo& info(std::string_view name) const { return file(name).info(name); }
  std::span<const std::byte> raw(const TensorInfo& t) const { return file(t.name).raw(t); }
  const std::string& source_of(std::string_view name) const {
    const auto it = file_of_.find(std::string(name));
    return it == file_of_.end() ? index_ : files_[it->second]->view().source();
  }
  template <class T>
  Tensor<T> read(std::string_view name) const {
    return file(name).read<T>(name);
  }

 private:
  const SafetensorsView& file(std::string_view name) const {
    const auto it = file_of_.find(std::string(name));
    if (it == file_of_.end()) throw RuleViolation(io_rules::tensor_missing(index_, name));
    return files_[it->second]->view();
  }

  std::string index_;  // the index (or the single file): named for tensors it does not list
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::size_t, std::less<>> file_of_;
};

}  // namespace meshplan
