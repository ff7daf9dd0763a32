#pragma once
// The cost model of a plan: per rank, the bytes of parameters, and per layer the bytes of
// every collective the plan implies in forward and in backward, for a dtype, a number of
// tokens and the model's top-k.
//
// Tokens: `tokens` is what one rank holds when no axis splits the sequence: the
// micro-batch of one tensor-parallel group (data and expert parallel axes have already
// split the batch). Where a plan splits tokens over a model axis (sequence parallelism, or
// a token split on entry to the MoE block), a rank holds `tokens / size` there.
//
// Bytes: `payload` is the size of the whole tensor a collective reduces or gathers;
// `sent` is what each rank sends with ring algorithms: all_reduce 2(n-1)/n of the payload,
// all_gather and reduce_scatter (n-1)/n, all_to_all (n-1)/n (routing assumed uniform, so
// that share of the rows goes to other ranks).
//
// Forward and backward collectives come from the styles' entries in the style table
// (style_table.hpp: each style's partial-sum reduction and its other collectives, at which
// steps of its module, moving what) and from the hooks: rowwise all-reduces (or
// reduce-scatters) its partial sums, vocab-parallel embeddings all-reduce,
// colwise_gather_output all-gathers, gather hooks all-gather, expert parallelism
// all-to-alls the routed rows out and back, expert tensor parallelism all-reduces the
// combined output, loss_parallel all-reduces three fp32 values per token, and the loss
// all-gathers every data member's per-token losses (fp32) over the data axes. Backward:
// every activation that is replicated on an axis and read by a module with split weights
// gets a partial gradient, reduced once per activation (all-reduce, or reduce-scatter where
// a gather hook produced it; for MLA's kv_b_proj the shared rope key's gradient with it);
// the adjoint of a reduce-scatter is an all-gather, of a token split an all-gather, of an
// all-to-all an all-to-all. Gradients of parameters that are replicated on an axis where
// their inputs differ between ranks (data, expert or sequence parallel axes, head-sharded
// norms) are summed once per training step (grad_sync: per rank on average over the group,
// as comm/detail/ordered_sum.hpp's chains send).
//
// Not counted: control messages (the agreement flags before collectives, comm/agree.hpp;
// the one count per member exchanged ahead of a gather of uneven pieces, as the loss's and
// the token hooks' row counts). All-to-alls assume uniform routing: (n-1)/n of the routed
// rows leave the rank; the real share depends on the router. tests/unit/model_bytes_test.cpp
// runs one training step of every family under every built-in plan and checks these
// figures against the bytes nn::CausalLM's collectives send, per pass and per part of the
// model (the all-to-alls at the step's own routing share).

#include "meshplan/core/detail/public_begin.hpp"

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "meshplan/core/dtype.hpp"
#include "meshplan/core/size.hpp"
#include "meshplan/mesh/mesh_spec.hpp"
#include "meshplan/model/detail/flow.hpp"
#include "meshplan/model/inventory.hpp"
#include "meshplan/model/model_spec.hpp"
#include "meshplan/placement/redistribute.hpp"
#include "meshplan/plan/detail/activation_check.hpp"
#include "meshplan/plan/detail/gradient_reduction.hpp"
#include "meshplan/plan/lower.hpp"
#include "meshplan/plan/detail/param_placement.hpp"
#include "meshplan/plan/plan.hpp"
#include "meshplan/plan/plan_walk.hpp"
#include "meshplan/plan/validate.hpp"

namespace meshplan {

struct CostInputs {
  DType dtype = DType::bf16;
  index_t tokens = 4096;
  index_t top_k = 0;  // 0: the model's num_experts_per_tok
};

struct CollectiveCost {
  std::string where;
  std::string axis;
  Collective collective;
  index_t group = 1;
  double payload_bytes = 0;
  double sent_bytes = 0;  // per rank
};

struct CostSection {
  std::string name;
  index_t count = 1;  // how many times the section runs (layers of this kind)
  std::vector<CollectiveCost> forward;
  std::vector<CollectiveCost> backward;

