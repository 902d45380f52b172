// Qwen3-MoE / Qwen3.5 (MoE + Gated DeltaNet + gated attention) against transformers' own outputs on the
// shared fixtures, split by the planner over in-process ranks, the chunked prompt form against one token at
// a time, and planned against allocated memory.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/model_files.h"
#include "engine_test_util.h"
#include "plan/cost.h"

namespace uneven {
namespace {

namespace fs = std::filesystem;
using testing::tiny_hybrid;
const fs::path kSource = UNEVEN_SOURCE_DIR;
const fs::path kShared = kSource / "../shared/fixtures/hf";

float max_diff(const float* a, const std::vector<float>& b) {
  float m = 0;
  for (size_t i = 0; i < b.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// The shared fixtures carry transformers' logits at the first and last prompt position and 24 greedy ids.
void check_shared_fixture(const std::string& name) {
  SCOPED_TRACE(name);
  const fs::path dir = kShared / name;
  ASSERT_TRUE(fs::exists(dir / "reference.json")) << dir << " (../shared beside the checkout)";
  nlohmann::json ref = nlohmann::json::parse(std::ifstream(dir / "reference.json"));
  const auto prompt_ids = ref["prompt_ids"].get<std::vector<TokenId>>();
  const auto greedy_ids = ref["greedy_ids"].get<std::vector<TokenId>>();
  const auto first = ref["logits_first_position"].get<std::vector<float>>();
  const auto last = ref["logits_last_position"].get<std::vector<float>>();

  ModelFiles files = open_model(dir.string(), {});
  EXPECT_EQ(files.tokenizer->encode(ref["prompt"].get<std::string>(), true), prompt_ids);
  const ModelConfig& c = files.config;
  ASSERT_EQ(int64_t(first.size()), c.vocab_size);
  Model model(c, single_rank_slices(c), *files.weights);
  ThreadPool pool(2);
  auto comm = make_local_collective();
  Session session(model, *comm, pool, int64_t(prompt_ids.size() + greedy_ids.size() + 1));
  std::vector<float> logits;
  session.forward(prompt_ids.data(), int64_t(prompt_ids.size()), logits, true);
  const size_t vocab = size_t(c.vocab_size);
  const float d_first = max_diff(logits.data(), first), d_last = max_diff(logits.data() + (prompt_ids.size() - 1) * vocab, last);
  std::printf("%s: max |logit - transformers| first position %.3g, last %.3g\n", name.c_str(), double(d_first), double(d_last));
  EXPECT_LE(d_first, 1e-4f);
  EXPECT_LE(d_last, 1e-4f);
  EXPECT_EQ(testing::greedy(session, prompt_ids, greedy_ids.size()), greedy_ids);

  for (auto shares : {std::vector<double>{3, 1}, std::vector<double>{5, 2, 1}}) {
    auto split = testing::run_split(c, *files.weights, testing::planned_slices(c, shares), prompt_ids);
    EXPECT_LE(testing::max_abs_diff(split, logits), 1e-4f) << shares.size() << " ranks";
  }
}

TEST(HybridReference, Qwen3MoeMatchesTransformers) { check_shared_fixture("qwen3_moe"); }
TEST(HybridReference, Qwen35MoeMatchesTransformers) { check_shared_fixture("qwen3_5_moe_text"); }


// The chunked form (a batch of tokens, 64-token delta-rule chunks inside 128-token forward chunks) equals
// the recurrent form (one token per forward) for prompts shorter and longer than a chunk.
TEST(GatedDeltaNet, ChunkedPromptEqualsTokenByToken) {
  for (bool fused : {false, true}) {
    const ModelConfig c = tiny_hybrid(fused);
    auto src = make_random_weight_source(c, DType::F32, 7);
    Model model(c, single_rank_slices(c), *src);
    ThreadPool pool(2);
    auto comm = make_local_collective();
    for (int64_t n : {int64_t(40), int64_t(200)}) {
      SCOPED_TRACE(std::string(fused ? "fused" : "separate") + " projections, prompt of " + std::to_string(n));
      std::vector<TokenId> tokens;
      for (int64_t i = 0; i < n; ++i) tokens.push_back(TokenId((i * 37 + 11) % c.vocab_size));
      Session batched(model, *comm, pool, n);
      std::vector<float> all;
      batched.forward(tokens.data(), n, all, true);
      Session stepped(model, *comm, pool, n);
      std::vector<float> one, steps;
      for (int64_t i = 0; i < n; ++i) {
        stepped.forward(&tokens[size_t(i)], 1, one);
        steps.insert(steps.end(), one.begin(), one.end());
      }
      const float diff = testing::max_abs_diff(all, steps);
      std::printf("prompt of %lld (%s): max |chunked - recurrent| = %.3g\n", (long long)n, fused ? "fused" : "separate",
                  double(diff));
      EXPECT_LE(diff, 1e-4f);
      // The logits vary from position to position, so the comparison is not one of constants.
      EXPECT_GT(testing::max_abs_diff(std::vector<float>(all.begin(), all.begin() + c.vocab_size),
                                      std::vector<float>(all.end() - c.vocab_size, all.end())), 1e-3f);
    }
  }
}

// Split over ranks by the planner, the random-weight hybrid (fused and separate layouts, a dense layer among
// MoE ones) gives the unsplit logits.
TEST(GatedDeltaNet, PlannedSplitsMatchTheUnsplitRun) {
  for (bool fused : {false, true}) {
    const ModelConfig c = tiny_hybrid(fused);
    auto src = make_random_weight_source(c, DType::F32, 3);
    std::vector<TokenId> tokens;
    for (int i = 0; i < 70; ++i) tokens.push_back(TokenId((i * 13 + 5) % c.vocab_size));
    auto whole = testing::run_split(c, *src, {single_rank_slices(c)}, tokens);
    for (auto shares : {std::vector<double>{3, 1}, std::vector<double>{5, 2, 1}, std::vector<double>{1, 1, 1}}) {
      auto slices = testing::planned_slices(c, shares);
      auto split = testing::run_split(c, *src, slices, tokens);
      EXPECT_LE(testing::max_abs_diff(split, whole), 1e-4f) << (fused ? "fused " : "") << shares.size() << " ranks";
    }
  }
}

// Each rank holds exactly the weights, KV cache (full-attention layers only) and recurrent + conv state
// (linear layers only) that the planner counted for it.
TEST(HybridMemory, AllocatedBytesEqualThePlannedOnes) {
  const fs::path dir = kShared / "qwen3_5_moe_text";
  ModelFiles files = open_model(dir.string(), {});
  const ModelConfig& c = files.config;
  CostModel cost;
  cost.weights = parse_dtype("f32");
  cost.context = 64;
  cost.kv_bytes = 4;
  for (auto shares : {std::vector<double>{1}, std::vector<double>{5, 2, 1}}) {
    auto slices = testing::planned_slices(c, shares);
    for (const RankSlices& s : slices) {
      SCOPED_TRACE("rank " + std::to_string(s.rank) + " of " + std::to_string(slices.size()));
      const Usage planned = rank_usage(c, s, cost);
      Model model(c, s, *files.weights);
      auto comm = make_local_collective();
      ThreadPool pool(1);
      Session session(model, *comm, pool, cost.context);
      std::printf("rank %d of %zu: weights %llu / %llu planned, KV %llu / %llu, state %llu / %llu\n", s.rank,
                  slices.size(), (unsigned long long)model.weights().bytes, (unsigned long long)planned.weights,
                  (unsigned long long)session.kv_cache_bytes(), (unsigned long long)planned.kv_cache,
                  (unsigned long long)session.state_bytes(), (unsigned long long)planned.state);
      EXPECT_EQ(model.weights().bytes, planned.weights);
      EXPECT_EQ(session.kv_cache_bytes(), planned.kv_cache);
      EXPECT_EQ(session.state_bytes(), planned.state);
      EXPECT_GT(planned.kv_cache, 0u);
      EXPECT_GT(planned.state, 0u);
    }
  }
}

}  // namespace
}  // namespace uneven
