// Property tests of the planner over many random configs and clusters: coverage, alignment, budgets, determinism.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "plan/apportion.h"
#include "plan/plan.h"
#include "util/error.h"

namespace uneven {
namespace {

using nlohmann::json;

struct Case {
  ModelConfig config;
  PlanRequest request;
  std::string label;
};

// A random valid config of one of the three kinds (dense, MoE, hybrid Gated DeltaNet + MoE or dense MLP).
ModelConfig random_config(std::mt19937_64& rng, int kind) {
  auto pick = [&](std::initializer_list<int64_t> v) { return *(v.begin() + std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng)); };
  auto uni = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  const int64_t kv = uni(1, 16), gqa = uni(1, 16);
  json j = {{"hidden_size", pick({256, 512, 768})},
            {"num_hidden_layers", uni(2, 24)},
            {"num_attention_heads", kv * gqa},
            {"num_key_value_heads", kv},
            {"head_dim", pick({32, 64, 128, 256})},
            {"vocab_size", uni(1000, 40000)},
            {"max_position_embeddings", 8192},
            {"tie_word_embeddings", uni(0, 1) == 1},
            // Some widths are not multiples of any block: the last block is partial.
            {"intermediate_size", 32 * uni(4, 80) + pick({0, 0, 16})}};
  if (kind == 0) {
    j["model_type"] = pick({0, 1, 2}) == 0 ? "llama" : uni(0, 1) ? "qwen2" : "qwen3";
  } else {
    const int64_t experts = uni(2, 64);
    j["num_experts"] = experts;
    j["num_experts_per_tok"] = uni(1, std::min<int64_t>(8, experts));
    j["moe_intermediate_size"] = 32 * uni(2, 24);
    j["decoder_sparse_step"] = uni(1, 2);
    if (kind == 1) {
      j["model_type"] = "qwen3_moe";
    } else {
      j["model_type"] = "qwen3_next";
      j["shared_expert_intermediate_size"] = pick({0, 64, 256, 512});
      const int64_t nk = uni(1, 8);
      j["linear_num_key_heads"] = nk;
      j["linear_num_value_heads"] = nk * uni(1, 4);
      j["linear_key_head_dim"] = pick({64, 128});
      j["linear_value_head_dim"] = pick({64, 128});
      j["linear_conv_kernel_dim"] = 4;
      j["full_attention_interval"] = uni(2, 4);
    }
  }
  return config_from_hf_json(j, "random");
}

Case random_case(uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto uni = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  auto real = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  Case k;
  const int kind = int(seed % 3);
  k.config = random_config(rng, kind);
  PlanRequest& r = k.request;
  switch (uni(0, 3)) {
    case 0: r.cost.weights = parse_dtype("bf16"); break;
    case 1: r.cost.weights = parse_dtype("f32"); break;
    default: r.cost.weights = parse_quant(fmt::format("{}:{}", uni(0, 1) ? 8 : 4, std::array<int, 3>{32, 64, 128}[size_t(uni(0, 2))]));
  }
  r.cost.context = uni(64, 4096);
  r.cost.batch = uni(1, 2);
  r.kernel_width = uni(0, 1) ? 32 : 64;
  const Usage full = rank_usage(k.config, single_rank_slices(k.config), r.cost);
  r.reserve = uint64_t(double(full.total()) * 0.01);
  // 1-16 nodes, memory ratios up to 20:1, total memory 1.15x to 3x what the model needs.
  const int n = int(uni(1, 16));
  std::vector<double> weight(static_cast<size_t>(n));
  for (double& w : weight) w = real(1.0, 20.0);
  weight[0] = 1.0, weight[size_t(n - 1)] = n > 1 ? 20.0 : 1.0;
  const double sum = std::accumulate(weight.begin(), weight.end(), 0.0);
  const double total = (double(full.total()) + double(n) * double(r.reserve)) * real(1.15, 3.0) + double(n) * 0.02 * double(full.total());
  const bool bandwidths = uni(0, 1) == 1;
  for (int i = 0; i < n; ++i)
    r.nodes.push_back({fmt::format("node{}", i), uint64_t(total * weight[size_t(i)] / sum), bandwidths ? double(uni(50, 1000)) : 0.0});
  k.label = fmt::format("seed {} kind {} {} heads/{} kv x {} hd, {} layers, {} nodes, weights {}", seed, kind, k.config.num_heads,
                        k.config.num_kv_heads, k.config.head_dim, k.config.num_layers, n, r.cost.weights.name);
  return k;
}

// Weights every tensor-parallel rank holds whatever its share: the slices with every split range empty.
uint64_t fixed_weights(const ModelConfig& c, const CostModel& cost) { return rank_usage(c, empty_split_slices(c), cost).weights; }

// Ranges of every rank tile [0, size) in rank order: each element held exactly once.
void expect_tiles(const std::vector<Range>& ranges, int64_t size, const std::string& what) {
  int64_t at = 0;
  for (const Range& r : ranges) {
    ASSERT_EQ(r.begin, at) << what;
    ASSERT_GE(r.end, r.begin) << what;
    at = r.end;
  }
  ASSERT_EQ(at, size) << what;
}

void expect_aligned(const std::vector<Range>& ranges, int64_t size, int64_t unit_elems, int64_t align, const std::string& what) {
  for (const Range& r : ranges)
    if (r.end != size) {
      ASSERT_EQ((r.end * unit_elems) % align, 0) << what << ": boundary " << r.end << " x " << unit_elems << " not a multiple of " << align;
    }
}

// Every rank's heads of the grouped dimension (KV heads, linear key heads) are exactly those its query
// (value) heads use; a group is duplicated only across ranks whose heads share it.
void expect_groups(const std::vector<Range>& heads, const std::vector<Range>& groups, int64_t per_group, int64_t num_groups,
                   const std::string& what, int64_t& duplicated) {
  std::vector<int> holders(size_t(num_groups), 0);
  for (size_t r = 0; r < heads.size(); ++r) {
    if (heads[r].empty()) {
      ASSERT_TRUE(groups[r].empty()) << what;
      continue;
    }
    ASSERT_EQ(groups[r].begin, heads[r].begin / per_group) << what;
    ASSERT_EQ(groups[r].end, (heads[r].end + per_group - 1) / per_group) << what;
    for (int64_t g = groups[r].begin; g < groups[r].end; ++g) ++holders[size_t(g)];
  }
  for (int64_t g = 0; g < num_groups; ++g) {
    ASSERT_GE(holders[size_t(g)], 1) << what << ": group " << g << " held by no rank";
    duplicated += holders[size_t(g)] - 1;
  }
}

void check_plan(const Case& k, const Plan& p) {
  const ModelConfig& c = k.config;
  const WeightFormat& f = k.request.cost.weights;
  ASSERT_NO_THROW(validate_plan(p, c)) << k.label;
  std::vector<RankSlices> s;
  for (int r = 0; r < p.world_size; ++r) s.push_back(rank_slices(p, c, r));
  const int64_t g = f.split_align();
  // Column blocks: the kernel width where every column dimension has a block per rank, halved for narrow
  // (small-expert) dimensions, never below the weight format's group (the legality constraint).
  const int64_t block = p.align.columns;
  ASSERT_EQ(block % g, 0) << k.label << ": column block " << block << " is not a multiple of the group " << g;
  ASSERT_EQ(std::lcm(g, k.request.kernel_width) % block, 0) << k.label << ": column block " << block;
  int64_t dup_kv = 0, dup_lk = 0;

  if (p.stages.size() > 1) {
    // Pipeline: stages tile the layers; the first holds the embedding, the last the head.
    std::vector<Range> stage_ranges;
    for (const RankSlices& rs : s) stage_ranges.push_back(rs.layers);
    expect_tiles(stage_ranges, c.num_layers, "pipeline stages");
    for (size_t r = 0; r < s.size(); ++r) {
      EXPECT_EQ(s[r].has_embedding, r == 0);
      EXPECT_EQ(s[r].has_output, r + 1 == s.size());
      EXPECT_EQ(s[r].stage_layers, stage_ranges);
    }
  } else {
    for (int64_t l = 0; l < c.num_layers; ++l) {
      auto gather = [&](auto member) {
        std::vector<Range> v;
        for (const RankSlices& rs : s) v.push_back(rs.layer[size_t(l)].*member);
        return v;
      };
      const std::string at = k.label + fmt::format(" layer {}", l);
      if (c.layer_types[size_t(l)] == LayerKind::FullAttention) {
        auto q = gather(&LayerSlices::q_heads);
        expect_tiles(q, c.num_heads, at + " q heads");
        expect_aligned(q, c.num_heads, c.head_dim, g, at + " q heads (o_proj columns)");
        expect_groups(q, gather(&LayerSlices::kv_heads), c.num_heads / c.num_kv_heads, c.num_kv_heads, at + " kv heads", dup_kv);
      } else {
        auto v = gather(&LayerSlices::linear_v_heads);
        expect_tiles(v, c.linear_num_value_heads, at + " linear value heads");
        expect_aligned(v, c.linear_num_value_heads, c.linear_value_head_dim, g, at + " linear value heads (out_proj columns)");
        expect_groups(v, gather(&LayerSlices::linear_k_heads), c.linear_num_value_heads / c.linear_num_key_heads,
                      c.linear_num_key_heads, at + " linear key heads", dup_lk);
      }
      if (c.is_moe_layer(l)) {
        std::vector<Range> first;
        for (const RankSlices& rs : s) {
          const auto& e = rs.layer[size_t(l)].expert_cols;
          ASSERT_EQ(int64_t(e.size()), c.num_experts) << at;
          for (const Range& x : e) ASSERT_EQ(x, e[0]) << at << ": every expert splits at the same columns";
          first.push_back(e[0]);
        }
        expect_tiles(first, c.moe_intermediate_size, at + " expert columns");
        expect_aligned(first, c.moe_intermediate_size, 1, block, at + " expert columns");
        if (c.shared_expert_intermediate_size > 0) {
          auto sh = gather(&LayerSlices::shared_expert_cols);
          expect_tiles(sh, c.shared_expert_intermediate_size, at + " shared expert");
          expect_aligned(sh, c.shared_expert_intermediate_size, 1, block, at + " shared expert");
        }
        for (const RankSlices& rs : s) ASSERT_TRUE(rs.layer[size_t(l)].mlp_cols.empty()) << at;
      } else {
        auto m = gather(&LayerSlices::mlp_cols);
        expect_tiles(m, c.intermediate_size, at + " mlp columns");
        expect_aligned(m, c.intermediate_size, 1, block, at + " mlp columns");
      }
    }
    std::vector<Range> vocab;
    for (const RankSlices& rs : s) {
      vocab.push_back(rs.output_rows);
      ASSERT_EQ(rs.embedding_rows, rs.output_rows) << k.label;  // tied or not, one vocabulary boundary
      if (p.world_size > 1) {
        ASSERT_EQ(int64_t(rs.output_rows_by_rank.size()), p.world_size);
      }
    }
    expect_tiles(vocab, c.vocab_size, k.label + " vocabulary");
    // Bytes: the ranks together hold the model once, plus the replicated tensors on every extra rank, plus
    // exactly the duplicated KV heads and linear key heads (weights of a duplicated head, nothing else).
    uint64_t sum = 0;
    for (int r = 0; r < p.world_size; ++r) sum += p.node_of_rank(r).usage.weights;
    const Usage whole = rank_usage(c, single_rank_slices(c), k.request.cost);
    const uint64_t per_kv = 2 * uint64_t(c.head_dim) * f.row_bytes(c.hidden_size) +
                            (c.attention_bias ? f.vector_bytes(2 * c.head_dim) : 0);
    const uint64_t per_lk = 2 * uint64_t(c.linear_key_head_dim) * f.row_bytes(c.hidden_size) +
                            f.vector_bytes(2 * c.linear_key_head_dim * c.linear_conv_kernel_dim);
    const uint64_t replicated = fixed_weights(c, k.request.cost);
    EXPECT_EQ(sum, whole.weights + uint64_t(p.world_size - 1) * replicated + uint64_t(dup_kv) * per_kv + uint64_t(dup_lk) * per_lk)
        << k.label;
  }
  // Every node fits its budget.
  for (const NodePlan& n : p.nodes)
    if (n.rank >= 0) {
      EXPECT_LE(n.usage.total(), n.spec.memory) << k.label << " " << n.spec.name;
    }
}

// Each rank's running total of every dimension tracks target x running size (no drift).
void check_tracking(const Case& k, const Plan& p) {
  if (p.stages.size() != 1) return;
  const ModelConfig& c = k.config;
  struct D { std::vector<int64_t> LayerSplit::*field; int64_t align; };
  const D dims[] = {{&LayerSplit::q_heads, p.align.q_heads}, {&LayerSplit::linear_v_heads, p.align.linear_v_heads},
                    {&LayerSplit::mlp_cols, p.align.columns}, {&LayerSplit::expert_cols, p.align.columns},
                    {&LayerSplit::shared_expert_cols, p.align.columns}};
  for (const D& d : dims)
    for (int r = 0; r < p.world_size; ++r) {
      double mine = 0, total = 0;
      for (int64_t l = 0; l < c.num_layers; ++l) {
        const auto& b = p.layers[size_t(l)].*d.field;
        if (b.empty()) continue;
        mine += double(b[size_t(r) + 1] - b[size_t(r)]);
        total += double(b.back());
      }
      const double target = p.node_of_rank(r).target * total;
      EXPECT_LE(std::fabs(mine - target), 2.0 * double(d.align) + 1e-6) << k.label << " rank " << r << " holds " << mine << " of " << total
                                                                   << ", target " << target;
    }
}

TEST(PlanProperty, RandomConfigsAndClusters) {
  int planned = 0, failed = 0;
  std::map<std::string, int> modes;
  for (uint64_t seed = 1; seed <= 300; ++seed) {
    Case k = random_case(seed);
    const bool failing_before = ::testing::Test::HasFailure();
    Plan p;
    try {
      p = make_plan(k.config, k.request);
    } catch (const Error& e) {
      // Clusters have 15% or more spare memory; only a cluster whose tiny nodes all drop out may fail.
      ++failed;
      EXPECT_NE(std::string(e.what()).find("short"), std::string::npos) << k.label << ": " << e.what();
      continue;
    }
    ++planned;
    ++modes[mode_name(p.mode)];
    check_plan(k, p);
    check_tracking(k, p);
    if (!failing_before && ::testing::Test::HasFailure()) FAIL() << "first failing case: " << k.label;
    // Deterministic: planning again gives the same plan and hash; the JSON round trip is exact.
    Plan again = make_plan(k.config, k.request);
    ASSERT_EQ(plan_to_json_text(again), plan_to_json_text(p)) << k.label;
    Plan back = plan_from_json_text(plan_to_json_text(p), "round trip");
    ASSERT_EQ(plan_to_json_text(back), plan_to_json_text(p)) << k.label;
    ASSERT_EQ(back.hash, p.hash);
  }
  EXPECT_GE(planned, 290) << failed << " of 300 random cases did not plan";
  EXPECT_GT(modes["tensor"], 50);
  EXPECT_GT(modes["equal"] + modes["single"], 10);
}

// Explicit modes on the same random cases: every plan that succeeds is legal, and failures say why.
TEST(PlanProperty, EveryModeIsLegalOrExplains) {
  for (uint64_t seed = 1000; seed < 1120; ++seed) {
    Case k = random_case(seed);
    for (PlanMode mode : {PlanMode::Equal, PlanMode::Tensor, PlanMode::Pipeline}) {
      k.request.mode = mode;
      try {
        Plan p = make_plan(k.config, k.request);
        EXPECT_EQ(p.mode, mode);
        check_plan(k, p);
      } catch (const Error& e) {
        const std::string m = e.what();
        EXPECT_TRUE(m.find("needs") != std::string::npos || m.find("short") != std::string::npos ||
                    m.find("non-empty") != std::string::npos || m.find("whole") != std::string::npos)
            << k.label << " mode " << mode_name(mode) << ": " << m;
      }
      if (::testing::Test::HasFailure()) FAIL() << "first failing case: " << k.label << " mode " << mode_name(mode);
    }
  }
}

TEST(PlanProperty, CarriedRoundingHasNoDrift) {
  // Shares that round badly per layer (0.37 of 5 blocks) still total their target over many layers.
  Apportioner a({0.37, 0.41, 0.22});
  std::vector<int64_t> got(3, 0);
  for (int l = 1; l <= 1000; ++l) {
    std::vector<int64_t> b = a.split(160, 32);
    ASSERT_EQ(b.front(), 0);
    ASSERT_EQ(b.back(), 160);
    for (size_t r = 0; r < 3; ++r) {
      ASSERT_EQ(b[r + 1] % 32 == 0 || b[r + 1] == 160, true);
      got[r] += b[r + 1] - b[r];
    }
    const double shares[] = {0.37, 0.41, 0.22};
    for (size_t r = 0; r < 3; ++r) ASSERT_LE(std::fabs(double(got[r]) - shares[r] * 160.0 * l), 32.0) << "layer " << l << " rank " << r;
  }
}

TEST(PlanProperty, WaterFillEqualisesUncappedNodes) {
  // Three nodes, bandwidths 4:2:1, no memory limit: time-equal shares 4/7, 2/7, 1/7.
  std::vector<double> t = water_fill({{1.0, 0.0, 400}, {1.0, 0.0, 200}, {1.0, 0.0, 100}}, 1.0);
  EXPECT_NEAR(t[0], 4.0 / 7, 1e-9);
  EXPECT_NEAR(t[1], 2.0 / 7, 1e-9);
  EXPECT_NEAR(t[2], 1.0 / 7, 1e-9);
  // The fast node capped at 0.3: it is filled, the others share the rest 2:1.
  t = water_fill({{0.3, 0.0, 400}, {1.0, 0.0, 200}, {1.0, 0.0, 100}}, 1.0);
  EXPECT_NEAR(t[0], 0.3, 1e-9);
  EXPECT_NEAR(t[1], 0.7 * 2 / 3, 1e-9);
  EXPECT_NEAR(t[2], 0.7 / 3, 1e-9);
}

}  // namespace
}  // namespace uneven
