#pragma once
// A transformers checkpoint directory as a model's source: config.json and
// model.safetensors, or model.safetensors.index.json and the files it names (how
// transformers saves large models), each rank reading only its pieces (shard-on-read). MoE
// blocks read fused experts or per-expert hub names alike (io/shard_read.hpp).
//
//   mp::ModelCheckpoint ckpt("path/to/dir");
//   mp::nn::CausalLM<Mesh, Plan> model(ckpt.spec(), mesh, rank, ckpt.source());
//
// A missing file, tensor, a wrong shape or a config the checkpoint does not match is a
// RuleViolation naming the file and the tensor.

#include "meshplan/core/detail/public_begin.hpp"

#include <filesystem>
#include <memory>
#include <string>
#include <utility>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/io/config_json.hpp"
#include "meshplan/io/moe_checkpoint.hpp"
#include "meshplan/io/detail/safetensors_set.hpp"
#include "meshplan/io/shard_read.hpp"
#include "meshplan/nn/causal_lm.hpp"

namespace meshplan {

class ModelCheckpoint {
 public:
  explicit ModelCheckpoint(const std::string& dir) : dir_(dir) {
    const std::filesystem::path root(dir);
    spec_ = model_from_config_file((root / "config.json").string());
    const std::filesystem::path weights = root / "model.safetensors", index = root / "model.safetensors.index.json";
    if (std::filesystem::exists(weights))
      file_ = std::make_shared<SafetensorsSet>(SafetensorsSet::single(weights.string()));
    else if (std::filesystem::exists(index))
      file_ = std::make_shared<SafetensorsSet>(SafetensorsSet::from_index(index.string()));
    else
      throw RuleViolation(Message::rule("checkpoint_files")
                          << "checkpoint '" << dir << "' has neither model.safetensors nor model.safetensors.index.json");
  }

  const ModelSpec& spec() const noexcept { return spec_; }
  /// The checkpoint's tensors, whichever files hold them.
  const SafetensorsSet& files() const noexcept { return *file_; }

  /// The source a CausalLM loads from; it keeps the mapped file alive.
  nn::ModelSource source() const {
    std::shared_ptr<SafetensorsSet> f = file_;
    return {[f](const std::string& name, const LayoutSpec& layout, index_t rank) {
              return read_piece<float>(*f, name, layout, rank);
            },
            [f](const std::string& block) {
              // Mixtral's hub checkpoints keep the block under block_sparse_moe.
              std::string prefix = block;
              if (!f->contains(block + "gate.weight"))
                if (auto at = block.rfind("mlp."); at != std::string::npos) {
                  std::string alt = block.substr(0, at) + "block_sparse_moe.";
                  if (f->contains(alt + "gate.weight")) prefix = alt;
                }
              MoEWeightLoader<float> l = moe_weights_from<float>(*f, prefix);
              // The loader refers to the view; keep the file with it.
              return MoEWeightLoader<float>{[f, w = std::move(l.weight)](std::string_view n, const LayoutSpec& s,
                                                                        index_t r) { return w(n, s, r); },
                                            [f, b = std::move(l.bias)](std::string_view n, const LayoutSpec& s,
                                                                      index_t r) { return b(n, s, r); }};
            }};
  }

 private:
  std::string dir_;
  ModelSpec spec_;
  std::shared_ptr<SafetensorsSet> file_;
};

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
