// The fused expert kernels (FusedExperts: mma.sync, and wgmma where the device runs it)
// against the CPU expert MLP (cpu/detail/experts.hpp) and the cuBLAS per-expert loop
// (CublasExperts), at the tiny shapes of the three families and at odd ones (H and I not
// multiples of the tile, H not a multiple of 8: the element-load path), with uniform, skewed (one expert takes every
// row) and idle-expert loads, 0 to 1000 rows. Tolerance against the CPU and cuBLAS: 2^-6 of the output's largest
// magnitude, as in the other bf16 comparisons: the activation is stored in bf16 on both sides, and an fp32 sum in
// another order may round it the other way (2^-8 relative) before the down projection. Bit for bit: the permutation
// read in place against materialized rows, and a row's result wherever it sits (its expert alone, or behind rows of
// another expert) — what expert parallelism's exactness rests on. The outputs also go to buffers offset by one element
// (only element-aligned rows: the epilogue's narrow stores) and must keep their bits.
//
// On the host ([host]): the blocks' work order (tile_work), the widest store every output
// row allows (row_store_bytes), the refusals before a launch, and the staged epilogue's
// shared-memory writes taking the fewest wavefronts.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "cuda_support.hpp"
#include "meshplan/cpu/detail/experts.hpp"
#include "meshplan/cpu/detail/permute.hpp"
#include "meshplan/cuda/core/detail/device_types.cuh"
#include "meshplan/cuda/experts/cublas_experts.cuh"
#include "meshplan/cuda/experts/fused_experts.cuh"
#include "meshplan/cuda/experts/detail/mma_layout.cuh"

namespace mp = meshplan;
using mp::index_t;
using bf16 = __nv_bfloat16;
using namespace cuda_support;

namespace {

enum class Load { uniform, skewed, idle };

struct Shape {
  index_t hidden, inter, experts;
};

mp::Tensor<mp::bfloat16> random_tensor(std::vector<index_t> shape, float scale, std::uint32_t seed) {
  mp::Tensor<mp::bfloat16> t(std::move(shape));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  for (auto& v : t.vector()) v = mp::bfloat16(u(rng));
  return t;
}

std::vector<index_t> expert_counts(index_t rows, index_t experts, Load load, std::uint32_t seed) {
  std::vector<index_t> counts(static_cast<std::size_t>(experts), 0);
  std::mt19937 rng(seed);
  for (index_t r = 0; r < rows; ++r) {
    index_t e = static_cast<index_t>(rng() % static_cast<std::uint32_t>(experts));
    if (load == Load::skewed) e = experts - 1;
    if (load == Load::idle) e = e / 2;  // the upper half never chosen
    ++counts[static_cast<std::size_t>(e)];
  }
  return counts;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, static_cast<double>(std::abs(x)));
  return m;
}

template <class A>
double max_diff(const std::vector<A>& a, const std::vector<float>& b) {
  double m = 0;
  for (std::size_t i = 0; i < b.size(); ++i) m = std::max(m, std::abs(static_cast<double>(mp::to_float(a[i])) - b[i]));
  return m;
}

/// The fused paths this device runs: mma.sync, and wgmma where it can.
std::vector<mp::cuda::ExpertPath> fused_paths() {
  std::vector<mp::cuda::ExpertPath> paths{mp::cuda::ExpertPath::mma_sync};
  if (mp::cuda::wgmma_built()) paths.push_back(mp::cuda::ExpertPath::wgmma);
  return paths;
}

