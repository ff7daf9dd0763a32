// The cost model against the executor: one training step (forward with labels, then
// backward) of every family's tiny model under every built-in plan on several meshes, the
// bytes every collective sent on every rank (CommStats, by label) against cost_model()'s
// figures, per pass and per part of the model, exactly (bytes are integers: only floating
// rounding is allowed).
//
// Measured: the sum over the ranks divided by the world size, since an ordered sum (the
// parameter gradients' chains, comm/detail/ordered_sum.hpp) sends different amounts on different
// ranks and the cost model's grad_sync is the average per rank. Predicted: every section's
// forward and backward collectives times its count (dense layers, MoE layers), and
// grad_sync. `CostInputs::tokens` is the tokens of one data member: the batch divided over
// the axes where tokens are not replicated (data, and expert parallel outside the MoE block).
//
// Labels (nn/*.hpp, moe/moe_block.hpp) map to parts of the model by the table `labels`; a
// label missing from it fails the test, so a new collective needs its line there. Three
// things are set apart, each for the reason written where it is done:
//   - control messages, which the cost model does not count: the agreement flags before
//     collectives and the count each member announces before a gather of uneven pieces;
//   - the all-to-alls of routed rows: the cost model assumes uniform routing, the test takes
//     the cost model's payload and the step's own share of rows that left their rank;
//   - known excess of the executor over what the plan needs (`known_excess`), added to the
//     prediction by formula, so that any other difference still fails.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/io/model_checkpoint.hpp"
#include "meshplan/model/detail/flow.hpp"
#include "meshplan/model/inventory.hpp"
#include "meshplan/nn/causal_lm.hpp"
#include "meshplan/nn/random_source.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/cost_model.hpp"
#include "../support/model_files.hpp"
#include "../support/moe_cases.hpp"

namespace mp = meshplan;
using mp::index_t;
using moe_cases::Sizes;

