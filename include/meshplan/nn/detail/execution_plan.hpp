#pragma once
// ExecutionPlan: what one rank does at each step of a whole model, read from the plan by
// the same walk that validates it (plan/detail/activation_check.hpp). For every flow step and
// mesh axis the walk gives the activation placement read and written and the style (or
// hook) acting there; the modules of nn/ ask this plan three things:
//
//   split(param)        the axis, if any, on which the style of a parameter's module
//                       splits its tensors (colwise, rowwise, vocab_parallel, ...)
//   hook(scope, enter)  the prepare-input / prepare-output hook on a module scope
//   token_group(param)  the axes on which the step's input holds different tokens on
//                       different ranks: the sum over tokens of its weight gradient
//                       runs over them, in global token order (ordered_sum)
//
// The input batch is split by whole sequences over the axes where tokens are not
// replicated (data and expert parallel axes: the data group), and a sequence-parallel
// axis splits the rank's tokens into equal chunks (torch.chunk on the flattened tokens).
// Global token order is data member first, then sequence chunk.
//
// The executor runs one model-splitting axis per module (the built-in plans have one);
// a plan that splits one module over two axes is refused here with a clear message.

#include "meshplan/core/detail/internal_header.hpp"  // refuses a direct include: see docs/api.md

#include <cstddef>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "meshplan/core/diagnostic.hpp"
#include "meshplan/mesh/group.hpp"
#include "meshplan/mesh/mesh_spec.hpp"
#include "meshplan/model/detail/flow.hpp"
#include "meshplan/model/inventory.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/plan/detail/activation_check.hpp"
#include "meshplan/plan/detail/mesh_view.hpp"
#include "meshplan/plan/plan.hpp"
#include "meshplan/plan/validate.hpp"

namespace meshplan::nn {

/// A style acting on one axis, with the group of ranks along that axis.
struct AxisStyle {
  StyleSpec style;
  std::size_t axis = 0;
  Group group;
  Act in = Act::replicate;   // the placement the step reads on this axis
  Act out = Act::replicate;  // and writes
};

/// Ranks holding different tokens of a step's input, and which of them holds each segment
/// of the global token order (`owners[i]`: a position in `group`).
struct TokenGroup {
  Group group;
  std::vector<index_t> owners;
};

class ExecutionPlan {
 public:
  ExecutionPlan(const ModelSpec& model, const MeshSpec& mesh, std::span<const EntrySpec> plan, index_t rank)
      : mesh_(mesh), rank_(rank), flow_(activation_flow(model)) {
    validate(model, mesh, plan);
    const std::vector<ParamInfo> params = inventory(model);
    std::vector<std::size_t> entry_of(params.size(), no_entry);
    for (std::size_t i = 0; i < params.size(); ++i) entry_of[i] = match_param(params[i].name, plan).first;
    on_axis_.assign(flow_.size(), std::vector<std::optional<StepOnAxis>>(mesh.ndim()));
    MeshSpecView view(mesh);
    enforce(walk_activation_flow(model, view.view(), plan, params, entry_of, flow_, [&](const StepOnAxis& s) {
      on_axis_[s.step][s.axis] = s;
    }));
    std::vector<std::string_view> data_axes;
    for (std::size_t a = 0; a < mesh.ndim(); ++a)
      if (!meshplan::detail::axis_splits_model(plan, mesh.axis_name(a))) data_axes.push_back(mesh.axis_name(a));
    data_ = mesh.group(rank, data_axes);
  }

  const MeshSpec& mesh() const noexcept { return mesh_; }
  index_t rank() const noexcept { return rank_; }
  /// The ranks the input batch is split over, by whole sequences.
  const Group& data_group() const noexcept { return data_; }

  /// The style splitting the tensors of the module whose primary parameter is `param`.
  std::optional<AxisStyle> split(std::string_view param) const { return acting(find(FlowStepKind::param, param)); }