void check_shape(Shape s, index_t tokens, index_t top_k, Load load, mp::cuda::ExpertPath path) {
  const index_t H = s.hidden, I = s.inter, E = s.experts, pairs = tokens * top_k;
  INFO(mp::cuda::to_string(path) << ": hidden " << H << ", inter " << I << ", " << E << " experts, " << tokens
                                 << " tokens, top-" << top_k << ", load " << static_cast<int>(load));
  const auto x = random_tensor({tokens, H}, 1.0f, static_cast<std::uint32_t>(H + tokens));
  const auto gate_up = random_tensor({E, 2 * I, H}, 1.0f / std::sqrt(static_cast<float>(H)), 5);
  const auto down = random_tensor({E, H, I}, 1.0f / std::sqrt(static_cast<float>(I)), 6);

  // A permutation of the pairs grouped by expert (what sort_by_expert gives).
  const auto counts = expert_counts(pairs, E, load, static_cast<std::uint32_t>(pairs + E));
  std::vector<index_t> offsets(static_cast<std::size_t>(E + 1), 0);
  for (index_t e = 0; e < E; ++e) offsets[e + 1] = offsets[e] + counts[e];
  std::vector<index_t> order(static_cast<std::size_t>(pairs));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(7));
  std::vector<index_t> token_of(order.size());
  for (std::size_t i = 0; i < order.size(); ++i) token_of[i] = order[i] / top_k;

  // The CPU: rows gathered, then the grouped MLP.
  std::vector<mp::bfloat16> rows(static_cast<std::size_t>(pairs * H));
  mp::cpu::gather_rows<mp::bfloat16>(x.span(), token_of, H, rows);
  std::vector<float> expected(static_cast<std::size_t>(pairs * H));
  mp::cpu::grouped_expert_mlp<mp::bfloat16>(rows, offsets, gate_up, down, expected);
  const double tolerance = 1.6e-2 * std::max(max_abs(expected), 1e-30);

  auto d_x = upload(x.vector());
  auto d_rows = upload(rows);
  auto d_gate_up = upload(gate_up.vector());
  auto d_down = upload(down.vector());
  auto d_order = upload(std::vector<std::int32_t>(order.begin(), order.end()));
  auto cast = [](const auto& b) { return reinterpret_cast<const bf16*>(b.data()); };

  mp::cuda::FusedExperts fused(path);
  mp::cuda::DeviceBuffer<float> y_gather(expected.size()), y_rows(expected.size());
  mp::cuda::DeviceBuffer<bf16> y16(expected.size());
  fused.grouped(cast(d_x), d_order.data(), top_k, offsets, cast(d_gate_up), cast(d_down), H, I, y_gather.data(),
                nullptr);
  fused.grouped(cast(d_rows), nullptr, 1, offsets, cast(d_gate_up), cast(d_down), H, I, y_rows.data(), nullptr);
  fused.grouped(cast(d_rows), nullptr, 1, offsets, cast(d_gate_up), cast(d_down), H, I, y16.data(), nullptr);
  const auto got = download(y_gather);
  CHECK(max_diff(got, expected) <= tolerance);
  CHECK(same_bits(download(y_rows), got));  // the permutation read in place = materialized rows
  std::vector<float> got16;
  for (bf16 v : download(y16)) got16.push_back(__bfloat162float(v));
  std::vector<float> rounded;
  for (float v : got) rounded.push_back(mp::to_float(mp::bfloat16(v)));
  CHECK(got16 == rounded);  // bf16 outputs are the fp32 ones rounded once

  // Outputs one element past an aligned address: every row only element-aligned, so the
  // epilogue's narrowest stores (and, with H odd, rows of every alignment) give the same bits.
  mp::cuda::DeviceBuffer<float> y_shifted(expected.size() + 1);
  mp::cuda::DeviceBuffer<bf16> y16_shifted(expected.size() + 1);
  fused.grouped(cast(d_rows), nullptr, 1, offsets, cast(d_gate_up), cast(d_down), H, I, y_shifted.data() + 1, nullptr);
  fused.grouped(cast(d_rows), nullptr, 1, offsets, cast(d_gate_up), cast(d_down), H, I, y16_shifted.data() + 1,
                nullptr);
  const auto shifted = download(y_shifted);
  CHECK(same_bits(std::vector<float>(shifted.begin() + 1, shifted.end()), got));
  const auto shifted16 = download(y16_shifted);
  CHECK(same_bits(std::vector<bf16>(shifted16.begin() + 1, shifted16.end()), download(y16)));

  // The cuBLAS per-expert loop agrees within the same tolerance.
  mp::cuda::CublasExperts cublas;
  mp::cuda::DeviceBuffer<float> y_cublas(expected.size());
  cublas.grouped(cast(d_rows), offsets, cast(d_gate_up), cast(d_down), H, I, y_cublas.data(), nullptr);
  CHECK(max_diff(download(y_cublas), expected) <= tolerance);

  // A row's bits do not depend on where it sits: the busiest expert's rows behind 5 other
  // rows of the same expert (every row moves to another place in its tile and in the mma
  // fragments, as under expert parallelism, where an expert's rows arrive from several
  // ranks), and behind 3 rows of another expert (another row tile start).
  const auto busiest = static_cast<index_t>(std::max_element(counts.begin(), counts.end()) - counts.begin());
  const index_t n = counts[static_cast<std::size_t>(busiest)], first = offsets[static_cast<std::size_t>(busiest)];
  if (n == 0) return;
  auto weights_of = [&](const std::vector<index_t>& experts) {
    std::vector<mp::bfloat16> gu, dn;
    for (index_t e : experts) {
      gu.insert(gu.end(), gate_up.data() + e * 2 * I * H, gate_up.data() + (e + 1) * 2 * I * H);
      dn.insert(dn.end(), down.data() + e * H * I, down.data() + (e + 1) * H * I);
    }
    return std::pair{upload(gu), upload(dn)};
  };
  auto moved_outputs = [&](index_t lead, const std::vector<index_t>& local_offsets, const auto& weights) {
    std::vector<mp::bfloat16> shifted(static_cast<std::size_t>((lead + n) * H));
    for (index_t r = 0; r < lead; ++r)  // any rows will do: the grouped rows, round and round
      std::copy_n(rows.begin() + (r % pairs) * H, H, shifted.begin() + r * H);
    std::copy_n(rows.begin() + first * H, n * H, shifted.begin() + lead * H);
    auto d_shifted = upload(shifted);
    mp::cuda::DeviceBuffer<float> y(shifted.size());
    fused.grouped(cast(d_shifted), nullptr, 1, local_offsets, cast(weights.first), cast(weights.second), H, I, y.data(),
                  nullptr);
    const auto all = download(y);
    return std::vector<float>(all.begin() + lead * H, all.end());
  };
  const std::vector<float> mine(got.begin() + first * H, got.begin() + (first + n) * H);
  CHECK(same_bits(moved_outputs(5, {0, 5 + n}, weights_of({busiest})), mine));
  if (E > 1) CHECK(same_bits(moved_outputs(3, {0, 3, 3 + n}, weights_of({(busiest + 1) % E, busiest})), mine));
}

}  // namespace

