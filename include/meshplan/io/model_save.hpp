#pragma once
// Saving a whole model that runs sharded:
//
//   save_model(comm, model, dir)     every piece gathered; rank 0 writes config.json and
//                                    model.safetensors as transformers saves them (experts
//                                    one tensor per expert under their hub names), so
//                                    from_pretrained(dir) loads it
//   save_sharded(comm, model, dir)   every rank writes its own pieces, rank-R-of-N.safetensors,
//                                    each tensor's layout in the file's metadata; fast, no
//                                    gather. ShardedCheckpoint reads such a directory back
//                                    onto any mesh and plan (resharding)
//
// Both are collective over all ranks (every rank calls them).

#include "meshplan/core/detail/public_begin.hpp"

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "meshplan/comm/agree.hpp"
#include "meshplan/core/diagnostic.hpp"
#include "meshplan/io/config_json.hpp"
#include "meshplan/io/detail/gather.hpp"
#include "meshplan/io/detail/layout_text.hpp"
#include "meshplan/io/detail/io_rules.hpp"
#include "meshplan/io/safetensors_file.hpp"
#include "meshplan/io/safetensors_writer.hpp"
#include "meshplan/io/shard_read.hpp"
#include "meshplan/nn/causal_lm.hpp"

namespace meshplan {

namespace detail {
/// Writes `config_json` (the source checkpoint's text) and agrees that the directory exists.
template <class C>
void prepare_save_dir(C& comm, const std::string& dir, const std::string& config_json) {
  Message problem;
  if (comm.rank() == 0) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    std::ofstream out(std::filesystem::path(dir) / "config.json");
    out << config_json;
    if (ec || !out) problem = io_rules::io_error("write config.json into", dir);
  }
  agree(comm, problem, comm.world_group());
}

/// "model.layers.1.mlp." -> the block's prefix in the family's hub checkpoints.
inline std::string hub_block_prefix(Family f, const std::string& prefix) {
  if (f != Family::mixtral) return prefix;
  return prefix.substr(0, prefix.rfind("mlp.")) + "block_sparse_moe.";
}
}  // namespace detail

/// Gathers every piece and writes a transformers-loadable directory (rank 0 writes).
template <class C, class Model>
void save_model(C& comm, Model& model, const std::string& dir, const std::string& config_json) {
  detail::prepare_save_dir(comm, dir, config_json);
  const Family family = model.model().family;
  SafetensorsWriter out;
  for (const auto& p : model.pieces()) {
    Tensor<float> whole = gather_full(comm, *p.value, p.layout);
    if (comm.rank() != 0) continue;
    const auto experts = p.name.find("mlp.experts.");
    if (experts == std::string::npos) {
      const auto gate = p.name.find("mlp.gate.");
      out.add(gate == std::string::npos ? p.name
                                        : detail::hub_block_prefix(family, p.name.substr(0, gate + 4)) +
                                              p.name.substr(gate + 4),
              whole);
      continue;
    }
    // Fused experts -> one tensor per expert, as transformers saves them.
    const std::string prefix = detail::hub_block_prefix(family, p.name.substr(0, experts + 4));
    const ExpertNaming& n = family == Family::mixtral ? mixtral_expert_naming : hub_expert_naming;
    const index_t E = whole.dim(0), rows = whole.dim(1), cols = whole.dim(2);
    const bool gate_up = p.name.ends_with("gate_up_proj");
    for (index_t e = 0; e < E; ++e) {
      const float* base = whole.data() + e * rows * cols;
      if (gate_up) {
        const index_t I = rows / 2;
        out.add(prefix + detail::expert_name(n.gate, e), Tensor<float>({I, cols}, {base, base + I * cols}));
        out.add(prefix + detail::expert_name(n.up, e), Tensor<float>({I, cols}, {base + I * cols, base + 2 * I * cols}));
      } else {
        out.add(prefix + detail::expert_name(n.down, e), Tensor<float>({rows, cols}, {base, base + rows * cols}));
      }
    }
  }
  Message problem;
  if (comm.rank() == 0) {
    out.metadata("format", "pt");
    try {
      out.write((std::filesystem::path(dir) / "model.safetensors").string());
    } catch (const std::exception& e) {
      problem = Message::rule("checkpoint_write") << e.what();
    }
  }
  agree(comm, problem, comm.world_group());
}

