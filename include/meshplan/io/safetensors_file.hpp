#pragma once
// SafetensorsFile: a safetensors file mapped into memory (read-only) and checked when
// opened. Pages are touched only where a tensor, or the piece of it a rank reads, lies.
//
//   mp::SafetensorsFile f("block.safetensors");            // mmap; the header is checked
//   f.info("experts.down_proj").shape                      // {E, H, I}
//   mp::Tensor<float> w = f.read<float>("gate.weight");    // converted from F32/BF16/F16
//   mp::read_piece<float>(f.view(), name, layout, rank)    // shard-on-read (io/shard_read.hpp)

#include "meshplan/core/detail/public_begin.hpp"

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "meshplan/core/tensor.hpp"
#include "meshplan/io/detail/mapped_file.hpp"
#include "meshplan/io/safetensors_header.hpp"
#include "meshplan/io/safetensors_view.hpp"

namespace meshplan {

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path) : map_(std::make_shared<MappedFile>(path)) {
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
  std::shared_ptr<MappedFile> map_;
  std::unique_ptr<SafetensorsView> view_;
};

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
