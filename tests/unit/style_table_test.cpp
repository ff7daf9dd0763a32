// The style table (plan/style_table.hpp) against an independent statement of what each style
// does: the placements, activation effects, reductions and collectives below are written
// out by hand, one row per style, as validation and the cost model behaved when they still
// switched on the style. The "Styles" table of docs/plans.md is checked against the code.
#include <catch2/catch.hpp>

#include <array>
#include <cstddef>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "meshplan/moe/detail/block_plan.hpp"
#include "meshplan/plan/detail/style_semantics.hpp"
#include "meshplan/plan/style_table.hpp"

namespace mp = meshplan;
using mp::ParamKind;
using mp::StyleKind;

namespace {

constexpr std::size_t n_styles = mp::style_kind_count;
constexpr std::size_t n_params = mp::param_kind_count;

static_assert(n_styles == 17 && std::size(mp::style_table) == n_styles);
static_assert(n_params == 10);
static_assert(mp::style_info(StyleKind::loss_parallel).kind == StyleKind::loss_parallel);
static_assert(mp::to_string(StyleKind::rowwise_reduce_scatter) == "rowwise_reduce_scatter");
// Usable in constant expressions, as validation needs.
static_assert(mp::placement_on_axis(StyleKind::expert_tp, ParamKind::experts_gate_up) ==
              mp::PlacementSpec::strided_shard(1, 2));
static_assert(!mp::placement_on_axis(StyleKind::colwise, ParamKind::norm));

StyleKind style(std::size_t i) { return static_cast<StyleKind>(i); }
ParamKind param(std::size_t i) { return static_cast<ParamKind>(i); }

// The enumerators' names, in order, written out here rather than read from the library.
constexpr std::array<std::string_view, n_styles> style_names{
    "replicate",      "colwise",       "colwise_gather_output",    "rowwise",
    "rowwise_reduce_scatter", "packed_colwise", "vocab_parallel", "vocab_parallel_reduce_scatter",
    "sequence_parallel", "replicated_with_grad_allreduce", "prepare_input", "prepare_output",
    "moe_experts",    "expert_tp",     "expert_tp_reduce_scatter", "router",
    "loss_parallel"};
constexpr std::array<std::string_view, n_params> param_names{
    "embedding", "norm", "head_norm", "linear", "linear_bias",
    "router", "router_bias", "experts_gate_up", "experts_down", "lm_head"};

// ---- Placements: style x parameter kind -----------------------------------------------------
// "-": cannot place; R: Replicate; S0..S2: Shard(d); T0, T1: StridedShard(d, sf=2).
struct PlacementRow {
  StyleKind style;
  std::array<const char*, n_params> p;  // embedding, norm, head_norm, linear, linear_bias, router, router_bias, gate_up, down, lm_head
};
const std::array<PlacementRow, n_styles> expected_placements{{
    {StyleKind::replicate,                      {"R",  "R", "R", "R",  "R",  "R", "R", "R",  "R",  "R"}},
    {StyleKind::colwise,                        {"-",  "-", "-", "S0", "S0", "-", "-", "-",  "-",  "S0"}},
    {StyleKind::colwise_gather_output,          {"-",  "-", "-", "S0", "S0", "-", "-", "-",  "-",  "S0"}},
    {StyleKind::rowwise,                        {"-",  "-", "-", "S1", "R",  "-", "-", "-",  "S2", "-"}},
    {StyleKind::rowwise_reduce_scatter,         {"-",  "-", "-", "S1", "R",  "-", "-", "-",  "S2", "-"}},
    {StyleKind::packed_colwise,                 {"-",  "-", "-", "T0", "T0", "-", "-", "T1", "-",  "-"}},
    {StyleKind::vocab_parallel,                 {"S0", "-", "-", "-",  "-",  "-", "-", "-",  "-",  "-"}},
    {StyleKind::vocab_parallel_reduce_scatter,  {"S0", "-", "-", "-",  "-",  "-", "-", "-",  "-",  "-"}},
    {StyleKind::sequence_parallel,              {"-",  "R", "-", "-",  "-",  "-", "-", "-",  "-",  "-"}},
    {StyleKind::replicated_with_grad_allreduce, {"-",  "R", "R", "-",  "-",  "-", "-", "-",  "-",  "-"}},
    {StyleKind::prepare_input,                  {"-",  "-", "-", "-",  "-",  "-", "-", "-",  "-",  "-"}},
    {StyleKind::prepare_output,                 {"-",  "-", "-", "-",  "-",  "-", "-", "-",  "-",  "-"}},
    {StyleKind::moe_experts,                    {"-",  "-", "-", "-",  "-",  "-", "-", "S0", "S0", "-"}},
    {StyleKind::expert_tp,                      {"-",  "-", "-", "-",  "-",  "-", "-", "T1", "S2", "-"}},
    {StyleKind::expert_tp_reduce_scatter,       {"-",  "-", "-", "-",  "-",  "-", "-", "T1", "S2", "-"}},
    {StyleKind::router,                         {"-",  "-", "-", "-",  "-",  "R", "R", "-",  "-",  "-"}},
    {StyleKind::loss_parallel,                  {"S0", "-", "-", "-",  "-",  "-", "-", "-",  "-",  "S0"}},
}};

std::string code(const std::optional<mp::PlacementSpec>& p) {
  if (!p) return "-";
  switch (p->kind) {
    case mp::PlacementKind::replicate: return "R";
    case mp::PlacementKind::shard: return "S" + std::to_string(p->dim);
    case mp::PlacementKind::strided_shard:
      return p->split_factor == 2 ? "T" + std::to_string(p->dim) : "T" + std::to_string(p->dim) + "?";
    case mp::PlacementKind::partial: return "P";
  }
  return "?";
}

// ---- Activation effects: style x parameter kind x where the step stands ---------------------
// One character per parameter kind (same order as above):
//   T: accepts Replicate or Shard(1), output as input   A: accepts anything, output as input
//   c: Replicate -> Shard(-1)   g: Replicate -> Replicate   v: Replicate -> Shard(1)
//   r: Shard(-1) -> Replicate   s: Shard(-1) -> Shard(1)   q: Shard(1) -> Shard(1)
// `residual`: a step reading an activation (not the token ids), `within_heads`: the same
// step working within heads (q_norm, k_norm), `token_ids`: a step reading the token ids.
struct EffectRow {
  StyleKind style;
  const char* residual;
  const char* within_heads;
  const char* token_ids;
};
const std::array<EffectRow, n_styles> expected_effects{{
    {StyleKind::replicate,                      "TTTTTTTTTT", "AAAAAAAAAA", "TTTTTTTTTT"},
    {StyleKind::colwise,                        "cccccccccc", "cccccccccc", "cccccccccc"},
    {StyleKind::colwise_gather_output,          "gggggggggg", "gggggggggg", "gggggggggg"},
    {StyleKind::rowwise,                        "rrrrrrrrrr", "rrrrrrrrrr", "rrrrrrrrrr"},
    {StyleKind::rowwise_reduce_scatter,         "ssssssssss", "ssssssssss", "ssssssssss"},
    {StyleKind::packed_colwise,                 "cccccccccc", "cccccccccc", "cccccccccc"},
    {StyleKind::vocab_parallel,                 "cggggggggg", "cggggggggg", "gggggggggg"},
    {StyleKind::vocab_parallel_reduce_scatter,  "cvvvvvvvvv", "cvvvvvvvvv", "vvvvvvvvvv"},
    {StyleKind::sequence_parallel,              "qqqqqqqqqq", "qqqqqqqqqq", "qqqqqqqqqq"},
    {StyleKind::replicated_with_grad_allreduce, "AAAAAAAAAA", "AAAAAAAAAA", "AAAAAAAAAA"},
    {StyleKind::prepare_input,                  "TTTTTTTTTT", "AAAAAAAAAA", "TTTTTTTTTT"},
    {StyleKind::prepare_output,                 "TTTTTTTTTT", "AAAAAAAAAA", "TTTTTTTTTT"},
    {StyleKind::moe_experts,                    "qqqqqqqqqq", "qqqqqqqqqq", "qqqqqqqqqq"},
    {StyleKind::expert_tp,                      "ccccccccrc", "ccccccccrc", "ccccccccrc"},
    {StyleKind::expert_tp_reduce_scatter,       "ccccccccsc", "ccccccccsc", "ccccccccsc"},
    {StyleKind::router,                         "TTTTTTTTTT", "AAAAAAAAAA", "TTTTTTTTTT"},
    {StyleKind::loss_parallel,                  "cccccccccc", "cccccccccc", "cccccccccc"},
}};

char code(const mp::ActivationEffect& e) {
  const mp::ActSet& a = e.accepts;
  const int n = a.replicate + a.shard_seq + a.shard_hidden;
  if (!e.out) {
    if (n == 3) return 'A';
    if (n == 2 && a.replicate && a.shard_seq) return 'T';
    return '?';
  }
  if (n != 1) return '?';
  const mp::Act in = a.replicate ? mp::Act::replicate : a.shard_seq ? mp::Act::shard_seq : mp::Act::shard_hidden;
  using mp::Act;
  if (in == Act::replicate && *e.out == Act::shard_hidden) return 'c';
  if (in == Act::replicate && *e.out == Act::replicate) return 'g';
  if (in == Act::replicate && *e.out == Act::shard_seq) return 'v';
  if (in == Act::shard_hidden && *e.out == Act::replicate) return 'r';
  if (in == Act::shard_hidden && *e.out == Act::shard_seq) return 's';
  if (in == Act::shard_seq && *e.out == Act::shard_seq) return 'q';
  return '?';
}

std::string effects(StyleKind s, bool head_local, bool token_ids) {
  const mp::FlowStep step{mp::FlowStepKind::param, "x", token_ids ? mp::input_slot : std::string_view("residual"), "y",
                          head_local, mp::FlowSection::ends};
  std::string r;
  for (std::size_t p = 0; p < n_params; ++p) r += code(mp::param_step_effect(s, step, param(p)));
  return r;
}

// ---- Reductions, flags and collectives -------------------------------------------------------
// reduce: "-", "all_reduce@..." or "reduce_scatter@..."; collectives "collective(payload)@at:label".
struct RestRow {
  StyleKind style;
  bool hook;
  bool splits_model;
  const char* reduce;
  const char* forward;
  const char* backward;
};
const std::array<RestRow, n_styles> expected_rest{{
    {StyleKind::replicate, false, false, "-", "", ""},
    {StyleKind::colwise, false, true, "-", "", "all_reduce(input_gradient)@every_step"},
    {StyleKind::colwise_gather_output, false, true, "-", "all_gather(output)@every_step",
     "all_reduce(input_gradient)@every_step"},
    {StyleKind::rowwise, false, true, "all_reduce@every_step", "", ""},
    {StyleKind::rowwise_reduce_scatter, false, true, "reduce_scatter@every_step", "", ""},
    {StyleKind::packed_colwise, false, true, "-", "", "all_reduce(input_gradient)@every_step"},
    {StyleKind::vocab_parallel, false, true, "all_reduce@token_ids", "", ""},
    {StyleKind::vocab_parallel_reduce_scatter, false, true, "reduce_scatter@token_ids", "", ""},
    {StyleKind::sequence_parallel, false, true, "-", "", ""},
    {StyleKind::replicated_with_grad_allreduce, false, true, "-", "", ""},
    {StyleKind::prepare_input, true, true, "-", "", ""},
    {StyleKind::prepare_output, true, true, "-", "", ""},
    {StyleKind::moe_experts, false, false, "-",
     "all_to_all(expert_counts)@opening:counts all_to_all(routed_rows)@opening:dispatch "
     "all_to_all(routed_rows)@closing:combine",
     "all_to_all(routed_rows)@opening:dispatch all_to_all(routed_rows)@closing:combine"},
    {StyleKind::expert_tp, false, true, "all_reduce@closing", "",
     "all_reduce(routing_weights)@closing:routing weights all_reduce(input_gradient)@opening"},
    {StyleKind::expert_tp_reduce_scatter, false, true, "reduce_scatter@closing", "",
     "all_reduce(routing_weights)@closing:routing weights all_reduce(input_gradient)@opening"},
    {StyleKind::router, false, false, "-", "", ""},
    {StyleKind::loss_parallel, false, true, "-", "all_reduce(loss_terms)@loss", "all_reduce(input_gradient)@every_step"},
}};

std::string_view at_name(mp::At a) {
  switch (a) {
    case mp::At::every_step: return "every_step";
    case mp::At::opening: return "opening";
    case mp::At::closing: return "closing";
    case mp::At::token_ids: return "token_ids";
    case mp::At::loss: return "loss";
  }
  return "?";
}
std::string_view payload_name(mp::Payload p) {
  switch (p) {
    case mp::Payload::none: return "none";
    case mp::Payload::output: return "output";
    case mp::Payload::input_gradient: return "input_gradient";
    case mp::Payload::routed_rows: return "routed_rows";
    case mp::Payload::expert_counts: return "expert_counts";
    case mp::Payload::routing_weights: return "routing_weights";
    case mp::Payload::loss_terms: return "loss_terms";
  }
  return "?";
}
std::string reduce_code(const mp::Reduction& r) {
  if (r.how == mp::PartialReduce::none) return "-";
  return std::string(r.how == mp::PartialReduce::all_reduce ? "all_reduce" : "reduce_scatter") + "@" +
         std::string(at_name(r.at));
}
template <std::size_t N>
std::string collectives_code(const mp::StyleCollective (&cs)[N]) {
  std::string r;
  for (const auto& c : cs) {
    if (c.payload == mp::Payload::none) continue;
    if (!r.empty()) r += " ";
    r += std::string(mp::to_string(c.collective)) + "(" + std::string(payload_name(c.payload)) + ")@" +
         std::string(at_name(c.at));
    if (!c.label.empty()) r += ":" + std::string(c.label);
  }
  return r;
}

// ---- The documentation table ----------------------------------------------------------------
std::string placements_doc(const mp::StyleInfo& s) {
  std::string r;
  bool all_replicate = true;
  for (std::size_t p = 0; p < n_params; ++p) {
    auto pl = s.params.of(param(p));
    all_replicate = all_replicate && pl && pl->is_replicate();
    if (!pl) continue;
    r += (r.empty() ? "" : ", ") + std::string(param_names[p]) + " `" + mp::to_string(*pl) + "`";
  }
  if (all_replicate) return "every parameter `Replicate()`";
  return r.empty() ? "—" : r;
}
std::string accepts_doc(const mp::StepEffect& e) {
  std::string r;
  for (mp::Act a : {mp::Act::replicate, mp::Act::shard_seq, mp::Act::shard_hidden})
    if (e.accepts.contains(a)) r += (r.empty() ? "" : " or ") + std::string(mp::to_string(a));
  if (e.within_heads) r += " (or Shard(-1) within heads)";
  return r;
}
std::string effect_doc(const mp::StepEffect& e) {
  return accepts_doc(e) + " -> " + (e.out ? std::string(mp::to_string(*e.out)) : std::string("same"));
}
std::string effects_doc(const mp::StyleInfo& s) {
  if (s.hook) return "its `from` -> its `to`";
  std::string r = effect_doc(s.effect);
  if (s.closing) r = "gate_up: " + r + "; down_proj: " + effect_doc(*s.closing);
  if (s.output_embedding_out)
    r += "; as tied output embedding: -> " + std::string(mp::to_string(*s.output_embedding_out));
  return r;
}
std::string at_doc(mp::At a) {
  switch (a) {
    case mp::At::every_step: return "";
    case mp::At::opening: return " at gate_up";
    case mp::At::closing: return " at down_proj";
    case mp::At::token_ids: return " at the lookup";
    case mp::At::loss: return " at the loss";
  }
  return "?";
}
std::string payload_doc(mp::Payload p) {
  switch (p) {
    case mp::Payload::none: return "";
    case mp::Payload::output: return "output";
    case mp::Payload::input_gradient: return "input gradient";
    case mp::Payload::routed_rows: return "routed rows";
    case mp::Payload::expert_counts: return "expert counts";
    case mp::Payload::routing_weights: return "routing weights' gradient";
    case mp::Payload::loss_terms: return "3 fp32 per token";
  }
  return "?";
}
template <std::size_t N>
std::string collectives_doc(std::optional<mp::Collective> reduction, mp::At reduce_at,
                            const mp::StyleCollective (&cs)[N]) {
  std::string r;
  if (reduction) r = std::string(mp::to_string(*reduction)) + "(output)" + at_doc(reduce_at);
  for (const auto& c : cs) {
    if (c.payload == mp::Payload::none) continue;
    r += (r.empty() ? "" : ", ") + std::string(mp::to_string(c.collective)) + "(" + payload_doc(c.payload) + ")" +
         at_doc(c.at);
  }
  return r.empty() ? "—" : r;
}
std::vector<std::string> doc_rows() {
  std::vector<std::string> rows;
  rows.push_back("| Style | Parameters placed | Input -> output | Forward collectives | Backward collectives |");
  rows.push_back("| --- | --- | --- | --- | --- |");
  for (const mp::StyleInfo& s : mp::style_table)
    rows.push_back("| `" + std::string(s.name) + "` | " + placements_doc(s) + " | " + effects_doc(s) + " | " +
                   collectives_doc(mp::forward_collective(s.reduce.how), s.reduce.at, s.forward) + " | " +
                   collectives_doc(mp::adjoint(s.reduce.how), s.reduce.at, s.backward) + " |");
  return rows;
}

}  // namespace