TEST_CASE("The fused experts compute the CPU's expert MLP, at family and odd shapes, for every load", "[experts]") {
  const Shape shapes[] = {
      {64, 32, 16},  // tiny Qwen3-MoE and DeepSeek-V3
      {64, 64, 8},   // tiny Mixtral
      {72, 40, 5},   // H and I not multiples of the tiles (multiples of 8: the cp.async path)
      {100, 50, 3},  // H not a multiple of 8: the element-load path
      {8, 8, 2},     // smaller than every tile
      {7, 3, 1},     // odd everywhere, one expert
  };
  for (mp::cuda::ExpertPath path : fused_paths()) {
    for (const Shape& s : shapes)
      for (index_t tokens : {0, 1, 7, 300})
        for (Load load : {Load::uniform, Load::skewed, Load::idle}) check_shape(s, tokens, 2, load, path);
    // Many rows per expert: the large tiles; K over several stages of every path.
    check_shape({128, 96, 4}, 1000, 2, Load::uniform, path);
    check_shape({128, 96, 4}, 1000, 8, Load::skewed, path);
    check_shape({320, 200, 3}, 700, 2, Load::uniform, path);
    check_shape({300, 260, 2}, 200, 2, Load::uniform, path);  // element loads over more k stages than in flight
    // K over more stages than the deepest pipeline holds (wgmma's large tile: 7 of 64 k),
    // both tile classes, H and I not multiples of a tile.
    check_shape({1032, 520, 3}, 300, 2, Load::uniform, path);
    check_shape({1032, 520, 3}, 40, 2, Load::skewed, path);
    check_shape({1030, 518, 2}, 100, 2, Load::idle, path);  // the element loads and element stores, long K
  }
}

