// End-to-end correctness against independent references: transformers (tiny random checkpoints) and
// the reference llama2.c behaviour of the real stories260K model; unsplit and split across ranks.
#include <gtest/gtest.h>

#include <cstdio>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/generator.h"
#include "engine/model_files.h"
#include "engine_test_util.h"

namespace uneven {
namespace {

namespace fs = std::filesystem;
const fs::path kSource = UNEVEN_SOURCE_DIR;

struct Reference {
  std::string prompt;
  std::vector<TokenId> prompt_ids, greedy_ids;
  std::vector<float> logits;  // positions x vocab
  int64_t vocab = 0;
};

Reference load_reference(const fs::path& dir) {
  std::ifstream in(dir / "reference.json");
  EXPECT_TRUE(in.good()) << dir;
  nlohmann::json j = nlohmann::json::parse(in);
  Reference r;
  r.prompt = j["prompt"];
  r.prompt_ids = j["prompt_ids"].get<std::vector<TokenId>>();
  r.greedy_ids = j["greedy_ids"].get<std::vector<TokenId>>();
  auto shape = j["logits_shape"].get<std::vector<int64_t>>();
  r.vocab = shape[1];
  r.logits.resize(size_t(shape[0] * shape[1]));
  std::ifstream lf(dir / j["logits_file"].get<std::string>(), std::ios::binary);
  lf.read(reinterpret_cast<char*>(r.logits.data()), std::streamsize(r.logits.size() * sizeof(float)));
  EXPECT_TRUE(lf.good()) << "short logits file in " << dir;
  return r;
}

// Greedy continuation by stepping the session from the prompt (the same path generate() takes).
std::vector<TokenId> greedy(Session& s, const std::vector<TokenId>& prompt, size_t n) {
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

void check_model_against_reference(const fs::path& model_path, const fs::path& ref_dir) {
  SCOPED_TRACE(model_path.string());
  Reference ref = load_reference(ref_dir);
  ModelFiles files = open_model(model_path.string(), {});
  ASSERT_NE(files.tokenizer, nullptr);
  EXPECT_EQ(files.tokenizer->encode(ref.prompt, true), ref.prompt_ids) << "tokenizer disagrees with the reference";
  ASSERT_EQ(files.config.vocab_size, ref.vocab);

  Model model(files.config, single_rank_slices(files.config), *files.weights);
  ThreadPool pool(2);
  auto comm = make_local_collective();
  Session session(model, *comm, pool, int64_t(ref.prompt_ids.size() + ref.greedy_ids.size() + 1));
  std::vector<float> logits;
  session.forward(ref.prompt_ids.data(), int64_t(ref.prompt_ids.size()), logits, true);
  const float diff = testing::max_abs_diff(logits, ref.logits);
  std::printf("%s: %zu positions, max |logit - reference| = %.3g\n", model_path.filename().c_str(), ref.prompt_ids.size(), double(diff));
  EXPECT_LE(diff, 1e-4f) << "logits differ from the reference";
  EXPECT_EQ(greedy(session, ref.prompt_ids, ref.greedy_ids.size()), ref.greedy_ids);

  // The same model split 3:1 and 5:2:1 by the planner over in-process ranks.
  for (auto shares : {std::vector<double>{3, 1}, std::vector<double>{5, 2, 1}}) {
    auto split_logits = testing::run_split(files.config, *files.weights, testing::planned_slices(files.config, shares),
                                           ref.prompt_ids);
    EXPECT_LE(testing::max_abs_diff(split_logits, ref.logits), 1e-4f) << shares.size() << " ranks";
  }
}

TEST(TransformersReference, TinyCheckpointsMatchLogitsAndGreedyTokens) {
  const fs::path root = kSource / "tests/data/hf";
  int checked = 0;
  for (const auto& entry : fs::directory_iterator(root)) {
    if (!fs::exists(entry.path() / "reference.json")) continue;
    check_model_against_reference(entry.path(), entry.path());
    ++checked;
  }
  EXPECT_GE(checked, 4) << "expected llama, llama (tied), qwen2 and qwen3 fixtures under " << root;
}

TEST(Stories260K, GreedyContinuationMatchesLlama2c) {
  const fs::path ref_dir = kSource / "tests/data/stories260K";
  check_model_against_reference(kSource / "models/stories260K.gguf", ref_dir);

  ModelFiles files = open_model((kSource / "models/stories260K.gguf").string(), {});
  Model model(files.config, single_rank_slices(files.config), *files.weights);
  ThreadPool pool(2);
  auto comm = make_local_collective();
  Session session(model, *comm, pool, 512);
  GenerateRequest req;
  req.prompt = "Once upon a time";
  req.max_tokens = 60;
  std::string streamed;
  GenerateResult r = generate(session, *comm, files.tokenizer.get(), req, [&](std::string_view s) { streamed += s; });
  EXPECT_EQ(r.generated_ids, load_reference(ref_dir).greedy_ids);
  EXPECT_EQ(streamed, r.text);
  EXPECT_EQ(r.text.rfind(", there was a little girl named Lily. She loved to play outside in the park.", 0), 0u) << r.text;

  // A stop string ends the text before it, and nothing of it is streamed.
  req.stop = {"Lily"};
  streamed.clear();
  r = generate(session, *comm, files.tokenizer.get(), req, [&](std::string_view s) { streamed += s; });
  EXPECT_EQ(r.finish_reason, "stop");
  EXPECT_EQ(r.text, ", there was a little girl named ");
  EXPECT_EQ(streamed, r.text);
}

}  // namespace
}  // namespace uneven