TEST_CASE("the style table has one entry per StyleKind, in order, named as to_string", "[style_table]") {
  REQUIRE(std::size(mp::style_table) == n_styles);
  std::set<std::string_view> names;
  for (std::size_t i = 0; i < n_styles; ++i) {
    const mp::StyleInfo& s = mp::style_table[i];
    INFO("entry " << i);
    CHECK(s.kind == style(i));
    CHECK(&mp::style_info(style(i)) == &s);
    CHECK(s.name == style_names[i]);
    CHECK(mp::to_string(style(i)) == s.name);
    names.insert(s.name);
  }
  CHECK(names.size() == n_styles);
  CHECK(mp::to_string(static_cast<StyleKind>(n_styles)) == "?");
}

TEST_CASE("every style places each kind of parameter as the table written out here says", "[style_table]") {
  for (std::size_t i = 0; i < n_styles; ++i) {
    const PlacementRow& row = expected_placements[i];
    REQUIRE(row.style == style(i));
    for (std::size_t p = 0; p < n_params; ++p) {
      INFO(style_names[i] << " on " << param_names[p]);
      CHECK(code(mp::placement_on_axis(style(i), param(p))) == row.p[p]);
      CHECK(code(mp::style_info(style(i)).params.of(param(p))) == row.p[p]);
    }
  }
}