namespace {

using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep">, mp::Axis<"tp">>;

// ---- Parts of the model and the labels of their collectives ---------------------------------

enum class Part { ends, attention, layer_norms, dense_mlp, moe, control };
constexpr std::size_t part_count = 5;  // the parts compared (control is not)
constexpr std::string_view part_names[part_count] = {"embedding, final norm, head and loss", "attention",
                                                     "layer norms", "dense MLP", "MoE block"};

/// What a collective moves: activations (or their gradients), or a parameter's gradient
/// summed over the ranks (the cost model's grad_sync).
enum class Kind { activation, gradient_sum, control };

struct Label {
  std::string_view name;
  Part part;
  Kind kind = Kind::activation;
};

// Every label a training step's collectives use.
constexpr Label labels[] = {
    // Embedding, final norm, output head and loss (nn/detail/embedding.hpp, output_head.hpp).
    {"embedding", Part::ends},
    {"embedding backward", Part::ends},
    {"embedding grad", Part::ends, Kind::gradient_sum},
    {"final norm grad", Part::ends, Kind::gradient_sum},
    {"lm_head gather", Part::ends},
    {"lm_head gather logits", Part::ends},
    {"lm_head input grad", Part::ends},
    {"lm_head grad", Part::ends, Kind::gradient_sum},
    {"loss parallel", Part::ends},
    {"loss", Part::ends},
    // Attention (nn/detail/attention.hpp, mla_attention.hpp): its scope, projections and norms.
    {"attention gather", Part::attention},
    {"attention o_proj", Part::attention},
    {"attention exit", Part::attention},
    {"attention backward gather", Part::attention},
    {"attention input grad", Part::attention},
    {"mla latent grads", Part::attention},
    {"mla q input grads", Part::attention},
    {"attention grad", Part::attention, Kind::gradient_sum},
    {"attention norm grad", Part::attention, Kind::gradient_sum},
    // input_layernorm and post_attention_layernorm (nn/detail/rms_norm.hpp).
    {"layer norm grad", Part::layer_norms, Kind::gradient_sum},
    // Dense MLPs (nn/detail/dense_mlp.hpp).
    {"dense mlp gather", Part::dense_mlp},
    {"dense mlp down", Part::dense_mlp},
    {"dense mlp exit", Part::dense_mlp},
    {"dense mlp backward gather", Part::dense_mlp},
    {"dense mlp input grad", Part::dense_mlp},
    {"dense mlp grad", Part::dense_mlp, Kind::gradient_sum},
    // The MoE block (moe/moe_block.hpp).
    {"mlp entry", Part::moe},
    {"mlp exit", Part::moe},
    {"mlp hook backward", Part::moe},
    {"mlp exit backward", Part::moe},
    {"counts", Part::moe},
    {"dispatch", Part::moe},
    {"combine", Part::moe},
    {"dispatch backward", Part::moe},
    {"combine backward", Part::moe},
    {"expert tp", Part::moe},
    {"shared tp", Part::moe},
    {"expert tp (routing weights)", Part::moe},
    {"expert tp backward", Part::moe},
    {"shared tp backward", Part::moe},
    {"router gradient", Part::moe, Kind::gradient_sum},
    {"expert gradients", Part::moe, Kind::gradient_sum},
    {"shared expert gradients", Part::moe, Kind::gradient_sum},
    // Control messages, not data: the cost model leaves them out. "agreement" is the 4-byte
    // flag every rank all-reduces before collectives that bad input could strand
    // (comm/agree.hpp); "sizes" is what MeasuringComm relabels every all-gather of index_t
    // to: the one count per member announced before an all_gather_v of uneven pieces (the
    // loss's token counts, the token hooks' row counts).
    {"agreement", Part::control, Kind::control},
    {"sizes", Part::control, Kind::control},
};

const Label* find_label(std::string_view name) {
  for (const Label& l : labels)
    if (l.name == name) return &l;
  return nullptr;
}

/// The part of a cost model entry: the ends section, or by the module it names.
Part part_of(std::string_view where, mp::FlowSection section) {
  if (section == mp::FlowSection::ends) return Part::ends;
  if (where.starts_with("layers.*.self_attn")) return Part::attention;
  if (where.starts_with("layers.*.mlp")) return section == mp::FlowSection::dense_layer ? Part::dense_mlp : Part::moe;
  return Part::layer_norms;
}

/// The part of a parameter (grad_sync): by its module's step in the model's flow.
Part part_of_param(std::string_view param, const mp::ModelSpec& model) {
  if (param.starts_with("layers.*.self_attn.")) return Part::attention;
  if (param.starts_with("layers.*.input_layernorm.") || param.starts_with("layers.*.post_attention_layernorm."))
    return Part::layer_norms;
  if (!param.starts_with("layers.*.mlp.")) return Part::ends;
  const std::string_view module = param.substr(0, param.rfind('.'));
  for (const mp::FlowStep& s : mp::activation_flow(model))
    if (s.kind == mp::FlowStepKind::param && s.name.substr(0, s.name.rfind('.')) == module)
      return s.section == mp::FlowSection::dense_layer ? Part::dense_mlp : Part::moe;
  FAIL("no flow step for the module of '" << param << "'");
  return Part::moe;
}

// ---- Measuring ------------------------------------------------------------------------------

/// ThreadComm, and two things it notes on the way:
///  - the expert counts each rank exchanges before the dispatch ("counts", its rows per
///    expert): the routed rows and those whose expert lives on another member of the EP
///    group (experts are contiguous blocks per member, moe/detail/dispatch_plan.hpp);
///  - every all-gather of index_t is relabelled "sizes": those are the counts announced
///    before an all_gather_v, control messages (see `labels`).
class MeasuringComm : public mp::ThreadComm {
 public:
  using mp::ThreadComm::ThreadComm;
  double routed_rows = 0, off_rank_rows = 0;

  template <mp::CommElement T>
  void all_to_all(std::span<const T> send, std::span<T> recv, const mp::Group& g, std::string_view label = {}) {
    if constexpr (std::is_same_v<T, index_t>)
      if (label == "counts") {
        const auto experts = static_cast<index_t>(send.size());
        const index_t per_member = experts / g.size();
        for (index_t e = 0; e < experts; ++e) {
          const auto rows = static_cast<double>(send[static_cast<std::size_t>(e)]);
          routed_rows += rows;
          if (e / per_member != g.rank) off_rank_rows += rows;
        }
      }
    mp::ThreadComm::all_to_all(send, recv, g, label);
  }

