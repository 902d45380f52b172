// Helpers for engine tests: tiny configs, hand-made splits, and running one forward on N thread ranks.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>

#include <nlohmann/json.hpp>
#include <thread>

#include "comm/collective.h"
#include "engine/session.h"
#include "engine/weight_source.h"
#include "model/config.h"
#include "plan/plan.h"

namespace uneven::testing {

// A small dense config exercising GQA (8 query heads over 2 KV heads), biases and q/k norms.
inline ModelConfig tiny_config(bool bias = true, bool qk_norm = true) {
  nlohmann::json j = {
      {"model_type", qk_norm ? "qwen3" : (bias ? "qwen2" : "llama")},
      {"hidden_size", 64}, {"intermediate_size", 172}, {"num_hidden_layers", 3},
      {"num_attention_heads", 8}, {"num_key_value_heads", 2}, {"head_dim", 16},
      {"vocab_size", 96}, {"max_position_embeddings", 256}, {"rms_norm_eps", 1e-6},
      {"rope_theta", 10000.0}, {"attention_bias", bias}, {"tie_word_embeddings", false},
  };
  return config_from_hf_json(j, "tiny_config");
}

// A small Qwen3.5-MoE config (for random weights): 3 linear layers and one full, key heads < value heads.
inline ModelConfig tiny_hybrid(bool fused) {
  nlohmann::json j = {
      {"model_type", fused ? "qwen3_next" : "qwen3_5_moe_text"}, {"hidden_size", 64}, {"num_hidden_layers", 4},
      {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 16}, {"vocab_size", 128},
      {"max_position_embeddings", 512}, {"rms_norm_eps", 1e-6}, {"partial_rotary_factor", 0.25},
      {"linear_num_key_heads", 2}, {"linear_num_value_heads", 6}, {"linear_key_head_dim", 16},
      {"linear_value_head_dim", 8}, {"linear_conv_kernel_dim", 4}, {"num_experts", 8}, {"num_experts_per_tok", 2},
      {"moe_intermediate_size", 32}, {"shared_expert_intermediate_size", 48}, {"intermediate_size", 96},
      {"mlp_only_layers", {2}}, {"tie_word_embeddings", false},
  };
  return config_from_hf_json(j, "tiny_hybrid");
}

// Splits query heads and MLP columns by the given boundaries (ranks.size()+1 entries each); KV heads
// follow the query heads (duplicated where a rank's heads straddle groups).
inline std::vector<RankSlices> split_slices(const ModelConfig& c, const std::vector<int64_t>& head_bounds,
                                            const std::vector<int64_t>& col_bounds) {
  std::vector<RankSlices> out;
  const int n = int(head_bounds.size()) - 1;
  const int64_t group = c.num_heads / c.num_kv_heads;
  for (int r = 0; r < n; ++r) {
    RankSlices s = single_rank_slices(c);
    s.rank = r;
    s.world_size = n;
    for (auto& ls : s.layer) {
      ls.q_heads = {head_bounds[size_t(r)], head_bounds[size_t(r) + 1]};
      ls.kv_heads = {ls.q_heads.begin / group, (ls.q_heads.end + group - 1) / group};
      ls.mlp_cols = {col_bounds[size_t(r)], col_bounds[size_t(r) + 1]};
    }
    out.push_back(s);
  }
  return out;
}

// What each rank holds under the planner's tensor-parallel plan for explicit shares (e.g. {5, 2, 1}): heads,
// KV and linear key heads, MLP, expert and shared-expert columns, vocabulary rows, as a real run splits them.
inline std::vector<RankSlices> planned_slices(const ModelConfig& c, const std::vector<double>& shares) {
  PlanRequest r;
  for (size_t i = 0; i < shares.size(); ++i) r.nodes.push_back({"node" + std::to_string(i), uint64_t(1) << 40, 0.0});
  r.mode = PlanMode::Tensor;
  r.split = shares;
  r.cost.weights = parse_dtype("f32");
  r.cost.context = 64;
  Plan plan = make_plan(c, r);
  std::vector<RankSlices> out;
  for (int rank = 0; rank < plan.world_size; ++rank) out.push_back(rank_slices(plan, c, rank));
  return out;
}

// Runs the same tokens through one Session per rank, each on its own thread; returns rank 0's logits
// for every position.
inline std::vector<float> run_split(const ModelConfig& c, const WeightSource& src, const std::vector<RankSlices>& slices,
                                    const std::vector<TokenId>& tokens) {
  auto group = make_thread_group(int(slices.size()));
  std::vector<std::vector<float>> logits(slices.size());
  std::vector<std::thread> threads;
  for (size_t r = 0; r < slices.size(); ++r)
    threads.emplace_back([&, r] {
      Model model(c, slices[r], src);
      ThreadPool pool(1);
      Session session(model, *group[r], pool, std::max<int64_t>(64, int64_t(tokens.size())));
      session.forward(tokens.data(), int64_t(tokens.size()), logits[r], true);
    });
  for (auto& t : threads) t.join();
  for (size_t r = 1; r < slices.size(); ++r) EXPECT_EQ(logits[r], logits[0]) << "rank " << r << " differs from rank 0";
  return logits[0];
}

// Greedy continuation by stepping the session from the prompt (the same path generate() takes).
inline std::vector<TokenId> greedy(Session& s, const std::vector<TokenId>& prompt, size_t n) {
  std::vector<float> logits;
  s.reset();
  s.forward(prompt.data(), int64_t(prompt.size()), logits);
  std::vector<TokenId> out;
  while (out.size() < n) {
    out.push_back(TokenId(std::max_element(logits.begin(), logits.end()) - logits.begin()));
    if (out.size() < n) s.forward(&out.back(), 1, logits);
  }
  return out;
}

inline float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

}  // namespace uneven::testing
