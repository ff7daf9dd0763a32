// meshplan-run: a whole transformers causal-LM model from a checkpoint directory, sharded
// over a mesh of ranks under a built-in plan: inference or SGD training on a batch of token
// ids from a safetensors file; writes the logits and saves the model (gathered, as
// transformers saves it, or each rank its pieces). `--help` prints the usage (kUsage
// below); docs/runner.md has the details.
//
// Ranks are threads of this process (ThreadComm), or, under mpirun where meshplan::mpi was
// found, processes (MpiComm, one rank each). Every rank reads only its pieces of the
// weights and the whole batch; rank 0 prints, gathers the logits and writes them.
// Exit status: 0; 2 for bad input or usage (the broken rule's message); 1 for any other
// failure (a message, never an abort).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "meshplan/comm/agree.hpp"
#include "meshplan/comm/host_capacity.hpp"
#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/io/model_checkpoint.hpp"
#include "meshplan/io/model_save.hpp"
#include "meshplan/io/file_dtype.hpp"
#include "meshplan/io/safetensors_file.hpp"
#include "meshplan/io/safetensors_header.hpp"
#include "meshplan/io/safetensors_writer.hpp"
#include "meshplan/nn/causal_lm.hpp"
#include "meshplan/plan/builtin/registry.hpp"
#include "meshplan/plan/lower.hpp"
#include "meshplan/plan/plan_rules.hpp"
#include "meshplan/plan/validate.hpp"
#include "runner_options.hpp"
#ifdef MESHPLAN_RUNNER_MPI  // where CMake found MPI
#include "meshplan/comm/mpi_comm.hpp"
#endif

namespace mp = meshplan;
namespace fs = std::filesystem;
using mp::index_t;
using mp::runner::refuse;
using mp::runner::UsageError;

namespace {

constexpr const char* kUsage = R"(usage: meshplan-run --model DIR --input FILE --mesh AXES [--plan NAME] [--logits FILE]
                    [--train [--steps N] [--lr X] [--optimizer sgd|adamw] [--losses FILE]]
                    [--save DIR] [--save-sharded DIR] [--threads N]

Runs a whole transformers causal-LM model (Qwen3, Qwen3-MoE, Mixtral, DeepSeek-V3) on a
mesh of ranks, each reading only its pieces of the weights: a forward on a batch of token
ids, or training steps on it; writes the logits and saves the model.

  --model DIR      a transformers checkpoint directory (config.json and model.safetensors,
                   or model.safetensors.index.json and the files it names), or one written
                   by --save-sharded (config.json and rank-R-of-N.safetensors), read onto
                   any mesh and plan
  --input FILE     safetensors with input_ids [batch, length] or [length] (I64 or I32) and,
                   optionally, labels of the same shape (-100: no label). The loss is
                   transformers' causal-LM loss: labels shifted by one inside each sequence
  --mesh AXES      the mesh, axes dp, ep and tp: e.g. tp=1 (one rank), ep=4 or
                   dp=2,ep=2,tp=2. An axis of size > 1 must be used by the plan, except dp
                   (data parallelism: each data rank runs its share of the sequences)
  --plan NAME      tp or tp_sp (every family); ep, ep_tp, ep_sp or etp (models with
                   experts); docs/plans.md. Default: tp for a model without experts; else ep
                   on a mesh without tp, tp on a mesh without ep, else ep_sp
  --logits FILE    written: logits F32 [batch, length, vocab] and, with labels, loss F32 [1];
                   after --train, those of the trained model
  --train          training on the input's batch (labels needed): --steps times a
                   forward, a backward and an optimizer update, printing the loss before each
  --steps N        with --train: the number of steps (default 1; 0 to 100000)
  --lr X           with --train: the learning rate (default 0.1)
  --optimizer NAME with --train: sgd (default) or adamw (torch.optim.AdamW's update:
                   betas 0.9, 0.999, eps 1e-8, weight decay 0.01)
  --losses FILE    with --train: written: losses F32 [N], the loss before each step
  --save DIR       after the run: every piece gathered and written as transformers saves a
                   model (config.json, model.safetensors); from_pretrained(DIR) loads it
  --save-sharded DIR  after the run: each rank writes its own pieces and their layouts
                   (rank-R-of-N.safetensors), no gather; --model DIR reads them back onto
                   any mesh and plan
  --threads N      CPU threads per rank (default: the hardware threads divided by the ranks,
                   at least 1)
  --help           this text

Ranks are threads of this process. Under mpirun (where meshplan-run was built with MPI)
each process is one rank instead, and the mesh must have as many ranks as the job.

Examples:
  meshplan-run --model tiny-qwen3 --input batch.safetensors --mesh tp=1 --logits logits.safetensors
  meshplan-run --model tiny-mixtral --input batch.safetensors --mesh ep=2,tp=2 --plan etp
  meshplan-run --model tiny-mixtral --input batch.safetensors --mesh ep=4 \
               --train --steps 3 --lr 0.1 --save-sharded trained
  meshplan-run --model trained --input batch.safetensors --mesh tp=2 --logits logits.safetensors
  mpirun -np 4 meshplan-run --model tiny-mixtral --input batch.safetensors --mesh dp=2,ep=2

Exit status: 0; 2 for bad input or usage (the broken rule is named); 1 for other failures.
)";