  static double sent(const std::vector<CollectiveCost>& cs) {
    double s = 0;
    for (const auto& c : cs) s += c.sent_bytes;
    return s;
  }
};

/// EP by all-to-all-v next to transformers' EP, which runs the whole batch of the EP group
/// on every EP rank, masks the experts it does not hold and all-reduces the full output.
struct EpComparison {
  std::string axis;
  index_t ep = 1;
  index_t tokens = 0;            // tokens a rank routes here
  double all_to_all_sent = 0;    // ours, per MoE layer forward, per rank (dispatch + combine)
  double all_reduce_sent = 0;    // transformers', per MoE layer forward, per rank
  index_t redundant_attention = 1;  // transformers' EP also repeats attention this many times
};

/// One parameter's gradient reduction per training step (all its layers together).
struct GradSyncCost {
  std::string param;
  std::string axes;      // the mesh axes reduced over, comma-separated
  index_t group = 1;     // the ranks of the reduction
  index_t layers = 1;    // the layers whose copies of the parameter it covers
  double sent_bytes = 0; // per rank, on average over the group, all its layers
};

struct CostReport {
  CostInputs inputs;
  index_t top_k = 0;
  double param_bytes = 0;      // per rank
  double grad_sync_bytes = 0;  // per training step, per rank
  std::vector<GradSyncCost> grad_sync;
  std::vector<CostSection> sections;
  std::vector<EpComparison> ep;