#ifdef MESHPLAN_EXPECT_WGMMA
TEST_CASE("On an sm_90 device this build runs the wgmma kernels", "[experts]") {
  // The build holds sm_90a code (CMAKE_CUDA_ARCHITECTURES 90a): an H100 or H200 must get it.
  if (mp::cuda::current_sm() != 90) return;
  CHECK(mp::cuda::wgmma_built());
  CHECK(mp::cuda::device_expert_path(true) == mp::cuda::ExpertPath::wgmma);
}
#endif

TEST_CASE("The fused dense MLP (shared experts) computes the CPU's", "[experts]") {
  for (index_t tokens : {1, 33, 500}) {
    const index_t H = 64, I = 48;
    const auto x = random_tensor({tokens, H}, 1.0f, 11);
    const auto gate = random_tensor({I, H}, 0.125f, 12), up = random_tensor({I, H}, 0.125f, 13);
    const auto down = random_tensor({H, I}, 0.15f, 14);
    std::vector<float> expected(static_cast<std::size_t>(tokens * H));
    mp::cpu::dense_mlp(x, gate, up, down, expected);
    auto d_x = upload(x.vector());
    auto d_gate = upload(gate.vector()), d_up = upload(up.vector()), d_down = upload(down.vector());
    auto cast = [](const auto& b) { return reinterpret_cast<const bf16*>(b.data()); };
    for (mp::cuda::ExpertPath path : fused_paths()) {
      INFO(mp::cuda::to_string(path) << ", " << tokens << " tokens");
      mp::cuda::FusedExperts fused(path);
      mp::cuda::DeviceBuffer<float> y(expected.size());
      fused.dense(cast(d_x), tokens, cast(d_gate), cast(d_up), cast(d_down), H, I, y.data(), nullptr);
      CHECK(max_diff(download(y), expected) <= 1.6e-2 * max_abs(expected));
    }
  }
}

namespace {

/// Every block of a launch over `offsets`' row tiles and `columns` columns, `per_block` a
/// block, as tile_work maps it: each (row tile, column block) exactly once, the column
/// blocks of a row tile consecutive, the row tiles in expert order.
void check_tile_order(const std::vector<index_t>& offsets, index_t block_m, index_t columns, index_t per_block) {
  INFO("offsets of " << offsets.size() - 1 << " experts, block_m " << block_m << ", " << columns << " columns, "
                     << per_block << " per block");
  const auto tiles = mp::cuda::expert_tiles(offsets, block_m);
  const index_t column_blocks = (columns + per_block - 1) / per_block;
  const index_t blocks = mp::cuda::fused_blocks(static_cast<index_t>(tiles.size()), columns, per_block);
  REQUIRE(blocks == static_cast<index_t>(tiles.size()) * column_blocks);
  std::set<std::pair<int, int>> seen;
  for (index_t b = 0; b < blocks; ++b) {
    // The kernels' own call: the column blocks from the width, as they compute it.
    const auto work = mp::cuda::tile_work(static_cast<unsigned>(b), static_cast<unsigned>(column_blocks));
    REQUIRE(work.tile >= 0);
    REQUIRE(work.tile < static_cast<int>(tiles.size()));
    REQUIRE(work.column_block >= 0);
    REQUIRE(work.column_block < column_blocks);
    CHECK(seen.insert({work.tile, work.column_block}).second);
    if (b + 1 < blocks) {
      const auto next = mp::cuda::tile_work(static_cast<unsigned>(b + 1), static_cast<unsigned>(column_blocks));
      if ((b + 1) % column_blocks != 0) {
        CHECK(next.tile == work.tile);  // the blocks in flight together share their A rows
        CHECK(next.column_block == work.column_block + 1);
      } else {
        CHECK(next.tile == work.tile + 1);
        CHECK(tiles[static_cast<std::size_t>(next.tile)].expert >= tiles[static_cast<std::size_t>(work.tile)].expert);
      }
    }
  }
  CHECK(static_cast<index_t>(seen.size()) == blocks);
}

/// The 4-byte words a warp's accesses of `bytes` each touch, per bank, summed over the
/// phases the hardware splits them into (128 bytes a phase: 32 lanes of 4 bytes, 16 of 8):
/// the wavefronts the access takes.
int wavefronts(const std::vector<int>& byte_addresses, int bytes) {
  const int lanes_per_phase = 128 / bytes;
  int total = 0;
  for (std::size_t first = 0; first < byte_addresses.size(); first += static_cast<std::size_t>(lanes_per_phase)) {
    std::vector<std::set<int>> words(32);
    for (std::size_t l = first; l < first + static_cast<std::size_t>(lanes_per_phase); ++l)
      for (int w = 0; w < bytes / 4; ++w) {
        const int word = byte_addresses[l] / 4 + w;
        words[static_cast<std::size_t>(word % 32)].insert(word);
      }
    std::size_t most = 0;
    for (const auto& bank : words) most = std::max(most, bank.size());
    total += static_cast<int>(most);
  }
  return total;
}

/// A warp's pair writes into a staged tile of Out (Cols columns): the mma C fragment's
/// pairs (the wgmma accumulators' too, per warp: wgmma_layout_test.cu), at each 8-column
/// group, in every warp row the kernels use; each write must take the fewest wavefronts
/// (32 lanes x a pair's bytes / 128).
template <class Out, int Cols>
void check_staged_writes() {
  using Tile = mp::cuda::kernels::StagedTile<Out, 64, Cols>;
  constexpr int pair = 2 * static_cast<int>(sizeof(Out));
  for (int warp_row = 0; warp_row < 64; warp_row += 16)
    for (int group = 0; group < Cols / 8; ++group)
      for (int half = 0; half < 2; ++half) {
        std::vector<int> addresses;
        for (int lane = 0; lane < 32; ++lane) {
          const auto at = mp::cuda::mma_layout::accumulator(lane, 2 * half);
          addresses.push_back(Tile::offset(warp_row + at.row, group * 8 + at.k) * static_cast<int>(sizeof(Out)));
          REQUIRE(addresses.back() % pair == 0);  // the pair store is aligned
        }
        INFO(sizeof(Out) << "-byte outputs, " << Cols << " columns, rows from " << warp_row << ", group " << group);
        CHECK(wavefronts(addresses, pair) == 32 * pair / 128);
      }
}

}  // namespace