  template <mp::CommElement T>
  void all_gather(std::span<const T> send, std::span<T> recv, const mp::Group& g, std::string_view label = {}) {
    if constexpr (std::is_same_v<T, index_t>) label = "sizes";
    mp::ThreadComm::all_gather(send, recv, g, label);
  }
};

/// Bytes per rank (the sum over ranks / world size) of one part.
struct Bytes {
  double forward = 0, backward = 0, gradients = 0;  // backward: activations' gradients; gradients: grad_sync
};
using ByPart = std::array<Bytes, part_count>;

struct Measured {
  ByPart parts{};
  std::map<std::string, double> forward, backward;  // by label, per rank
  double routed_rows = 0, off_rank_rows = 0;          // over all ranks and MoE layers
  std::vector<std::string> unknown;                   // labels missing from `labels`
};

/// A model to run: its spec, weights and batch.
struct ModelCase {
  std::string name;
  mp::ModelSpec spec;
  mp::nn::ModelSource source;
  mp::nn::TokenBatch batch;
};

template <class Plan>
Measured measure(const ModelCase& c, Sizes sizes) {
  const Mesh mesh{sizes.dp, sizes.ep, sizes.tp};
  const mp::MeshSpec spec(mesh);
  Measured out;
  std::mutex m;
  mp::ThreadWorld world(spec.size());
  world.mp::Rendezvous::run([&](index_t r) { return MeasuringComm(world, r); }, [&](MeasuringComm& comm) {
    auto model = mp::nn::CausalLM<Mesh, Plan>::load(comm, c.spec, mesh, c.source, 1);
    comm.stats().clear();
    model->forward(comm, c.batch, mp::nn::Mode::train);
    const mp::CommStats forward = comm.stats();
    comm.stats().clear();
    model->backward(comm);
    std::lock_guard lock(m);
    for (const auto& [label, e] : forward.by_label) out.forward[label] += e.bytes;
    for (const auto& [label, e] : comm.stats().by_label) out.backward[label] += e.bytes;
    out.routed_rows += comm.routed_rows;
    out.off_rank_rows += comm.off_rank_rows;
  });
  const double world_size = static_cast<double>(spec.size());
  for (auto* pass : {&out.forward, &out.backward})
    for (auto& [label, bytes] : *pass) {
      bytes /= world_size;
      const Label* l = find_label(label);
      if (!l) {
        out.unknown.push_back(label);
        continue;
      }
      if (l->kind == Kind::control) continue;
      Bytes& b = out.parts[static_cast<std::size_t>(l->part)];
      if (pass == &out.forward) b.forward += bytes;
      else (l->kind == Kind::gradient_sum ? b.gradients : b.backward) += bytes;
    }
  return out;
}

// ---- Predicting -----------------------------------------------------------------------------

bool routed_rows_entry(const mp::CollectiveCost& c) {
  return c.collective == mp::Collective::all_to_all && (c.where.ends_with("(dispatch)") || c.where.ends_with("(combine)"));
}

/// The cost model's figures by part, the all-to-alls of routed rows at `off_rank_share` of
/// their payload instead of the uniform routing's (n - 1) / n.
ByPart predicted(const mp::CostReport& cost, const mp::ModelSpec& model, double off_rank_share) {
  ByPart parts{};
  for (std::size_t s = 0; s < cost.sections.size(); ++s) {
    const mp::CostSection& section = cost.sections[s];
    const auto count = static_cast<double>(section.count);
    auto sent = [&](const mp::CollectiveCost& c) {
      return count * (routed_rows_entry(c) ? c.payload_bytes * off_rank_share : c.sent_bytes);
    };
    for (const auto& c : section.forward)
      parts[static_cast<std::size_t>(part_of(c.where, static_cast<mp::FlowSection>(s)))].forward += sent(c);
    for (const auto& c : section.backward)
      parts[static_cast<std::size_t>(part_of(c.where, static_cast<mp::FlowSection>(s)))].backward += sent(c);
  }
  for (const mp::GradSyncCost& g : cost.grad_sync)
    parts[static_cast<std::size_t>(part_of_param(g.param, model))].gradients += g.sent_bytes;
  return parts;
}

// ---- What the executor sends beyond the plan's needs ----------------------------------------

struct RunContext {
  const mp::ModelSpec& model;
  const mp::MeshSpec& mesh;
  const mp::CostReport& cost;
  index_t data_members;  // the ranks the batch is split over
};

/// A known difference where the executor is wasteful and the cost model is right: the
/// excess per rank it adds to one part and pass, computed from the model, mesh and cost.
struct KnownExcess {
  std::string_view what;
  Part part;
  double Bytes::*pass;
  double (*bytes)(const RunContext&);
};

index_t axis_size(const mp::MeshSpec& mesh, std::string_view name) {
  for (std::size_t a = 0; a < mesh.ndim(); ++a)
    if (mesh.axis_name(a) == name) return mesh.axis_size(a);
  return 1;
}

double ring_all_reduce(double bytes, index_t n) { return n > 1 ? bytes * 2 * double(n - 1) / double(n) : 0; }

const KnownExcess known_excess[] = {
    // Qwen3's q_norm / k_norm see a rank's heads only on a tp axis, and their tokens differ
    // over the data members: the plan needs one ordered chain over both (the cost model's
    // grad_sync: what a ring all-reduce over dp x tp sends); nn/detail/attention.hpp sums over the
    // data members first (ordered_sum), then all-reduces over tp: 2(d-1)/d + 2(t-1)/t of the
    // weights instead of 2(dt-1)/dt.
    {"q/k norm gradients summed over data members, then all-reduced over tp", Part::attention, &Bytes::gradients,
     [](const RunContext& r) {
       double excess = 0;
       const index_t tp = axis_size(r.mesh, "tp");
       if (r.data_members <= 1 || tp <= 1) return 0.0;
       for (const mp::GradSyncCost& g : r.cost.grad_sync) {
         if (g.param != "layers.*.self_attn.q_norm.weight" && g.param != "layers.*.self_attn.k_norm.weight") continue;
         double bytes = 0;
         for (const mp::ParamInfo& p : mp::inventory(r.model))
           if (p.name == g.param) bytes = static_cast<double>(p.elements() * p.count) * 4;
         excess += ring_all_reduce(bytes, r.data_members) + ring_all_reduce(bytes, tp) - g.sent_bytes;
       }
       return excess;
     }},
    // MLA without q_lora_rank under sequence parallelism: q_proj's input gradient is partial
    // over tp and its tokens were gathered on entry; the plan needs a reduce-scatter onto the
    // rank's shard (the cost model's), nn/detail/mla_attention.hpp all-reduces it whole and the
    // scope keeps the shard: twice the bytes.
    {"MLA q_proj input gradient all-reduced, then split, under sequence parallelism", Part::attention,
     &Bytes::backward, [](const RunContext& r) {
       double excess = 0;
       if (!r.model.uses_mla()) return 0.0;
       for (std::size_t s = 0; s < r.cost.sections.size(); ++s)
         for (const auto& c : r.cost.sections[s].backward)
           if (c.where == "layers.*.self_attn.q_proj.weight" && c.collective == mp::Collective::reduce_scatter)
             excess += static_cast<double>(r.cost.sections[s].count) * c.sent_bytes;
       return excess;
     }},
};

// ---- The comparison -------------------------------------------------------------------------

bool same_bytes(double measured, double predicted) {
  return std::abs(measured - predicted) <= 1e-9 * std::max(1.0, std::abs(predicted));
}

std::string report(const Measured& got, const mp::CostReport& cost, const ByPart& want) {
  std::ostringstream o;
  o << "measured per rank, by label:\n";
  for (const auto& [label, bytes] : got.forward) o << "  forward  " << label << ": " << bytes << "\n";
  for (const auto& [label, bytes] : got.backward) o << "  backward " << label << ": " << bytes << "\n";
  o << "cost model:\n";
  for (const mp::CostSection& s : cost.sections) {
    for (const auto& c : s.forward)
      o << "  forward  [" << s.name << " x" << s.count << "] " << c.where << " " << mp::to_string(c.collective) << " "
        << c.axis << ": " << c.sent_bytes << "\n";
    for (const auto& c : s.backward)
      o << "  backward [" << s.name << " x" << s.count << "] " << c.where << " " << mp::to_string(c.collective) << " "
        << c.axis << ": " << c.sent_bytes << "\n";
  }
  for (const auto& g : cost.grad_sync) o << "  grad_sync " << g.param << " over " << g.axes << ": " << g.sent_bytes << "\n";
  o << "by part (measured / predicted): forward, backward, gradient sums\n";
  for (std::size_t p = 0; p < part_count; ++p)
    o << "  " << part_names[p] << ": " << got.parts[p].forward << " / " << want[p].forward << ", "
      << got.parts[p].backward << " / " << want[p].backward << ", " << got.parts[p].gradients << " / "
      << want[p].gradients << "\n";
  return o.str();
}

/// One training step of `c` under Plan on `sizes`, against the cost model.
template <class Plan>
void bytes_match(const ModelCase& c, std::string_view plan_name, Sizes sizes) {
  INFO(c.name << ", plan " << plan_name << ", mesh " << sizes.text());
  const Mesh mesh{sizes.dp, sizes.ep, sizes.tp};
  const mp::MeshSpec spec(mesh);
  const Measured got = measure<Plan>(c, sizes);
  std::string unknown;
  for (const std::string& label : got.unknown) unknown += " '" + label + "'";
  INFO("labels missing from the table `labels`:" << unknown);
  CHECK(got.unknown.empty());

  // The data members: the axes on which no style splits the model (data, expert parallel).
  index_t data_members = 1;
  for (std::size_t a = 0; a < spec.ndim(); ++a)
    if (!mp::detail::axis_splits_model(Plan::entries, spec.axis_name(a))) data_members *= spec.axis_size(a);
  const index_t tokens = c.batch.sequences * c.batch.length / data_members;
  const mp::CostReport cost = mp::cost_model(c.spec, spec, Plan::entries, {mp::DType::f32, tokens, 0});

  // Routed rows: the cost model's payload is every routed row; which of them leave their
  // rank is the router's choice, so the share is the step's own.
  double dispatch_payload = 0;
  for (const mp::CostSection& s : cost.sections)
    for (const auto& x : s.forward)
      if (routed_rows_entry(x) && x.where.ends_with("(dispatch)")) dispatch_payload += static_cast<double>(s.count) * x.payload_bytes;
  const double row_bytes = static_cast<double>(c.spec.hidden_size) * 4;
  CHECK(same_bytes(got.routed_rows * row_bytes / static_cast<double>(spec.size()), dispatch_payload));
  const double share = got.routed_rows > 0 ? got.off_rank_rows / got.routed_rows : 0.0;

  ByPart want = predicted(cost, c.spec, share);
  const RunContext ctx{c.spec, spec, cost, data_members};
  std::string excesses;
  for (const KnownExcess& k : known_excess)
    if (const double excess = k.bytes(ctx); excess != 0) {
      excesses += "\n  " + std::string(k.what) + ": " + std::to_string(excess) + " bytes per rank";
      want[static_cast<std::size_t>(k.part)].*k.pass += excess;
    }
  INFO("known executor excess added to the prediction:" << (excesses.empty() ? " none" : excesses));

  INFO(report(got, cost, want));
  Bytes total_got, total_want;
  for (std::size_t p = 0; p < part_count; ++p) {
    INFO("part: " << part_names[p]);
    CHECK(same_bytes(got.parts[p].forward, want[p].forward));
    CHECK(same_bytes(got.parts[p].backward, want[p].backward));
    CHECK(same_bytes(got.parts[p].gradients, want[p].gradients));
    for (double Bytes::*pass : {&Bytes::forward, &Bytes::backward, &Bytes::gradients}) {
      total_got.*pass += got.parts[p].*pass;
      total_want.*pass += want[p].*pass;
    }
  }
  // (a) the forward over all sections; (b) the backward with the gradient sums.
  CHECK(same_bytes(total_got.forward, total_want.forward));
  CHECK(same_bytes(total_got.backward + total_got.gradients, total_want.backward + total_want.gradients));
}

/// The meshes (dp, ep, tp) each built-in plan runs on: a new plan is one line here.
std::vector<Sizes> meshes_for(std::string_view plan) {
  if (plan == "tp" || plan == "tp_sp") return {{1, 1, 2}, {1, 1, 4}, {2, 1, 2}};
  if (plan == "ep") return {{1, 2, 1}, {1, 4, 1}, {2, 2, 1}};
  if (plan == "ep_tp" || plan == "ep_sp" || plan == "etp")
    return {{1, 1, 2}, {1, 1, 4}, {2, 1, 2}, {1, 2, 1}, {1, 4, 1}, {2, 2, 1}, {1, 2, 2}, {2, 2, 2}};
  FAIL("no meshes listed for the plan '" << plan << "'");
  return {};
}

template <mp::Family F>
void every_plan(const ModelCase& c) {
  mp::plans::family_plans_t<F>::for_each([&]<class Plan>(std::string_view name) {
    for (Sizes sizes : meshes_for(name)) bytes_match<Plan>(c, name, sizes);
  });
}

ModelCase golden(std::string_view family) {
  const std::string dir = model_files::golden(family);
  const mp::ModelCheckpoint ckpt(dir);
  return {std::string(family), ckpt.spec(), ckpt.source(), model_files::golden_batch(dir)};
}

}  // namespace

TEST_CASE("a training step's collectives send what the cost model says, per pass and per part", "[model][cost]") {
  SECTION("qwen3") { every_plan<mp::Family::qwen3>(golden("qwen3")); }
  SECTION("qwen3_moe") { every_plan<mp::Family::qwen3_moe>(golden("qwen3_moe")); }
  SECTION("mixtral") { every_plan<mp::Family::mixtral>(golden("mixtral")); }
  SECTION("deepseek_v3") { every_plan<mp::Family::deepseek_v3>(golden("deepseek_v3")); }
  SECTION("deepseek_v3 without q_lora_rank (a plain q_proj; random weights)") {
    ModelCase c = golden("deepseek_v3");
    c.name = "deepseek_v3 without q_lora_rank";
    c.spec.q_lora_rank = 0;
    c.source = mp::nn::random_source(7);
    every_plan<mp::Family::deepseek_v3>(c);
  }
}
