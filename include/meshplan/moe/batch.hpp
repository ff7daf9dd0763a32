#pragma once
// run_moe_batch: an MoE block over every rank of a world, on one batch, as a user with a
// batch of tokens sees it. Each rank is handed the rows it holds at the block's input (the
// plan's token layout, moe_token_layout), runs its block, and the ranks' output rows and the
// routing's expert ids come back in batch order.
//
//   mp::ThreadWorld world(mesh_size);
//   auto r = mp::run_moe_batch(world, tokens, x, [&](index_t rank) { return Block(model, mesh, rank, load); });
//   r.hidden_states, r.topk_ids, r.disagreements()
//
// Ranks that hold the same token (replicas over dp, the members of a tp group under tp)
// must compute the same row and the same experts bit for bit; the result counts where they
// do not, and the tokens no rank routed, instead of keeping whichever rank wrote last. The
// runner (meshplan-moe) and the table-driven tests use this one function.

#include "meshplan/core/detail/public_begin.hpp"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "meshplan/core/tensor.hpp"
#include "meshplan/moe/moe_block.hpp"
#include "meshplan/moe/token_layout.hpp"
#include "meshplan/placement/layout_spec.hpp"

namespace meshplan {

template <class T>
struct MoEBatchResult {
  Tensor<T> hidden_states;                         // [tokens, hidden]
  Tensor<std::int64_t> topk_ids;                   // [tokens, top_k], slot order as routed
  std::vector<std::vector<index_t>> rows_per_expert;  // per rank: rows each local expert computed
  index_t output_mismatches = 0;  // output elements on which ranks holding the same token differ
  index_t routing_mismatches = 0;  // expert ids on which ranks routing the same token differ
  index_t unrouted_tokens = 0;     // tokens no rank routed
  double forward_seconds = 0;      // the slowest rank's forward (weights loaded before)

  index_t disagreements() const noexcept { return output_mismatches + routing_mismatches + unrouted_tokens; }
};

/// The forward a batch run calls by default: host tensors in and out. A forward for another
/// backend returns the same shape of result: `hidden_states` on the host, and the state.
struct HostForward {
  template <class Block, class Comm, class T>
  auto operator()(Block& block, Comm& comm, const Tensor<T>& x) const {
    return block.forward(comm, x);
  }
};

/// Runs `make_block(rank)`'s forward on every rank of `world` (ThreadWorld, CudaLocalWorld)
/// with the rows of x [tokens, hidden] that `tokens` gives the rank, and puts the ranks'
/// results together. `forward(block, comm, rows)` returns the block's output on the host
/// (`hidden_states`) and the forward's state.
template <class World, class T, class MakeBlock, class Forward = HostForward>
MoEBatchResult<T> run_moe_batch(World& world, const LayoutSpec& tokens, const Tensor<T>& x, MakeBlock&& make_block,
                                Forward forward = {}) {
  const index_t n = x.dim(0), H = x.dim(1), ranks = world.size();
  struct RankResult {
    std::vector<index_t> rows;         // global token of each input row
    Tensor<T> out;
    std::vector<std::int64_t> ids;     // top_k ids per routed row
    std::vector<index_t> routed_rows;  // global token of each routed row
    std::vector<index_t> rows_per_expert;
    double seconds = 0;
  };
  std::vector<RankResult> results(static_cast<std::size_t>(ranks));
  index_t top_k = 0;

  world.run([&](auto& comm) {
    const index_t r = comm.rank();
    RankResult& mine = results[static_cast<std::size_t>(r)];
    auto block = make_block(r);
    mine.rows = held_tokens(tokens, r);
    const Tensor<T> rows = held_rows(tokens, x, r);
    const auto start = std::chrono::steady_clock::now();
    auto result = forward(block, comm, rows);
    mine.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    mine.out = std::move(result.hidden_states);
    const RoutedRows& routed = result.state.routed_rows;
    const Routing routing = result.state.routing();
    for (index_t i = 0; i < routed.count; ++i) {
      mine.routed_rows.push_back(mine.rows[static_cast<std::size_t>(routed.input_row + i)]);
      for (index_t s = 0; s < routing.top_k; ++s) mine.ids.push_back(routing.expert(routed.routing_row + i, s));
    }
    mine.rows_per_expert = result.state.rows_per_local_expert;
    if (r == 0) top_k = block.model().num_experts_per_tok;
  });

  MoEBatchResult<T> result;
  result.hidden_states = Tensor<T>({n, H});
  result.topk_ids = Tensor<std::int64_t>({n, top_k});
  std::vector<bool> written(static_cast<std::size_t>(n)), routed(static_cast<std::size_t>(n));
  for (RankResult& rank : results) {
    for (std::size_t i = 0; i < rank.rows.size(); ++i) {
      const index_t t = rank.rows[i];
      const T* row = rank.out.data() + static_cast<index_t>(i) * H;
      T* dest = result.hidden_states.data() + t * H;
      if (written[static_cast<std::size_t>(t)]) {
        for (index_t h = 0; h < H; ++h) result.output_mismatches += std::memcmp(&dest[h], &row[h], sizeof(T)) != 0;
      } else {
        std::copy_n(row, H, dest);
        written[static_cast<std::size_t>(t)] = true;
      }
    }
    for (std::size_t i = 0; i < rank.routed_rows.size(); ++i) {
      const index_t t = rank.routed_rows[i];
      std::int64_t* dest = result.topk_ids.data() + t * top_k;
      const std::int64_t* ids = rank.ids.data() + static_cast<index_t>(i) * top_k;
      if (routed[static_cast<std::size_t>(t)]) {
        for (index_t s = 0; s < top_k; ++s) result.routing_mismatches += dest[s] != ids[s];
      } else {
        std::copy_n(ids, top_k, dest);
        routed[static_cast<std::size_t>(t)] = true;
      }
    }
    result.rows_per_expert.push_back(std::move(rank.rows_per_expert));
    result.forward_seconds = std::max(result.forward_seconds, rank.seconds);
  }
  for (bool r : routed) result.unrouted_tokens += !r;
  return result;
}

}  // namespace meshplan

#include "meshplan/core/detail/public_end.hpp"