TEST_CASE("every style's activation effect, for every kind of parameter and step", "[style_table]") {
  for (std::size_t i = 0; i < n_styles; ++i) {
    const EffectRow& row = expected_effects[i];
    REQUIRE(row.style == style(i));
    INFO(style_names[i]);
    CHECK(effects(style(i), false, false) == row.residual);
    CHECK(effects(style(i), true, false) == row.within_heads);
    CHECK(effects(style(i), false, true) == row.token_ids);
  }
  // No style on the axis: whole weights, as replicate.
  const mp::FlowStep step{mp::FlowStepKind::param, "x", "residual", "y", false, mp::FlowSection::ends};
  const mp::FlowStep heads{mp::FlowStepKind::param, "x", "heads", "heads", true, mp::FlowSection::ends};
  for (std::size_t p = 0; p < n_params; ++p) {
    CHECK(code(mp::param_step_effect(std::nullopt, step, param(p))) == 'T');
    CHECK(code(mp::param_step_effect(std::nullopt, heads, param(p))) == 'A');
  }
}

TEST_CASE("every style's hook flag, token split, reduction and collectives", "[style_table]") {
  for (std::size_t i = 0; i < n_styles; ++i) {
    const RestRow& row = expected_rest[i];
    REQUIRE(row.style == style(i));
    const mp::StyleInfo& s = mp::style_info(style(i));
    INFO(style_names[i]);
    CHECK(mp::is_hook(style(i)) == row.hook);
    CHECK(mp::splits_model(style(i)) == row.splits_model);
    CHECK(reduce_code(s.reduce) == row.reduce);
    CHECK(collectives_code(s.forward) == row.forward);
    CHECK(collectives_code(s.backward) == row.backward);
  }
}