using Mesh = mp::DeviceMesh<mp::Axis<"dp">, mp::Axis<"ep">, mp::Axis<"tp">>;

struct Options {
  std::string model, input, mesh, plan, logits, steps, lr, optimizer, losses, save, save_sharded, threads;
  bool train = false, help = false;
};

Options parse(int argc, char** argv) {
  Options o;
  o.help = mp::runner::parse_options(argc, argv,
                                     {{"--model", &o.model},
                                      {"--input", &o.input},
                                      {"--mesh", &o.mesh},
                                      {"--plan", &o.plan},
                                      {"--logits", &o.logits},
                                      {"--steps", &o.steps},
                                      {"--lr", &o.lr},
                                      {"--optimizer", &o.optimizer},
                                      {"--losses", &o.losses},
                                      {"--save", &o.save},
                                      {"--save-sharded", &o.save_sharded},
                                      {"--threads", &o.threads}},
                                     {{"--train", &o.train}});
  if (o.help) return o;
  mp::runner::require({{"--model", &o.model}, {"--input", &o.input}, {"--mesh", &o.mesh}});
  if (!o.train)
    for (auto [value, name] :
         {std::pair{&o.steps, "--steps"}, {&o.lr, "--lr"}, {&o.optimizer, "--optimizer"}, {&o.losses, "--losses"}})
      if (!value->empty())
        throw UsageError(mp::runner::options_rule() << name << " goes with --train (SGD steps on the input's batch)");
  return o;
}

/// The steps, learning rate and optimizer of --train.
struct Training {
  int steps = 1;
  float lr = 0.1f;
  bool adamw = false;
};

Training training_of(const Options& o) {
  Training t;
  if (!o.steps.empty()) t.steps = static_cast<int>(mp::runner::count_option("--steps", o.steps, 0, 100000));
  if (!o.lr.empty()) {
    char* end = nullptr;
    const double lr = std::strtod(o.lr.c_str(), &end);
    if (*end != '\0' || !(lr >= 0 && lr < 1e6))
      throw UsageError(mp::runner::options_rule() << "--lr needs a learning rate from 0 to 1e6, not '" << o.lr
                                                  << "'");
    t.lr = static_cast<float>(lr);
  }
  if (!o.optimizer.empty() && o.optimizer != "sgd" && o.optimizer != "adamw")
    throw UsageError(mp::runner::options_rule() << "--optimizer is sgd or adamw, not '" << o.optimizer << "'");
  t.adamw = o.optimizer == "adamw";
  return t;
}

bool holds_rank_files(const fs::path& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("rank-") && name.ends_with(".safetensors") && name.find("-of-") != std::string::npos)
      return true;
  }
  return false;
}

