#pragma once
// Shared by the backward tests: one forward and backward of an MoE block on every rank of a
// mesh (ThreadComm), each rank given its rows of x and dy by the plan's token layout, and
// the comparison of what the ranks return with the single-rank reference's gradients
// sliced as the plan slices the weights.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "meshplan/comm/thread_comm.hpp"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/moe/reference_backward.hpp"
#include "meshplan/moe/token_layout.hpp"
#include "moe_cases.hpp"

namespace moe_cases {

/// A fixed random output gradient.
inline mp::Tensor<float> random_grad_output(index_t tokens, index_t hidden, std::uint64_t seed) {
  mp::Tensor<float> dy({tokens, hidden});
  std::mt19937 rng(static_cast<unsigned>(seed));
  std::normal_distribution<float> normal;
  for (auto& v : dy.vector()) v = normal(rng);
  return dy;
}

/// The reference's gradients as weights, so that the plan's slicing gives each rank's share.
template <class T>
mp::MoEWeights<float> gradients_as_weights(const mp::MoEGradients& g, const mp::MoEWeights<T>& w) {
  return {g.router, w.correction_bias, g.gate_up, g.down, g.shared_gate, g.shared_up, g.shared_down};
}

/// How a rank's (or all ranks') gradients compare with the reference's pieces.
struct GradientComparison {
  index_t mismatches = 0;    // elements not bit-identical
  double worst_relative = 0; // the largest max|diff| / max|ref| over the tensors compared
  bool shapes_ok = true;

  void add(std::span<const float> got, std::span<const float> want) {
    if (got.size() != want.size()) {
      shapes_ok = false;
      return;
    }
    double diff = 0, scale = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      mismatches += !(got[i] == want[i]);
      diff = std::max(diff, static_cast<double>(std::abs(got[i] - want[i])));
      scale = std::max(scale, static_cast<double>(std::abs(want[i])));
    }
    worst_relative = std::max(worst_relative, scale > 0 ? diff / scale : diff);
  }
};

struct BackwardRun {
  GradientComparison input, params;
  std::vector<mp::CommStats> stats;  // per rank: the backward's traffic only
  std::vector<std::size_t> bytes_kept;
};

/// Adds to `out` how every rank's gradients (`got`) compare with `ref` (one rank's gradients
/// for the whole batch) sliced as the plan slices the weights and `layout` the tokens.
template <class T>
void compare_pieces(BackwardRun& out, const mp::ModelSpec& model, const mp::MeshSpec& spec,
                    std::span<const mp::EntrySpec> plan, const mp::MoEWeights<T>& w,
                    const std::vector<mp::MoEGradients>& got, const mp::MoEGradients& ref,
                    const mp::LayoutSpec& layout) {
  const mp::MoEWeights<float> ref_weights = gradients_as_weights(ref, w);
  for (index_t r = 0; r < spec.size(); ++r) {
    const mp::MoEGradients& g = got[static_cast<std::size_t>(r)];
    out.input.add(g.hidden_states.span(), rows_of(ref.hidden_states, layout, r).span());
    const mp::MoEWeights<float> want =
        mp::load_rank_weights(model, spec, plan, r, mp::slice_of(model, ref_weights)).weights;
    out.params.add(g.router.span(), want.router.span());
    out.params.add(g.gate_up.span(), want.gate_up.span());
    out.params.add(g.down.span(), want.down.span());
    out.params.add(g.shared_gate.span(), want.shared_gate.span());
    out.params.add(g.shared_up.span(), want.shared_up.span());
    out.params.add(g.shared_down.span(), want.shared_down.span());
  }
}

/// Forward and backward of the block make_block(rank) gives on every rank; compares with
/// `ref` (the single-rank reference's gradients for the whole batch).
template <class T, class MakeBlock>
BackwardRun run_backward_of(MakeBlock&& make_block, const mp::ModelSpec& model, const auto& mesh,
                            std::span<const mp::EntrySpec> plan, const mp::MoEWeights<T>& w, const mp::Tensor<T>& x,
                            const mp::Tensor<float>& dy, const mp::MoEGradients& ref, mp::Training training) {
  const mp::MeshSpec spec(mesh);
  const index_t tokens = x.dim(0);
  const mp::LayoutSpec layout = mp::moe_token_layout(model, spec, plan, tokens);
  BackwardRun out;
  out.stats.resize(static_cast<std::size_t>(spec.size()));
  out.bytes_kept.resize(out.stats.size());
  std::vector<mp::MoEGradients> got(out.stats.size());
  mp::ThreadWorld world(spec.size());
  world.run([&](mp::ThreadComm& comm) {
    const index_t r = comm.rank();
    auto block = make_block(r);
    block.set_training(training);
    auto f = block.forward(comm, rows_of(x, layout, r));
    out.bytes_kept[static_cast<std::size_t>(r)] = f.state.bytes_kept();
    comm.stats().clear();
    got[static_cast<std::size_t>(r)] = block.backward(comm, f.state, rows_of(dy, layout, r));
    out.stats[static_cast<std::size_t>(r)] = comm.stats();
  });
  compare_pieces(out, model, spec, plan, w, got, ref, layout);
  return out;
}

/// The same with Block(model, mesh, rank, w) on every rank.
template <class Block, class T>
BackwardRun run_backward(const mp::ModelSpec& model, const auto& mesh, std::span<const mp::EntrySpec> plan,
                         const mp::MoEWeights<T>& w, const mp::Tensor<T>& x, const mp::Tensor<float>& dy,
                         const mp::MoEGradients& ref, mp::Training training) {
  return run_backward_of([&](index_t r) { return Block(model, mesh, r, w); }, model, mesh, plan, w, x, dy, ref,
                         training);
}

}  // namespace moe_cases