  /// Forward plus backward bytes each rank sends for one micro-batch through all layers.
  double sent_per_step() const {
    double s = 0;
    for (const auto& sec : sections)
      s += static_cast<double>(sec.count) * (CostSection::sent(sec.forward) + CostSection::sent(sec.backward));
    return s;
  }
};

namespace detail {
constexpr double ring_share(Collective c, index_t n) noexcept {
  if (n <= 1) return 0;
  const double f = static_cast<double>(n - 1) / static_cast<double>(n);
  return c == Collective::all_reduce ? 2 * f : f;
}

/// The width of the activation a parameter step writes and the one it reads.
constexpr index_t out_width(const ParamInfo& p, const ModelSpec& m) noexcept {
  switch (p.kind) {
    case ParamKind::linear:
    case ParamKind::lm_head: return p.dims[0].extent;
    case ParamKind::embedding: return m.hidden_size;
    case ParamKind::experts_gate_up: return p.dims[1].extent;
    default: return m.hidden_size;
  }
}
/// MLA's kv_b_proj writes the key and value heads; the keys also carry the rope key k_rope,
/// one head of qk_rope_head_dim shared by all heads (kv_a_proj_with_mqa's output beside the
/// kv latent). Where the heads are split, k_rope's gradient summed over a rank's heads is as
/// partial as the latent's: the input gradient reduced here is [kv latent | k_rope].
constexpr index_t mla_shared_rope_width(const ParamInfo& p, const ModelSpec& m) noexcept {
  return m.uses_mla() && p.name == "layers.*.self_attn.kv_b_proj.weight" ? m.qk_rope_head_dim : 0;
}
constexpr index_t in_width(const ParamInfo& p, const ModelSpec& m) noexcept {
  switch (p.kind) {
    case ParamKind::linear: return p.dims[1].extent + mla_shared_rope_width(p, m);
    default: return m.hidden_size;
  }
}

}  // namespace detail

inline CostReport cost_model(const ModelSpec& model, const MeshSpec& mesh, std::span<const EntrySpec> plan,
                             CostInputs inputs, index_t rank = 0) {
  const PlanWalk plan_walk(model, mesh, plan);
  const std::vector<ParamInfo>& params = plan_walk.params();
  const std::vector<FlowStep>& flow = plan_walk.flow();
  const std::size_t nax = mesh.ndim();

  // What every step does on every axis.
  std::vector<std::vector<std::optional<StepOnAxis>>> at(flow.size(), std::vector<std::optional<StepOnAxis>>(nax));
  plan_walk.walk([&](const StepOnAxis& s) { at[s.step][s.axis] = s; });

  std::vector<bool> model_axis(nax);
  for (std::size_t a = 0; a < nax; ++a) model_axis[a] = plan_walk.model_axis(a);

  const double b = static_cast<double>(size_of(inputs.dtype));
  const index_t k = inputs.top_k > 0 ? inputs.top_k : model.num_experts_per_tok;
  // Tokens a rank holds at a step when axis `whole` (no_axis: none) is taken as replicated.
  auto tokens_at = [&](std::size_t step, std::size_t whole) {
    double t = static_cast<double>(inputs.tokens);
    for (std::size_t a = 0; a < nax; ++a)
      if (a != whole && model_axis[a] && at[step][a] && at[step][a]->in == Act::shard_seq)
        t /= static_cast<double>(mesh.axis_size(a));
    return t;
  };
  auto param_of = [&](std::string_view name) -> const ParamInfo* {
    for (const auto& p : params)
      if (p.name == name) return &p;
    return nullptr;
  };

  CostReport report;
  report.inputs = inputs;
  report.top_k = k;
  report.sections = {{"embedding, final norm, output and loss", 1, {}, {}},
                     {"dense layer", model.dense_layers(), {}, {}},
                     {"MoE layer", model.moe_layers(), {}, {}}};

  // Slots whose partial gradient has been charged on an axis, and slots a gather hook wrote.
  std::vector<std::pair<std::string_view, std::size_t>> charged, gathered;
  auto contains = [](const auto& v, std::string_view slot, std::size_t a) {
    for (const auto& [s, x] : v)
      if (s == slot && x == a) return true;
    return false;
  };

  // Axes (and whether scattered) on which the routed experts' output is partial.
  std::vector<std::pair<std::string_view, bool>> expert_partial;
  auto contains_partial = [&](std::string_view axis, bool scatter) {
    for (const auto& [x, sc] : expert_partial)
      if (x == axis && sc == scatter) return true;
    return false;
  };

  for (std::size_t i = 0; i < flow.size(); ++i) {
    const FlowStep& step = flow[i];
    CostSection& section = report.sections[static_cast<std::size_t>(step.section)];
    // Slots are named per layer: a new section's "mlp_x" is another activation.
    if (i > 0 && flow[i - 1].section != step.section) {
      charged.clear();
      gathered.clear();
      expert_partial.clear();
    }
    const ParamInfo* p = step.kind == FlowStepKind::param ? param_of(step.name) : nullptr;
    // The loss is the mean over the whole batch's labelled tokens: every data member
    // all-gathers the others' per-token losses (fp32) and sums them in global token order.
    if (step.kind == FlowStepKind::loss) {
      index_t members = 1;
      std::string axes;
      for (std::size_t a = 0; a < nax; ++a) {
        if (model_axis[a] || mesh.axis_size(a) <= 1) continue;
        members *= mesh.axis_size(a);
        axes += (axes.empty() ? "" : ",") + std::string(mesh.axis_name(a));
      }
      const double payload = static_cast<double>(members) * tokens_at(i, nax) * 4;
      if (members > 1)
        section.forward.push_back({"loss (per-token losses)", std::move(axes), Collective::all_gather, members, payload,
                                   payload * detail::ring_share(Collective::all_gather, members)});
    }
    for (std::size_t a = 0; a < nax; ++a) {
      if (!at[i][a] || !at[i][a]->style) continue;
      const StyleSpec& style = *at[i][a]->style;
      const index_t n = mesh.axis_size(a);
      const double t = tokens_at(i, a);
      auto add = [&](std::vector<CollectiveCost>& to, Collective c, double payload, std::string where) {
        if (n <= 1 || payload <= 0) return;
        to.push_back({std::move(where), std::string(mesh.axis_name(a)), c, n, payload,
                      payload * detail::ring_share(c, n)});
      };
      std::string where(step.name);
      if (step.kind == FlowStepKind::scope_enter) where += " (entry)";
      if (step.kind == FlowStepKind::scope_exit) where += " (exit)";

      if (step.kind == FlowStepKind::scope_enter || step.kind == FlowStepKind::scope_exit) {
        const double payload = t * static_cast<double>(model.hidden_size) * b;
        if (style.from == Act::shard_seq && style.to == Act::replicate) {
          add(section.forward, Collective::all_gather, payload, where);
          gathered.emplace_back(step.out, a);  // its backward is charged where the gradient is partial
        } else if (style.from == Act::replicate && style.to == Act::shard_seq) {
          add(section.backward, Collective::all_gather, payload, where);
        }
        continue;
      }
      // The style's collectives at this step, from its entry in the style table.
      const StyleInfo& info = style_info(style.kind);
      if (step.kind != FlowStepKind::loss && !p) continue;
      const StepPosition pos{p ? p->kind : ParamKind::linear, step.in == input_slot, step.kind == FlowStepKind::loss};
      // The bytes a collective moves here (a switch on what it moves, not on the style).
      auto payload_of = [&](Payload what) -> double {
        switch (what) {
          case Payload::none: return 0;
          case Payload::output: return p ? t * static_cast<double>(detail::out_width(*p, model)) * b : 0;
          case Payload::input_gradient: return p ? t * static_cast<double>(detail::in_width(*p, model)) * b : 0;
          case Payload::routed_rows:
            return t * static_cast<double>(k) * static_cast<double>(model.hidden_size) * b;
          case Payload::expert_counts: return static_cast<double>(model.num_experts) * 8;
          case Payload::routing_weights: return t * static_cast<double>(k) * 4;
          case Payload::loss_terms: return 3 * t * 4;
        }
        return 0;
      };
      auto where_of = [&](const StyleCollective& c) {
        if (c.label.empty()) return where;
        // Routed rows and counts are the experts module's exchange, not one parameter's.
        const bool on_module = c.payload == Payload::routed_rows || c.payload == Payload::expert_counts;
        const std::string_view name = on_module ? step.name.substr(0, step.name.rfind('.')) : step.name;
        return std::string(name) + " (" + std::string(c.label) + ")";
      };

      // Partial sums: reduced in the forward pass, the adjoint in the backward. The MoE block
      // adds the shared experts' partial sums to the routed experts' when both are partial
      // over this axis the same way, and reduces them once.
      if (info.reduce.how != PartialReduce::none && happens_at(info.reduce.at, pos)) {
        const bool scatter = info.reduce.how == PartialReduce::reduce_scatter;
        if (!(step.name.starts_with("layers.*.mlp.shared_experts.") && contains_partial(mesh.axis_name(a), scatter))) {
          const double payload = payload_of(Payload::output);
          add(section.forward, *forward_collective(info.reduce.how), payload, where);
          if (auto back = adjoint(info.reduce.how)) add(section.backward, *back, payload, where);
        }
      }
      for (const StyleCollective& c : info.forward) {
        if (c.payload == Payload::none || !happens_at(c.at, pos)) continue;
        add(section.forward, c.collective, payload_of(c.payload), where_of(c));
        // The dispatch of routed rows, next to transformers' EP on the same tokens.
        if (c.payload == Payload::routed_rows && c.at == At::opening)
          report.ep.push_back({std::string(mesh.axis_name(a)), n, static_cast<index_t>(t),
                               2 * payload_of(c.payload) * detail::ring_share(Collective::all_to_all, n),
                               t * static_cast<double>(n) * static_cast<double>(model.hidden_size) * b *
                                   detail::ring_share(Collective::all_reduce, n),
                               n});
      }
      for (const StyleCollective& c : info.backward) {
        if (c.payload == Payload::none || !happens_at(c.at, pos)) continue;
        if (c.payload == Payload::input_gradient) {
          // The input's gradient is partial over this axis: reduce it once per activation.
          if (at[i][a]->in != Act::replicate || contains(charged, step.in, a)) continue;
          charged.emplace_back(step.in, a);
          add(section.backward, contains(gathered, step.in, a) ? Collective::reduce_scatter : c.collective,
              payload_of(c.payload), where_of(c));
          continue;
        }
        add(section.backward, c.collective, payload_of(c.payload), where_of(c));
        // Each routed row's output is a partial sum here, so the gradient of its routing
        // weight, <y, dy>, is partial too; the shared experts' partial sums join these.
        if (c.payload == Payload::routing_weights)
          expert_partial.emplace_back(mesh.axis_name(a), info.reduce.how == PartialReduce::reduce_scatter);
      }
    }
  }

  // Parameter bytes and the per-step gradient reductions (plan/detail/gradient_reduction.hpp:
  // the axes and the chain; comm/detail/ordered_sum.hpp: the bytes, on average over the group one
  // gradient per hand-over plus the broadcast: with one segment per member, what a ring
  // all-reduce sends; more where a member's tokens interleave with others', as for the
  // experts under ep_tp and ep_sp).
  for (const GradientReduction& r : gradient_reductions(model, mesh, plan, rank)) {
    const LoweredParam& l = r.param;
    const double bytes = static_cast<double>(l.local_elements()) * static_cast<double>(l.info.count) * b;
    report.param_bytes += bytes;
    const GradientChain chain = gradient_chain(mesh, rank, r, mesh.ndim());
    const index_t group = chain.group.size();
    const double sent = chain.sent_bytes(bytes);
    report.grad_sync_bytes += sent;
    if (!r.axes.empty()) {
      std::string axes;
      for (std::size_t a : r.axes) axes += (axes.empty() ? "" : ",") + std::string(mesh.axis_name(a));
      report.grad_sync.push_back({std::string(l.info.name), std::move(axes), group, l.info.count, sent});
    }
  }
  return report;
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