bool holds_transformers_files(const fs::path& dir) {
  std::error_code ec;
  return fs::exists(dir / "model.safetensors", ec) || fs::exists(dir / "model.safetensors.index.json", ec);
}

/// The model directory: a transformers checkpoint, or save_sharded's files.
struct Checkpoint {
  mp::ModelSpec spec;
  mp::nn::ModelSource source;
  std::string config_text;  // config.json as it is, for the saved copies
  std::string saved_on;     // a sharded checkpoint's mesh, else empty
};

Checkpoint open_checkpoint(const std::string& dir) {
  const fs::path root(dir);
  std::error_code ec;
  if (!fs::is_directory(root, ec))
    refuse(mp::Message::rule("checkpoint_files")
           << "the model directory '" << dir << "' does not exist (or is not a directory)");
  const bool sharded = holds_rank_files(root);
  if (sharded && holds_transformers_files(root))
    refuse(mp::Message::rule("checkpoint_files") << "'" << dir << "' holds both model.safetensors (or its index) and "
                                                 << "rank-R-of-N.safetensors files; which one is the model?");
  Checkpoint c;
  if (sharded) {
    const mp::ShardedCheckpoint ckpt(dir);
    c.spec = ckpt.spec();
    c.source = ckpt.source();
    for (const auto& entry : fs::directory_iterator(root))
      if (entry.path().filename().string().starts_with("rank-0-of-")) {
        const mp::SafetensorsFile first(entry.path().string());
        if (auto m = first.metadata().find("meshplan.mesh"); m != first.metadata().end()) c.saved_on = m->second;
      }
  } else {
    const mp::ModelCheckpoint ckpt(dir);
    c.spec = ckpt.spec();
    c.source = ckpt.source();
  }
  std::ifstream in(root / "config.json", std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  c.config_text = text.str();
  return c;
}

/// input_ids (and labels) of --input: I64 or I32, [batch, length] or [length].
mp::nn::TokenBatch read_batch(const std::string& path, index_t vocab) {
  const mp::SafetensorsFile file(path);
  auto ids_of = [&](const char* name) {
    const mp::TensorInfo& t = file.info(name);
    if (t.dtype != mp::FileDType::i64 && t.dtype != mp::FileDType::i32)
      refuse(mp::Message::rule("tensor_dtype") << name << " in '" << path << "' is stored as " << mp::to_string(t.dtype)
                                               << "; token ids are I64 or I32");
    if (t.shape.size() != 1 && t.shape.size() != 2)
      refuse(mp::Message::rule("shape_matches") << name << " in '" << path << "' has shape " << t.shape
                                                << "; expected [batch, length] or [length]");
    return file.read<std::int64_t>(name);
  };
  const mp::Tensor<std::int64_t> ids = ids_of("input_ids");
  mp::nn::TokenBatch batch;
  batch.sequences = ids.shape().size() == 2 ? ids.dim(0) : 1;
  batch.length = ids.shape().back();
  batch.ids = ids.vector();
  if (file.contains("labels")) {
    const mp::Tensor<std::int64_t> labels = ids_of("labels");
    if (labels.shape() != ids.shape())
      refuse(mp::Message::rule("shape_matches") << "labels in '" << path << "' have shape " << labels.shape()
                                                << "; input_ids have " << ids.shape());
    batch.labels = labels.vector();
  }
  // Every rank checks the batch again; here it is refused before any rank starts.
  enforce(mp::first_of({mp::nn::rules::batch_shape(batch), mp::nn::rules::token_in_vocab(batch, vocab)}));
  return batch;
}

/// Refuses a save directory that would end up holding both formats, or another mesh's
/// rank files (which --model could not tell apart).
void check_save_dir(const Options& o, const std::string& dir, bool sharded, index_t ranks) {
  if (dir.empty()) return;
  std::error_code ec;
  if (fs::equivalent(o.model, dir, ec))
    throw UsageError(mp::runner::options_rule() << (sharded ? "--save-sharded" : "--save") << " '" << dir
                                                << "' is the --model directory; save into another one");
  const fs::path root(dir);
  if (!fs::exists(root, ec)) return;
  const std::string own = "rank-0-of-" + std::to_string(ranks) + ".safetensors";
  bool other = sharded ? holds_transformers_files(root) : holds_rank_files(root);
  if (sharded)
    for (const auto& entry : fs::directory_iterator(root, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.starts_with("rank-0-of-") && name != own) other = true;
    }
  if (other)
    refuse(mp::Message::rule("checkpoint_files")
           << "'" << dir << "' already holds " << (sharded ? "another checkpoint (model.safetensors or another "
                                                             "mesh's rank files)"
                                                           : "rank-R-of-N.safetensors files")
           << "; save into an empty directory");
}

/// Refuses, before any thread starts, a mesh this machine cannot simulate: each rank holds
/// its parameter pieces (and, training, their gradients), the logits of its tokens and
/// its activations.
void check_capacity(const mp::ModelSpec& model, const mp::MeshSpec& spec, std::span<const mp::EntrySpec> plan,
                    const mp::nn::TokenBatch& batch, bool train) {
  double bytes = 0;
  const double tokens = static_cast<double>(batch.sequences * batch.length);
  for (index_t r = 0; r < spec.size(); ++r) {
    for (const mp::LoweredParam& p : mp::lower(model, spec, plan, r))
      bytes += 4.0 * static_cast<double>(mp::element_count(p.local_shape)) * (train ? 3.0 : 1.5);
    bytes += 4.0 * tokens * static_cast<double>(model.vocab_size) * (train ? 3.0 : 2.0);
    bytes += 4.0 * tokens * static_cast<double>(model.hidden_size * model.num_hidden_layers) * (train ? 24.0 : 4.0);
  }
  enforce(mp::comm_rules::simulated_ranks_fit(spec.to_string(), spec.size(), bytes, mp::host_capacity()));
}

/// Everything a rank needs, read once before the ranks start.
struct Job {
  Options o;
  Training training;
  Checkpoint ckpt;
  mp::nn::TokenBatch batch;
  mp::MeshSpec spec;  // as given
  Mesh mesh;
  int threads = 1;
};

/// Runs f on rank 0 and agrees on the outcome: its error (rank 0's own message) stops every
/// rank instead of leaving them in the next collective.
template <class C, class F>
void on_rank_zero(C& comm, F&& f) {
  std::exception_ptr failure;
  if (comm.rank() == 0) try {
      f();
    } catch (...) {
      failure = std::current_exception();
    }
  try {
    mp::agree(comm, failure ? mp::Message::rule("runner_output") << "rank 0 could not write its output" : mp::Message{},
              comm.world_group());
  } catch (const mp::RuleViolation&) {
    if (failure) std::rethrow_exception(failure);
    throw;
  }
}

/// The whole logits [B, S, V] on rank 0, from every rank's sequences (each rank's rows by
/// its first sequence); ranks holding the same sequences must hold the same bits.
template <class C, class Step>
mp::Tensor<float> gather_logits(C& comm, const Step& step, const mp::nn::TokenBatch& batch, index_t V) {
  const index_t S = batch.length, rows = step.sequences * S;
  mp::Message problem;
  if (rows > 0 && step.logits.shape() != std::vector<index_t>{rows, V})
    problem = mp::Message::rule("runner_logits")
              << "rank " << comm.rank() << " holds logits of shape " << step.logits.shape() << " for " << rows
              << " tokens and a vocabulary of " << V << " (split logits are not gathered by the runner)";
  mp::agree(comm, problem, comm.world_group());
  const mp::Group world = comm.world_group();
  const index_t n = comm.size();
  const index_t mine[2] = {step.first_sequence, step.sequences};
  std::vector<index_t> parts(static_cast<std::size_t>(2 * n));
  comm.all_gather(std::span<const index_t>(mine, 2), std::span<index_t>(parts), world, "runner logits rows");
  std::vector<index_t> counts(static_cast<std::size_t>(n));
  index_t total = 0;
  for (index_t r = 0; r < n; ++r) total += counts[static_cast<std::size_t>(r)] = parts[2 * r + 1] * S * V;
  std::vector<float> all(static_cast<std::size_t>(total));
  comm.all_gather_v(std::span<const float>(step.logits.data(), static_cast<std::size_t>(rows * V)),
                    std::span<float>(all), std::span<const index_t>(counts), world, "runner logits");
  mp::Tensor<float> whole({batch.sequences, S, V});
  if (comm.rank() != 0) return whole;
  std::vector<char> filled(static_cast<std::size_t>(batch.sequences), 0);
  index_t at = 0, differing = 0;
  for (index_t r = 0; r < n; ++r) {
    for (index_t s = parts[2 * r]; s < parts[2 * r] + parts[2 * r + 1]; ++s, at += S * V) {
      float* dst = whole.data() + s * S * V;
      if (!filled[static_cast<std::size_t>(s)]) {
        std::copy_n(all.data() + at, S * V, dst);
        filled[static_cast<std::size_t>(s)] = 1;
      } else {
        for (index_t i = 0; i < S * V; ++i) differing += std::memcmp(dst + i, all.data() + at + i, sizeof(float)) != 0;
      }
    }
  }
  const auto missing = std::count(filled.begin(), filled.end(), 0);
  if (differing != 0 || missing != 0)
    throw std::runtime_error("internal error: the ranks' logits do not fit together (" + std::to_string(differing) +
                             " values differ between ranks holding the same sequences, " +
                             std::to_string(missing) + " sequences held by no rank)");
  return whole;
}

std::string loss_text(double loss) {
  if (std::isnan(loss)) return "";
  char text[64];
  std::snprintf(text, sizeof text, "  loss %.6f", loss);
  return text;
}

double per_second(double count, std::chrono::steady_clock::duration d) {
  const double s = std::chrono::duration<double>(d).count();
  return s > 0 ? count / s : 0.0;
}

/// One rank's whole run: load, train, the last forward, the outputs.
template <class Plan, class C>
void run_rank(C& comm, const Job& job) {
  using Clock = std::chrono::steady_clock;
  const Options& o = job.o;
  const mp::nn::TokenBatch& batch = job.batch;
  const double tokens = static_cast<double>(batch.sequences * batch.length);
  const bool speak = comm.rank() == 0;
  auto model = mp::nn::CausalLM<Mesh, Plan>::load(comm, job.ckpt.spec, job.mesh, job.ckpt.source, job.threads);

  std::vector<float> losses;
  mp::nn::Sgd sgd{job.training.lr};
  mp::nn::AdamW adamw({.lr = job.training.lr});
  if (o.train)
    for (int s = 0; s < job.training.steps; ++s) {
      const auto t0 = Clock::now();
      const auto step = model->forward(comm, batch, mp::nn::Mode::train);
      model->backward(comm);
      if (job.training.adamw) model->step(adamw);
      else model->step(sgd);
      const auto t = Clock::now() - t0;
      losses.push_back(static_cast<float>(step.loss));
      if (speak) {
        std::printf("step %d/%d%s  tokens/s %.0f\n", s + 1, job.training.steps, loss_text(step.loss).c_str(),
                    per_second(tokens, t));
        std::fflush(stdout);
      }
    }

  // The forward of the model as it now is: the run's output, or the trained model's.
  const auto t0 = Clock::now();
  const auto step = model->forward(comm, batch, mp::nn::Mode::infer);
  const auto t = Clock::now() - t0;
  if (speak) {
    if (o.train)
      std::printf("after %d step%s%s  tokens/s %.0f\n", job.training.steps, job.training.steps == 1 ? "" : "s",
                  loss_text(step.loss).c_str(), per_second(tokens, t));
    else
      std::printf("forward%s  tokens/s %.0f\n", loss_text(step.loss).c_str(), per_second(tokens, t));
    std::fflush(stdout);
  }

  if (!o.logits.empty()) {
    const mp::Tensor<float> logits = gather_logits(comm, step, batch, job.ckpt.spec.vocab_size);
    on_rank_zero(comm, [&] {
      mp::SafetensorsWriter out;
      out.add("logits", logits);
      if (!std::isnan(step.loss)) out.add("loss", mp::Tensor<float>({1}, {static_cast<float>(step.loss)}));
      out.metadata("made_by", "meshplan-run");
      out.metadata("mesh", job.spec.to_string());
      out.metadata("plan", o.plan);
      out.write(o.logits);
      std::printf("meshplan-run: logits -> %s\n", o.logits.c_str());
    });
  }
  if (!o.losses.empty())
    on_rank_zero(comm, [&] {
      mp::SafetensorsWriter out;
      out.add("losses", mp::Tensor<float>({static_cast<index_t>(losses.size())}, losses));
      out.metadata("made_by", "meshplan-run");
      out.metadata("lr", o.lr.empty() ? "0.1" : o.lr);
      out.write(o.losses);
      std::printf("meshplan-run: losses -> %s\n", o.losses.c_str());
    });
  if (!o.save.empty()) {
    mp::save_model(comm, *model, o.save, job.ckpt.config_text);
    if (speak) std::printf("meshplan-run: saved -> %s (config.json, model.safetensors)\n", o.save.c_str());
  }
  if (!o.save_sharded.empty()) {
    mp::save_sharded(comm, *model, o.save_sharded, job.ckpt.config_text);
    if (speak)
      std::printf("meshplan-run: saved sharded -> %s (config.json, rank-R-of-%lld.safetensors)\n",
                  o.save_sharded.c_str(), static_cast<long long>(comm.size()));
  }
  std::fflush(stdout);
}

/// Under mpirun: the job's size, or 0. Open MPI and MPICH (Hydra) set these.
int mpi_world_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
    if (const char* v = std::getenv(name)) return std::atoi(v);
  return 0;
}
int mpi_world_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK"})
    if (const char* v = std::getenv(name)) return std::atoi(v);
  return 0;
}