TEST_CASE("a style's reduction agrees with its activation effect", "[style_table]") {
  for (const mp::StyleInfo& s : mp::style_table) {
    INFO(s.name);
    const bool scatters = s.name.ends_with("_reduce_scatter");
    CHECK((s.reduce.how == mp::PartialReduce::reduce_scatter) == scatters);
    if (s.name.starts_with("rowwise") || s.name.starts_with("expert_tp") || s.name.starts_with("vocab_parallel"))
      CHECK(s.reduce.how == (scatters ? mp::PartialReduce::reduce_scatter : mp::PartialReduce::all_reduce));
    for (std::size_t p = 0; p < n_params; ++p)
      for (bool token_ids : {false, true}) {
        const mp::StepPosition pos{param(p), token_ids};
        const mp::FlowStep step{mp::FlowStepKind::param, "x", token_ids ? mp::input_slot : std::string_view("residual"),
                                "y", false, mp::FlowSection::ends};
        const mp::ActivationEffect e = mp::param_step_effect(s.kind, step, param(p));
        const bool reduces = s.reduce.how != mp::PartialReduce::none && mp::happens_at(s.reduce.at, pos);
        INFO(param_names[p] << (token_ids ? " reading token ids" : ""));
        if (reduces) {
          // all_reduce: Replicate; reduce_scatter: Shard(1); from a split or a masked lookup.
          REQUIRE(e.out.has_value());
          CHECK(*e.out == (scatters ? mp::Act::shard_seq : mp::Act::replicate));
          CHECK((token_ids || e.accepts == mp::ActSet{false, false, true}));
          // The adjoint: a reduce-scatter's gradient is all-gathered, an all-reduce's is whole.
          CHECK(mp::adjoint(s.reduce.how) ==
                (scatters ? std::optional(mp::Collective::all_gather) : std::optional<mp::Collective>()));
        } else if (e.accepts == mp::ActSet{false, false, true}) {
          // A step reading a split contraction dim without a reduction would leave partial sums.
          FAIL_CHECK("reads Shard(-1) but reduces nothing");
        }
      }
  }
}