/// Every rank writes its pieces and their layouts (no gather).
template <class C, class Model>
void save_sharded(C& comm, Model& model, const std::string& dir, const std::string& config_json) {
  detail::prepare_save_dir(comm, dir, config_json);
  SafetensorsWriter out;
  const auto pieces = model.pieces();
  out.metadata("meshplan.mesh", pieces.empty() ? "" : pieces.front().layout.mesh().to_string());
  for (const auto& p : pieces) {
    out.add(p.name, *p.value);
    out.metadata("meshplan.layout." + p.name, layout_text(p.layout));
  }
  const std::string file = "rank-" + std::to_string(comm.rank()) + "-of-" + std::to_string(comm.size()) +
                           ".safetensors";
  Message problem;
  try {
    out.write((std::filesystem::path(dir) / file).string());
  } catch (const std::exception& e) {
    problem = Message::rule("checkpoint_write") << e.what();
  }
  agree(comm, problem, comm.world_group());
}

/// A directory written by save_sharded, read onto any mesh and plan: each piece asked for is
/// cut from the whole tensor, put together from the saved pieces by their saved layouts.
class ShardedCheckpoint {
 public:
  explicit ShardedCheckpoint(const std::string& dir) {
    const std::filesystem::path root(dir);
    spec_ = model_from_config_file((root / "config.json").string());
    index_t ranks = -1;
    for (index_t r = 0; ranks < 0 || r < ranks; ++r) {
      if (ranks < 0) {
        for (const auto& entry : std::filesystem::directory_iterator(root)) {
          const std::string name = entry.path().filename().string();
          if (name.starts_with("rank-0-of-")) ranks = std::stoll(name.substr(10));
        }
        enforce(ranks > 0 ? Message{}
                          : Message::rule("checkpoint_files")
                                << "'" << dir << "' holds no rank-0-of-N.safetensors (save_sharded's files)");
      }
      files_.push_back(std::make_shared<SafetensorsFile>(
          (root / ("rank-" + std::to_string(r) + "-of-" + std::to_string(ranks) + ".safetensors")).string()));
    }
    mesh_ = MeshSpec::parse(files_.front()->metadata().at("meshplan.mesh"));
    enforce(mesh_.size() == ranks ? Message{}
                                  : Message::rule("checkpoint_files") << "'" << dir << "' was saved by "
                                                                      << mesh_.size() << " ranks, not " << ranks);
  }

  const ModelSpec& spec() const noexcept { return spec_; }

  /// The whole tensor `name` (fused expert names), from every rank's piece.
  Tensor<float> whole(const std::string& name) const {
    const auto& meta = files_.front()->metadata();
    const auto found = meta.find("meshplan.layout." + name);
    if (found == meta.end())
      throw RuleViolation(io_rules::tensor_missing(files_.front()->view().source(), name));
    const LayoutSpec layout = parse_layout_text(found->second, mesh_);
    Tensor<float> full(layout.global_extents());
    for (std::size_t r = 0; r < files_.size(); ++r)
      place_piece(files_[r]->read<float>(name), layout, static_cast<index_t>(r), full);
    return full;
  }

  nn::ModelSource source() const {
    auto self = std::make_shared<ShardedCheckpoint>(*this);
    auto piece = [self](const std::string& name, const LayoutSpec& layout, index_t rank) {
      const Tensor<float> full = self->whole(name);
      enforce(tensor_rules::shape_matches("tensor '" + name + "' of the sharded checkpoint", full.shape(),
                                          layout.global_extents()));
      return local_piece(full, layout, rank);
    };
    return {piece, [piece](const std::string& prefix) {
              auto read = [piece, prefix](std::string_view n, const LayoutSpec& l, index_t r) {
                return piece(prefix + std::string(n), l, r);
              };
              return MoEWeightLoader<float>{read, read};
            }};
  }

 private:
  ModelSpec spec_;
  MeshSpec mesh_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
};

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