TEST_CASE("host: a launch's blocks take every row tile and column block once, a row tile's together", "[host]") {
  // Odd shapes: rows not a multiple of the tile, experts without rows (first, middle,
  // last), one row, columns not a multiple of the block, a single column block.
  const std::vector<std::vector<index_t>> loads = {
      {0, 1}, {0, 0, 130, 131, 195, 195}, {0, 0, 0, 7}, {0, 300, 300, 300, 1000}, {0, 64, 128, 192}};
  for (const auto& offsets : loads)
    for (index_t block_m : {64, 128})
      for (const auto& [columns, per_block] : std::vector<std::pair<index_t, index_t>>{
               {768, 64}, {2048, 128}, {7, 64}, {200, 64}, {320, 128}, {50, 32}, {128, 128}, {129, 128}})
        check_tile_order(offsets, block_m, columns, per_block);
  // Qwen3-30B-A3B's widths: 12 column blocks of gate_up, 16 of down per row tile.
  CHECK(mp::cuda::fused_blocks(10, 768, 64) == 120);
  CHECK(mp::cuda::fused_blocks(10, 2048, 128) == 160);
  CHECK(mp::cuda::tile_work(25, 12).tile == 2);
  CHECK(mp::cuda::tile_work(25, 12).column_block == 1);
}

TEST_CASE("host: the fused experts refuse a launch of more blocks than one grid dimension holds", "[host]") {
  namespace rules = mp::cuda::expert_rules;
  CHECK(rules::fused_grid(33554432, 2048, 128).ok());  // 2^25 tiles x 16 blocks = 2^29
  CHECK(rules::fused_grid(1, mp::cuda::fused_max_width, 32).ok());
  const auto refused = rules::fused_grid(33554432, 8192, 128);  // x 64 = 2^31
  CHECK(refused.rule_id() == "device_size_range");
  CHECK_THAT(std::string(refused.view()), Catch::Contains("at most 2147483647 blocks") &&
                                              Catch::Contains("33554432 row tiles times 64 column blocks of 128"));
}