TEST_CASE("the MoE block's plan reads each down projection's reduction from the table", "[style_table]") {
  using namespace mp::styles;
  using P = mp::Plan<mp::Entry<"layers.*.mlp.experts", moe_experts<"ep">, expert_tp_reduce_scatter<"tp">>,
                     mp::Entry<"layers.*.mlp.shared_experts.down_proj", rowwise<"tp">>>;
  constexpr mp::MoEBlockPlan bp = mp::moe_block_plan(P::entries);
  STATIC_REQUIRE(bp.ep_axis == "ep");
  STATIC_REQUIRE(bp.expert_tp_axis == "tp");
  STATIC_REQUIRE(bp.expert_reduce == mp::PartialReduce::reduce_scatter);
  STATIC_REQUIRE(bp.shared_tp_axis == "tp");
  STATIC_REQUIRE(bp.shared_reduce == mp::PartialReduce::all_reduce);
  using Q = mp::Plan<mp::Entry<"layers.*.mlp.experts.gate_up_proj", packed_colwise<"tp">>,
                     mp::Entry<"layers.*.mlp.experts.down_proj", rowwise_reduce_scatter<"tp">>,
                     mp::Entry<"layers.*.mlp.shared_experts.down_proj", replicate>>;
  constexpr mp::MoEBlockPlan bq = mp::moe_block_plan(Q::entries);
  STATIC_REQUIRE(bq.ep_axis.empty());
  STATIC_REQUIRE(bq.expert_tp_axis == "tp");
  STATIC_REQUIRE(bq.expert_reduce == mp::PartialReduce::reduce_scatter);
  STATIC_REQUIRE(bq.shared_tp_axis.empty());
  STATIC_REQUIRE(bq.shared_reduce == mp::PartialReduce::none);
}

TEST_CASE("docs/plans.md's style table is the one the code gives", "[style_table][docs]") {
  const std::vector<std::string> want = doc_rows();
  std::ifstream in(std::string(MESHPLAN_TEST_DATA) + "/../../docs/plans.md");
  REQUIRE(in.good());
  std::vector<std::string> have;
  std::string line;
  bool inside = false;
  while (std::getline(in, line)) {
    if (line == want.front()) inside = true;
    if (!inside) continue;
    if (!line.starts_with("|")) break;
    have.push_back(line);
  }
  std::ostringstream table;
  for (const auto& r : want) table << r << "\n";
  INFO("the table, as the code gives it:\n" << table.str());
  REQUIRE(have.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) CHECK(have[i] == want[i]);
}