/// Whether the job's processes are ranks (mpirun with more than one process, or with one
/// and an MPI build).
bool mpi_job() {
  const int size = mpi_world_size();
#ifdef MESHPLAN_RUNNER_MPI
  return size >= 1;
#else
  if (size > 1)
    refuse(mp::Message::rule("runner_mpi") << "started by mpirun as one of " << size
                                           << " processes, but this meshplan-run was built without MPI; run it "
                                              "without mpirun (its ranks are then threads)");
  return false;
#endif
}

/// What a process prints when it fails: under mpirun rank 0 speaks for the checks every
/// rank makes alike (options, files, input), and once the ranks run together each rank
/// also prints an error of its own (not another rank's failure reaching it).
struct Speaker {
  int rank = 0;
  bool together = false;
  bool prints(const std::exception& e) const {
    if (rank == 0) return true;
    if (!together) return false;
    if (const auto* v = dynamic_cast<const mp::RuleViolation*>(&e))
      return v->rule() != "peer_input_error" && v->rule() != "collective_peer_error";
    return true;
  }
};

/// "meshplan-run: qwen3_moe model 'dir' (2 layers, vocab 128), 4 x 8 tokens with labels, mesh
/// ep=2 (2 simulated ranks, 1 thread each), plan ep, training 3 SGD steps at lr 0.1"
void print_header(const Job& job, index_t ranks, const char* rank_word) {
  auto plural = [](long long n, std::string_view what) {
    return std::to_string(n) + " " + std::string(what) + (n == 1 ? "" : what.ends_with('s') ? "es" : "s");
  };
  const mp::ModelSpec& m = job.ckpt.spec;
  std::string text = "meshplan-run: " + std::string(mp::to_string(m.family)) + " model '" + job.o.model + "' (" +
                     plural(m.num_hidden_layers, "layer") + ", vocab " + std::to_string(m.vocab_size);
  if (!job.ckpt.saved_on.empty()) text += "; saved sharded on " + job.ckpt.saved_on;
  text += "), " + std::to_string(job.batch.sequences) + " x " + std::to_string(job.batch.length) + " tokens";
  if (!job.batch.labels.empty()) text += " with labels";
  text += ", mesh " + job.spec.to_string() + " (" + plural(ranks, rank_word) + ", " + plural(job.threads, "thread") +
          " each), plan " + job.o.plan;
  if (job.o.train)
    text += ", training " + plural(job.training.steps, job.training.adamw ? "AdamW step" : "SGD step") + " at lr " +
            (job.o.lr.empty() ? "0.1" : job.o.lr);
  std::printf("%s\n", text.c_str());
  std::fflush(stdout);
}