TEST_CASE("host: the fused experts refuse outputs not aligned to their elements, before any launch", "[host]") {
  namespace rules = mp::cuda::expert_rules;
  alignas(16) static float storage[8];
  CHECK(rules::fused_alignment("output", storage + 1, 4).ok());
  const auto* odd = reinterpret_cast<const unsigned char*>(storage) + 2;
  const auto refused = rules::fused_alignment("output", odd, 4);
  CHECK(refused.rule_id() == "device_alignment");
  CHECK_THAT(std::string(refused.view()), Catch::Contains("output must be aligned to its 4-byte elements"));
  CHECK(rules::fused_alignment("output", odd, 2).ok());
  CHECK_FALSE(rules::fused_alignment("output", odd + 1, 2).ok());
  // FusedExperts asks before it touches the device (none here).
  mp::cuda::FusedExperts experts;
  const __nv_bfloat16* w = nullptr;
  auto* misaligned = reinterpret_cast<float*>(reinterpret_cast<std::uintptr_t>(storage) + 2);
  CHECK_THROWS_WITH(experts.dense(w, 4, w, w, w, 64, 8, misaligned, nullptr),
                    Catch::Contains("[device_alignment]") && Catch::Contains("aligned to its 4-byte elements"));
}

TEST_CASE("host: the epilogue's stores are as wide as every output row's alignment allows", "[host]") {
  using mp::cuda::row_store_bytes;
  // cudaMalloc'ed outputs (256-byte aligned): the row pitch decides.
  CHECK(row_store_bytes(256, 2048, 2) == 16);  // bf16, H 2048: 4096-byte rows
  CHECK(row_store_bytes(256, 768, 4) == 16);
  CHECK(row_store_bytes(256, 100, 4) == 16);  // 400-byte rows
  CHECK(row_store_bytes(256, 100, 2) == 8);   // 200-byte rows: 8-byte stores
  CHECK(row_store_bytes(256, 50, 2) == 4);    // 100-byte rows
  CHECK(row_store_bytes(256, 7, 2) == 2);     // odd rows of bf16: element stores
  CHECK(row_store_bytes(256, 7, 4) == 4);     // fp32 rows are always element-aligned
  CHECK(row_store_bytes(256, 6, 4) == 8);
  // The base decides too: one element past an aligned address.
  CHECK(row_store_bytes(256 + 4, 2048, 4) == 4);
  CHECK(row_store_bytes(256 + 8, 2048, 4) == 8);
  CHECK(row_store_bytes(256 + 2, 2048, 2) == 2);
  // Every row start of the result is aligned to it, and every 16-byte chunk inside a row
  // of the kernels' column blocks (multiples of 32 columns).
  for (std::uintptr_t base : {256u, 258u, 260u, 264u, 272u})
    for (index_t columns : {1, 2, 3, 4, 7, 8, 50, 100, 2048})
      for (int element : {2, 4}) {
        if (base % static_cast<std::uintptr_t>(element) != 0) continue;
        const int w = row_store_bytes(base, columns, element);
        for (index_t row = 0; row < 9; ++row)
          for (index_t col = 0; col < columns; col += 32)
            CHECK((base + static_cast<std::uintptr_t>((row * columns + col) * element)) % static_cast<unsigned>(w) ==
                  0);
      }
}

TEST_CASE("host: the staged epilogue's pair writes take the fewest shared-memory wavefronts", "[host]") {
  check_staged_writes<float, 128>();          // wgmma down (and mma.sync down_large), fp32
  check_staged_writes<float, 64>();           // mma.sync down_small, fp32
  check_staged_writes<__nv_bfloat16, 128>();  // the same, bf16
  check_staged_writes<__nv_bfloat16, 64>();   // the activation: wgmma, mma.sync gate_up_large
  check_staged_writes<__nv_bfloat16, 32>();   // mma.sync gate_up_small
  // Without the padding a warp's fp32 pair writes would take 8 wavefronts, not 2: the
  // count tells them apart.
  std::vector<int> unpadded;
  for (int lane = 0; lane < 32; ++lane) {
    const auto at = mp::cuda::mma_layout::accumulator(lane, 0);
    unpadded.push_back((at.row * 128 + at.k) * 4);
  }
  CHECK(wavefronts(unpadded, 8) == 8);
}
