// Engine tests: random weights, sampler, and split runs against the unsplit run on in-process ranks.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "engine/sampler.h"
#include "engine_test_util.h"
#include "util/error.h"

namespace uneven {
namespace {

using testing::max_abs_diff;
using testing::run_split;
using testing::split_slices;
using testing::tiny_config;

TEST(RandomWeights, SlicesEqualTheSameElementsOfTheWholeTensor) {
  ModelConfig c = tiny_config();
  for (DType dtype : {DType::F32, DType::BF16}) {
    auto src = make_random_weight_source(c, dtype, 7);
    const TensorInfo* t = src->find("model.layers.1.mlp.down_proj.weight");
    ASSERT_NE(t, nullptr);
    ASSERT_EQ(t->shape, (std::vector<int64_t>{64, 172}));
    TensorBytes whole = src->read_all(*t);
    TensorBytes rows = src->read_rows(*t, 10, 20);
    TensorBytes cols = src->read_cols(*t, 43, 100);
    const size_t e = dtype_size(dtype);
    ASSERT_EQ(rows.size(), size_t(10 * 172) * e);
    EXPECT_EQ(0, std::memcmp(rows.data(), whole.as<uint8_t>() + 10 * 172 * e, rows.size()));
    ASSERT_EQ(cols.size(), size_t(64 * 57) * e);
    for (int r = 0; r < 64; ++r)
      EXPECT_EQ(0, std::memcmp(cols.as<uint8_t>() + size_t(r * 57) * e, whole.as<uint8_t>() + size_t(r * 172 + 43) * e, 57 * e));
  }
  // Another seed gives other numbers.
  auto a = make_random_weight_source(c, DType::F32, 1), b = make_random_weight_source(c, DType::F32, 2);
  const TensorInfo* t = a->find("lm_head.weight");
  EXPECT_NE(0, std::memcmp(a->read_all(*t).data(), b->read_all(*t).data(), t->nbytes));
}

TEST(Sampler, GreedyTakesTheArgmaxAndFiltersNarrowToIt) {
  std::vector<float> logits = {0.1f, 2.0f, -1.0f, 1.99f, 0.5f};
  EXPECT_EQ(Sampler({}).sample(logits.data(), 5), 1);
  SamplingParams top1{.temperature = 1.0f, .top_k = 1, .seed = 3};
  SamplingParams tiny_p{.temperature = 1.0f, .top_p = 0.01f, .seed = 3};
  SamplingParams high_min_p{.temperature = 1.0f, .min_p = 0.999f, .seed = 3};
  for (auto p : {top1, tiny_p, high_min_p}) {
    Sampler s(p);
    for (int i = 0; i < 50; ++i) EXPECT_EQ(s.sample(logits.data(), 5), 1);
  }
}

TEST(Sampler, TemperatureSamplingFollowsTheSoftmaxAndIsSeeded) {
  std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  Sampler s({.temperature = 1.0f, .seed = 42});
  std::map<int, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) counts[s.sample(logits.data(), 3)]++;
  EXPECT_NEAR(counts[0] / double(n), 0.5, 0.02);
  EXPECT_NEAR(counts[1] / double(n), 0.3, 0.02);
  EXPECT_NEAR(counts[2] / double(n), 0.2, 0.02);
  // top_p = 0.7 keeps {0.5, 0.3}: renormalised 0.625 / 0.375, and never token 2.
  Sampler nucleus({.temperature = 1.0f, .top_p = 0.7f, .seed = 42});
  counts.clear();
  for (int i = 0; i < n; ++i) counts[nucleus.sample(logits.data(), 3)]++;
  EXPECT_EQ(counts[2], 0);
  EXPECT_NEAR(counts[0] / double(n), 0.625, 0.02);
  Sampler a({.temperature = 0.8f, .seed = 9}), b({.temperature = 0.8f, .seed = 9});
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.sample(logits.data(), 3), b.sample(logits.data(), 3));
}

TEST(Sampler, RejectsOutOfRangeParameters) {
  EXPECT_THROW(Sampler({.temperature = -1.0f}), Error);
  EXPECT_THROW(Sampler({.top_p = 0.0f}), Error);
  EXPECT_THROW(Sampler({.top_p = 1.5f}), Error);
  EXPECT_THROW(Sampler({.min_p = 2.0f}), Error);
  EXPECT_THROW(Sampler({.top_k = -3}), Error);
}

// Splitting heads and MLP columns unevenly across in-process ranks gives the unsplit logits, including
// splits where a rank's query heads straddle two KV groups (that KV head is then held by both ranks).
TEST(SplitForward, UnevenSplitsMatchTheUnsplitRun) {
  for (bool qwen3 : {false, true}) {
    ModelConfig c = tiny_config(true, qwen3);
    auto src = make_random_weight_source(c, DType::F32, 11);
    std::vector<TokenId> tokens = {1, 5, 9, 33, 2, 77, 95, 0, 13, 40, 41, 42};
    std::vector<float> whole = run_split(c, *src, {single_rank_slices(c)}, tokens);
    ASSERT_EQ(whole.size(), tokens.size() * 96);
    EXPECT_GT(*std::max_element(whole.begin(), whole.end()) - *std::min_element(whole.begin(), whole.end()), 0.1f);
    // 3:1 (heads 6/2, columns 129/43) and 5:2:1 (heads 5/2/1: rank 0 straddles KV groups 0 and 1).
    auto two = run_split(c, *src, split_slices(c, {0, 6, 8}, {0, 129, 172}), tokens);
    auto three = run_split(c, *src, split_slices(c, {0, 5, 7, 8}, {0, 108, 150, 172}), tokens);
    EXPECT_LE(max_abs_diff(two, whole), 1e-5f);
    EXPECT_LE(max_abs_diff(three, whole), 1e-5f);
  }
}

TEST(SplitForward, BatchedPromptEqualsTokenByToken) {
  ModelConfig c = tiny_config();
  auto src = make_random_weight_source(c, DType::BF16, 5);
  Model model(c, single_rank_slices(c), *src);
  ThreadPool pool(2);
  auto comm = make_local_collective();
  std::vector<TokenId> tokens = {3, 1, 4, 1, 5, 9, 2, 6};
  Session batched(model, *comm, pool, 32), stepped(model, *comm, pool, 32);
  std::vector<float> all, one;
  batched.forward(tokens.data(), 8, all, true);
  for (size_t i = 0; i < tokens.size(); ++i) {
    stepped.forward(&tokens[i], 1, one);
    std::vector<float> row(all.begin() + long(i * 96), all.begin() + long((i + 1) * 96));
    EXPECT_LE(max_abs_diff(row, one), 1e-5f) << "position " << i;
  }
}

TEST(SplitForward, ContextOverflowAndBadTokensAreErrors) {
  ModelConfig c = tiny_config();
  auto src = make_random_weight_source(c, DType::F32, 5);
  Model model(c, single_rank_slices(c), *src);
  ThreadPool pool(1);
  auto comm = make_local_collective();
  Session s(model, *comm, pool, 4);
  std::vector<TokenId> five = {1, 2, 3, 4, 5};
  std::vector<float> logits;
  try {
    s.forward(five.data(), 5, logits);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exceed the context length of 4 tokens"), std::string::npos) << e.what();
  }
  TokenId bad = 96;
  EXPECT_THROW(s.forward(&bad, 1, logits), Error);
  EXPECT_THROW(Session(model, *comm, pool, 100000), Error);
}

}  // namespace
}  // namespace uneven