template <class Plan>
void run(Job& job, Speaker& speaker) {
  const mp::MeshSpec block_spec(job.mesh);  // dp, ep, tp: the axes not given have size 1
  mp::validate(job.ckpt.spec, block_spec, Plan::entries);
  const bool mpi = mpi_job();
  if (!mpi) check_capacity(job.ckpt.spec, block_spec, Plan::entries, job.batch, job.o.train);
  check_save_dir(job.o, job.o.save, false, block_spec.size());
  check_save_dir(job.o, job.o.save_sharded, true, block_spec.size());
  job.threads = mp::runner::threads_per_rank(job.o.threads, block_spec.size());

#ifdef MESHPLAN_RUNNER_MPI
  if (mpi) {
    mp::MpiComm comm;
    enforce(mp::plan_rules::world_size_matches(comm.size(), block_spec.size()));
    if (comm.rank() == 0) print_header(job, block_spec.size(), "process");
    speaker.together = true;
    try {
      run_rank<Plan>(comm, job);
    } catch (const mp::RuleViolation&) {
      throw;  // every rank stops alike (the library agrees before it throws)
    } catch (const std::exception& e) {
      // Another rank may be waiting in a collective: stop the job rather than hang.
      std::fprintf(stderr, "rank %d: meshplan-run: %s\n", speaker.rank, e.what());
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    return;
  }
#endif
  (void)speaker;
  print_header(job, block_spec.size(), "simulated rank");
  mp::ThreadWorld world(block_spec.size());
  world.run([&](mp::ThreadComm& comm) { run_rank<Plan>(comm, job); });
}

int run_main(int argc, char** argv, Speaker& speaker) {
  Options o = parse(argc, argv);
  if (o.help) {
    if (speaker.rank == 0) std::fputs(kUsage, stdout);
    return 0;
  }
  const Training training = o.train ? training_of(o) : Training{};
  const bool mpi = mpi_job();
  const mp::MeshSpec spec = mp::runner::runner_mesh(o.mesh, !mpi);
  Checkpoint ckpt = open_checkpoint(o.model);
  mp::nn::TokenBatch batch = read_batch(o.input, ckpt.spec.vocab_size);
  if (o.train && batch.labels.empty())
    refuse(mp::Message::rule("labels_given") << "--train needs labels: '" << o.input << "' has input_ids only");
  if (o.plan.empty()) o.plan = mp::runner::default_plan(spec, ckpt.spec.is_moe());
  namespace r = mp::runner;
  Job job{o, training, std::move(ckpt), std::move(batch), spec,
          Mesh{r::axis_size(spec, "dp"), r::axis_size(spec, "ep"), r::axis_size(spec, "tp")}, 1};

#ifdef MESHPLAN_RUNNER_MPI
  std::unique_ptr<mp::MpiSession> session;
  if (mpi) session = std::make_unique<mp::MpiSession>(argc, argv);
#endif
  mp::plans::with_builtin_plan(job.ckpt.spec.family, o.plan, [&]<class Plan>() { run<Plan>(job, speaker); });
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Speaker speaker{mpi_world_size() > 0 ? mpi_world_rank() : 0, false};
  mp::runner::ErrorReport report{"meshplan-run", kUsage, "use a smaller mesh, fewer tokens or real processes under "
                                                         "mpirun"};
  report.prints = [&](const std::exception& e) { return speaker.prints(e); };
  if (speaker.rank != 0) report.prefix = "rank " + std::to_string(speaker.rank) + ": ";
  return mp::runner::guarded_main(report, [&] { return run_main(argc, argv, speaker); });
}
