#pragma once
// The registered rules: every id a Message may carry, with the one line that says when it
// breaks and where it is checked.
//
// A rule id is not a free string. `Message::rule` takes a RuleId, whose constructor is
// consteval and refuses an id that is not in `rule_registry` below, so a misspelt or new
// id fails to compile until it is registered here. docs/rules.md lists the same rules with
// the same summaries, and tests/fail holds a compile-fail test for every rule checked at
// compile time; tests/unit/rules_registry_test.cpp keeps the three in agreement.

#include "meshplan/core/detail/public_begin.hpp"

#include <algorithm>
#include <cstddef>
#include <string_view>

namespace meshplan {

/// Where a rule is checked: by the compiler (static sizes), at run time, or both (the same
/// constexpr function on either path).
enum class Checked : unsigned char { compile, run, compile_and_run };

struct RuleInfo {
  std::string_view id;
  Checked checked;
  std::string_view summary;  // when it breaks, as docs/rules.md says it
};

// clang-format off
inline constexpr RuleInfo rule_registry[] = {
  // Mesh
  {"axis_name_valid", Checked::compile_and_run, "an axis name is not an identifier (letters, digits, `_`, not starting with a digit)"},
  {"axis_size_positive", Checked::compile_and_run, "an axis size below 1"},
  {"axis_names_unique", Checked::compile_and_run, "two axes with one name"},
  {"mesh_has_axes", Checked::compile_and_run, "a mesh without axes"},
  {"mesh_arguments_are_axes", Checked::compile, "a `DeviceMesh` argument that is not an `Axis`"},
  {"dynamic_sizes_given", Checked::compile_and_run, "the number of run-time sizes differs from the number of axes without a size"},
  {"axis_known", Checked::compile_and_run, "an axis name the mesh does not have"},
  {"group_axes_distinct", Checked::compile_and_run, "a group names an axis twice, or no axis"},
  {"rank_in_mesh", Checked::run, "a rank outside `[0, size)`"},
  {"coordinate_in_axis", Checked::run, "a coordinate outside its axis"},
  {"mesh_syntax", Checked::run, "a `--mesh` text that is not `name=size,...`"},
  {"mesh_is_device_mesh", Checked::compile, "a mesh argument (of `validate`, `MoEBlock`) that is not a `DeviceMesh<...>`"},
  // Sizes, placements and layouts
  {"static_divisor_positive", Checked::compile, "`ceil_div` of two static sizes by a divisor below 1"},
  {"split_factor_positive", Checked::compile_and_run, "`StridedShard` with a split factor below 1"},
  {"extent_nonnegative", Checked::compile_and_run, "a negative extent"},
  {"dynamic_extents_given", Checked::compile, "the number of run-time extents differs from the `dynamic` ones"},
  {"dim_index_in_range", Checked::compile, "`extent<D>` or `local_extent<D>` with D beyond the tensor's rank"},
  {"placement_count", Checked::compile_and_run, "not one placement per mesh axis"},
  {"is_a_placement", Checked::compile, "a layout argument that is not a placement"},
  {"shard_dim_in_range", Checked::compile_and_run, "a shard dim outside `[-rank, rank)`"},
  {"layout_mesh", Checked::compile, "`Layout`'s first argument is not a mesh"},
  {"layout_extents", Checked::compile, "`Layout`'s second argument is not an `Extents`"},
  // Redistribution
  {"redistribution_supported", Checked::compile_and_run, "`Shard` → `Partial`, or one reduction into another"},
  {"redistribution_same_tensor", Checked::compile, "the two layouts have different global extents"},
  {"redistribution_same_mesh", Checked::compile, "the two layouts are on different meshes"},
  // Model configs
  {"config_positive", Checked::compile_and_run, "a size the family needs is 0 or negative"},
  {"config_heads_grouped", Checked::compile_and_run, "num_attention_heads is not a multiple of num_key_value_heads"},
  {"config_top_k", Checked::compile_and_run, "num_experts_per_tok outside 1..num_experts"},
  {"config_groups", Checked::compile_and_run, "DeepSeek-V3: n_group does not divide the experts, groups of fewer than 2, topk_group outside 1..n_group, or the kept groups hold fewer than top-k experts"},
  {"config_dense_layers", Checked::compile_and_run, "a negative first_k_dense_replace (num_hidden_layers or more: every layer dense)"},
  {"config_json", Checked::run, "a config.json that is not JSON"},
  {"config_field", Checked::run, "a config.json field missing or of the wrong type"},
  {"config_model_type", Checked::run, "a config.json with an unknown model_type"},
  {"config_file", Checked::run, "a config.json that cannot be read"},
  {"preset_known", Checked::run, "a name that is not a preset"},
  {"plan_known", Checked::run, "a name that is not a built-in plan"},
  {"dtype_known", Checked::run, "a name that is not a dtype"},
  {"model_is_model_type", Checked::compile, "an `MoEBlock` model argument that is neither a model type (a preset) nor `RuntimeModel`"},
  // Plans
  {"activation_placement", Checked::compile, "a style's or hook's activation placement other than Replicate, Shard<1> (the sequence) or Shard<-1> (the hidden dim)"},
  {"style_output_placement", Checked::compile, "a style given an output placement it does not write (`rowwise<\"tp\", Shard<-1>>`)"},
  {"param_known", Checked::compile, "a typed plan view (`param_layout_t`) asked for a name that is not a parameter of the model"},
  {"plan_holds_entries", Checked::compile, "a `Plan` argument that is not an `Entry<\"pattern\", styles...>`"},
  {"pattern_syntax", Checked::compile_and_run, "a pattern that is not a dotted path of names and `*`"},
  {"entry_style_count", Checked::compile_and_run, "an entry with no style, or more than 4"},
  {"entry_style_kinds", Checked::compile_and_run, "an entry mixing hooks and parameter styles, or `replicate` with other styles"},
  {"entry_axis_once", Checked::compile_and_run, "an entry giving one axis two styles"},
  {"style_axis_known", Checked::compile_and_run, "a style naming an axis the mesh does not have"},
  {"axis_used", Checked::compile_and_run, "a mesh axis of more than one rank that no entry of the plan uses, other than `dp` (data parallelism): it would only make replicas"},
  {"param_matched_once", Checked::compile_and_run, "a parameter matched by no entry, or by two"},
  {"entry_matches", Checked::compile_and_run, "an entry that matches no parameter (or no module scope, for hooks)"},
  {"style_applies", Checked::compile_and_run, "a style that cannot place the kind of parameter it matches"},
  {"dim_sharded_once", Checked::compile_and_run, "one dim split by plain Shard on two axes"},
  {"heads_divisible", Checked::compile_and_run, "num_attention_heads not divisible by the axes splitting heads"},
  {"kv_heads_divisible", Checked::compile_and_run, "num_key_value_heads likewise (Qwen3-30B-A3B with attention TP 8)"},
  {"experts_divisible", Checked::compile_and_run, "the experts not divisible by the EP axis (or, at run time, expert counts of an EP exchange that do not split over the EP group)"},
  {"vocab_divisible", Checked::compile_and_run, "vocab_size not divisible by the axis splitting the vocabulary"},
  {"intermediate_divisible", Checked::compile_and_run, "a dense or shared MLP's width not divisible by its TP axis"},
  {"packed_halves_divisible", Checked::compile_and_run, "the expert width not divisible: each half of gate‖up splits evenly"},
  {"moe_intermediate_divisible", Checked::compile_and_run, "the expert width of down_proj not divisible by its TP axis"},
  {"tied_embeddings_agree", Checked::compile_and_run, "with `tie_word_embeddings`, the `lm_head` entry placing the shared weight otherwise than the `embed_tokens` entry"},
  {"activation_consistent", Checked::compile_and_run, "a module reading an activation placed as it does not accept, or two writers of one activation disagreeing (see [plans.md](plans.md))"},
  {"world_size_matches", Checked::run, "the job's rank count differs from the mesh's size"},
  {"sequence_divisible", Checked::run, "tokens that do not split evenly over a sequence-split axis (refused at the block's or model's entry, before any row moves; the message says how far to pad)"},
  // Execution
  {"collective_group", Checked::run, "a rank calls a collective on a group it is not the claimed member of"},
  {"collective_sizes", Checked::run, "members bring different element counts, or counts that do not match the receive buffers"},
  {"collective_types", Checked::run, "members bring elements of different sizes"},
  {"collective_root", Checked::run, "a broadcast root outside the group"},
  {"collective_peer_error", Checked::run, "another member of a collective refused (reported on the others)"},
  {"peer_input_error", Checked::run, "another rank refused its input (reported on the others)"},
  {"shape_matches", Checked::run, "a tensor (weights, hidden states, logits) of the wrong shape"},
  {"router_logits_finite", Checked::run, "a NaN or infinite router logit"},
  {"expert_id_valid", Checked::run, "a routing naming an expert that does not exist"},
  {"rank_matches", Checked::run, "an MoEBlock run on a communicator rank it was not built for"},
  {"backward_state", Checked::run, "a backward given a forward state used before, from another block, from a forward without training on, or from before the block's weights changed"},
  {"finite_values", Checked::run, "a NaN or infinity in an output gradient given to a backward"},
  {"group_member", Checked::run, "an ordered sum whose segments name a member outside its group"},
  {"world_size_positive", Checked::run, "a ThreadWorld or CudaLocalWorld of no ranks"},
  {"simulated_ranks_fit", Checked::run, "more simulated ranks than this machine holds: above 4096 or the thread limits, or more memory than is available (checked by the runner and the demo before any thread starts); a rank thread that cannot be started"},
  {"thread_pool_size", Checked::run, "a thread pool of fewer than 1 thread"},
  {"cpu_isa", Checked::run, "a CPU kernel path (`MESHPLAN_CPU_ISA`, or asked for by name) that this CPU cannot run, or a name that is not a path"},
  {"gemm_shape", Checked::run, "a CPU GEMM task or weight packing given a null pointer or an impossible shape"},
  {"expert_path", Checked::run, "`FusedExperts` asked for kernels it does not have (`cublas`), or for the wgmma kernels where they cannot run (not an sm_90 device, or no sm_90a code in the build)"},
  {"device_size_range", Checked::run, "a size or count a CUDA kernel or cuBLAS cannot take (negative, above 2^31 - 1, a launch of more blocks than a grid dimension holds, a device buffer whose bytes overflow); refused on the host before any launch"},
  {"device_buffer_given", Checked::run, "a null device buffer where elements are asked for"},
  {"device_temp_storage", Checked::run, "temporary storage smaller than a CUB-based permutation asked for"},
  {"device_expert_count", Checked::run, "an expert count outside 1..2^20 for the device permutation"},
  {"device_alignment", Checked::run, "a fused-expert output not aligned to its elements"},
  {"router_shared_memory", Checked::run, "a device router whose logits for a tile of tokens over all experts do not fit the 48 KiB of shared memory every device gives a block (more than 579 experts)"},
  {"router_bias_given", Checked::run, "DeepSeek-V3's device router without e_score_correction_bias"},
  {"buffer_stream", Checked::run, "a device buffer used on a stream other than its owning stream by a call that cannot hand it over (`upload`, `download`), or handed to the legacy default stream; refused on the host before any copy"},
  // Whole models
  {"batch_shape", Checked::run, "a `TokenBatch` whose ids (or labels) do not hold sequences x length values"},
  {"token_in_vocab", Checked::run, "a token id outside `[0, vocab_size)`, or a label neither -100 nor inside it (the message gives the token's sequence and position)"},
  {"backward_after_training_forward", Checked::run, "`backward` without a forward in `Mode::train` with labels before it"},
  {"model_load", Checked::run, "another rank could not load its pieces (that rank reports the file and the tensor)"},
  {"executor_one_split_axis", Checked::run, "a plan splitting one module over two mesh axes (the executor runs one tensor-parallel axis per module)"},
  {"executor_hook", Checked::run, "a prepare-input/output hook the executor does not run (it gathers or splits sequence shards on entry and gathers them on exit)"},
  {"executor_model", Checked::run, "a model feature not executed yet: rope scaling other than the default, tied embeddings, attention biases"},
  {"flow_step", Checked::run, "a parameter or flow step name the model does not have"},
  {"optimizer_step", Checked::run, "an optimizer's update outside a step (`AdamW::update` before `begin_step`)"},
  // Checkpoints and tools
  {"safetensors_malformed", Checked::run, "a header that is not valid (see [checkpoints.md](checkpoints.md))"},
  {"safetensors_tensor_missing", Checked::run, "a tensor (or per-expert tensors) not in the file"},
  {"safetensors_io", Checked::run, "a file that cannot be opened, mapped or written"},
  {"safetensors_element_type", Checked::compile, "`SafetensorsWriter::add` given a tensor whose element type safetensors files here do not hold (float, bfloat16, int32, int64)"},
  {"tensor_dtype", Checked::run, "a parameter stored with an integer dtype"},
  {"checkpoint_files", Checked::run, "a checkpoint directory with neither model.safetensors nor model.safetensors.index.json, or a per-rank save with missing rank files"},
  {"checkpoint_index", Checked::run, "a model.safetensors.index.json that is not JSON, has no `weight_map`, or names something other than a file beside it"},
  {"checkpoint_write", Checked::run, "a save that cannot write its file (refused on every rank)"},
  {"layout_text", Checked::run, "a per-rank save's layout metadata that does not parse"},
  {"model_has_experts", Checked::compile_and_run, "an MoE block or the runner given a model without experts"},
  {"backend_available", Checked::run, "a runner's `--backend` that is unknown or not built"},
  {"runner_options", Checked::run, "a runner option it cannot honour"},
  {"demo_options", Checked::run, "a demo option it cannot honour"},
  {"tokens_positive", Checked::run, "a tool's `--tokens` below 1"},
  {"labels_given", Checked::run, "`meshplan-run --train` with an input file that holds no labels"},
  {"runner_mpi", Checked::run, "`meshplan-run` started by mpirun with a process count other than the mesh's size"},
  {"runner_logits", Checked::run, "logits of a shape the runner cannot write (split logits, which it does not gather)"},
  {"runner_output", Checked::run, "a runner output file that rank 0 cannot write"},
};
// clang-format on

/// The registered rule of this id, or nullptr.
constexpr const RuleInfo* find_rule(std::string_view id) noexcept {
  for (const RuleInfo& r : rule_registry)
    if (r.id == id) return &r;
  return nullptr;
}

/// A registered rule's id. Built from a string literal at compile time only: an id that is
/// not in rule_registry is not a constant expression, so the compiler refuses it.
class RuleId {
 public:
  consteval RuleId(const char* id) : id_(id) {  // NOLINT: implicit from the literal at each call site
    if (find_rule(id_) == nullptr) unregistered_rule_id();
  }
  constexpr std::string_view view() const noexcept { return id_; }
  constexpr const RuleInfo& info() const noexcept { return *find_rule(id_); }

 private:
  // Not constexpr: reaching it during constant evaluation is the compile error, and its
  // name is what the compiler shows.
  static void unregistered_rule_id() {}
  std::string_view id_;
};

namespace detail {
constexpr bool registry_ids_unique() noexcept {
  for (std::size_t i = 0; i < std::size(rule_registry); ++i)
    for (std::size_t j = i + 1; j < std::size(rule_registry); ++j)
      if (rule_registry[i].id == rule_registry[j].id) return false;
  return true;
}
}  // namespace detail
static_assert(detail::registry_ids_unique(), "meshplan: rule_registry registers each id once");

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