  /// The hook acting on entry to (or exit from) a module scope.
  std::optional<AxisStyle> hook(std::string_view scope, bool enter) const {
    return acting(find(enter ? FlowStepKind::scope_enter : FlowStepKind::scope_exit, scope));
  }

  /// The placement a step reads on an axis.
  Act input_on(std::string_view param, std::size_t axis) const {
    return on_axis_[find(FlowStepKind::param, param)][axis]->in;
  }

  /// The ranks whose tokens at this step differ (and so whose weight-gradient terms add up).
  TokenGroup token_group(std::string_view param) const {
    const std::size_t step = find(FlowStepKind::param, param);
    std::vector<std::string_view> axes;
    std::optional<std::size_t> seq_axis;
    for (std::size_t a = 0; a < mesh_.ndim(); ++a) {
      if (on_axis_[step][a]->in != Act::shard_seq) continue;
      axes.push_back(mesh_.axis_name(a));
      if (is_data_axis(a)) continue;
      seq_axis = a;
    }
    TokenGroup t{mesh_.group(rank_, axes), {}};
    // Segments in global token order: data member major, sequence chunk minor.
    const std::vector<index_t> me = mesh_.coordinates(rank_);
    const index_t chunks = seq_axis ? mesh_.axis_size(*seq_axis) : 1;
    for (index_t d = 0; d < data_.size(); ++d) {
      std::vector<index_t> c = mesh_.coordinates(data_.global_rank(d));
      for (index_t s = 0; s < chunks; ++s) {
        if (seq_axis) c[*seq_axis] = s;
        // Coordinates off the group's axes are this rank's.
        std::vector<index_t> at = me;
        for (std::string_view name : axes) at[mesh_.index_of(name)] = c[mesh_.index_of(name)];
        const index_t global = mesh_.rank_of(at);
        for (index_t m = 0; m < t.group.size(); ++m)
          if (t.group.global_rank(m) == global) t.owners.push_back(m);
      }
    }
    return t;
  }

 private:
  bool is_data_axis(std::size_t a) const {
    const std::vector<index_t> me = mesh_.coordinates(rank_);
    // An axis is a data axis when moving along it stays in the data group.
    if (mesh_.axis_size(a) == 1) return true;
    std::vector<index_t> other = me;
    other[a] = (me[a] + 1) % mesh_.axis_size(a);
    const index_t r = mesh_.rank_of(other);
    for (index_t m = 0; m < data_.size(); ++m)
      if (data_.global_rank(m) == r) return true;
    return false;
  }

  std::size_t find(FlowStepKind kind, std::string_view name) const {
    for (std::size_t i = 0; i < flow_.size(); ++i)
      if (flow_[i].kind == kind && flow_[i].name == name) return i;
    throw RuleViolation(Message::rule("flow_step") << "the model has no step '" << name << "'");
  }

  std::optional<AxisStyle> acting(std::size_t step) const {
    std::optional<AxisStyle> found;
    for (std::size_t a = 0; a < mesh_.ndim(); ++a) {
      const auto& s = on_axis_[step][a];
      if (!s || !s->style || !splits_model(s->style->kind)) continue;  // the style table's word
      if (mesh_.axis_size(a) == 1) continue;  // a split over one rank moves nothing
      enforce(!found ? Message{}
                     : Message::rule("executor_one_split_axis")
                           << "'" << flow_[step].name << "' is split on two axes ('" << mesh_.axis_name(found->axis)
                           << "' and '" << mesh_.axis_name(a)
                           << "'); the model executor splits a module over one axis");
      found = AxisStyle{*s->style, a, mesh_.group(rank_, {mesh_.axis_name(a)}), s->in, s->out};
    }
    return found;
  }

  MeshSpec mesh_;
  index_t rank_;
  std::vector<FlowStep> flow_;
  std::vector<std::vector<std::optional<StepOnAxis>>> on_axis_;
  Group data_;
};

}  // namespace meshplan::nn
