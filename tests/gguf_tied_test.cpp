// A GGUF without output.weight (how llama.cpp writes tied-embedding models) runs with token_embd as the head.
#include <gtest/gtest.h>

#include <random>

#include "engine/model_files.h"
#include "engine_test_util.h"
#include "test_files.h"

namespace uneven {
namespace {

// A small llama GGUF with seeded F32 weights; `with_output` adds output.weight equal to token_embd.weight.
void write_llama_gguf(const std::string& path, bool with_output) {
  const uint64_t h = 32, ffn = 48, vocab = 40, layers = 2, heads = 4, kv_heads = 2;
  std::mt19937 rng(11);
  std::normal_distribution<float> n(0.0f, 0.3f);
  auto values = [&](uint64_t count, float offset = 0.0f) {
    std::vector<float> v(count);
    for (float& x : v) x = offset + n(rng);
    return testing::f32_bytes(v);
  };
  testing::GgufWriter w;
  std::vector<std::string> tokens;
  for (uint64_t i = 0; i < vocab; ++i) tokens.push_back("t" + std::to_string(i));
  w.kv_str("general.architecture", "llama")
      .kv_u32("llama.embedding_length", h).kv_u32("llama.block_count", layers).kv_u32("llama.feed_forward_length", ffn)
      .kv_u32("llama.attention.head_count", heads).kv_u32("llama.attention.head_count_kv", kv_heads)
      .kv_u32("llama.context_length", 64).kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f)
      .kv_strs("tokenizer.ggml.tokens", tokens);
  const std::string embedding = values(vocab * h);
  w.tensor("token_embd.weight", {h, vocab}, 0, embedding);
  w.tensor("output_norm.weight", {h}, 0, values(h, 1.0f));
  if (with_output) w.tensor("output.weight", {h, vocab}, 0, embedding);
  const uint64_t hd = h / heads;
  for (uint64_t l = 0; l < layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    w.tensor(p + "attn_norm.weight", {h}, 0, values(h, 1.0f));
    w.tensor(p + "attn_q.weight", {h, h}, 0, values(h * h));
    w.tensor(p + "attn_k.weight", {h, kv_heads * hd}, 0, values(h * kv_heads * hd));
    w.tensor(p + "attn_v.weight", {h, kv_heads * hd}, 0, values(h * kv_heads * hd));
    w.tensor(p + "attn_output.weight", {h, h}, 0, values(h * h));
    w.tensor(p + "ffn_norm.weight", {h}, 0, values(h, 1.0f));
    w.tensor(p + "ffn_gate.weight", {h, ffn}, 0, values(h * ffn));
    w.tensor(p + "ffn_up.weight", {h, ffn}, 0, values(h * ffn));
    w.tensor(p + "ffn_down.weight", {ffn, h}, 0, values(ffn * h));
  }
  w.write(path);
}

TEST(GgufTied, NoOutputWeightMeansTiedEmbeddings) {
  testing::ScratchDir dir;
  write_llama_gguf(dir.file("untied.gguf"), true);
  write_llama_gguf(dir.file("tied.gguf"), false);
  const std::vector<TokenId> prompt = {1, 7, 22, 3, 39, 12};
  std::vector<std::vector<float>> logits;
  for (const char* name : {"untied.gguf", "tied.gguf"}) {
    OpenOptions o;
    o.need_tokenizer = false;
    ModelFiles f = open_model(dir.file(name), o);
    EXPECT_EQ(f.config.tie_word_embeddings, std::string(name) == "tied.gguf") << name;
    logits.push_back(testing::run_split(f.config, *f.weights, {single_rank_slices(f.config)}, prompt));
    // Split 3:1 by the planner: the vocabulary rows of the tied matrix serve embedding and head alike.
    EXPECT_LE(testing::max_abs_diff(testing::run_split(f.config, *f.weights, testing::planned_slices(f.config, {3, 1}), prompt),
                                    logits.back()),
              1e-5f)
        << name;
  }
  EXPECT_EQ(logits[1], logits[0]);
  EXPECT_GT(testing::max_abs_diff(std::vector<float>(logits[0].begin(), logits[0].begin() + 40),
                                  std::vector<float>(logits[0].end() - 40, logits[0].end())),
            1e-3f);
}

}  // namespace
}  // namespace uneven
