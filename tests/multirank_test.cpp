// Multi-rank equivalence through mpirun on localhost: every split (tensor 3:1 and 5:2:1, pipeline)
// generates the same greedy tokens as one rank, with logits within 1e-4, for every model we ship.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_run.h"

namespace {

namespace fs = std::filesystem;
const fs::path kSource = UNEVEN_SOURCE_DIR;

struct Output : uneven::testing::CliOutput {
  std::vector<float> logits;
};

// Runs the UNEVEN_BINARY executable, collecting the logits each sampled token came from.
Output run(const std::string& args) {
  const fs::path logits = fs::temp_directory_path() / ("uneven_mr_" + std::to_string(::getpid()) + ".f32");
  Output out;
  static_cast<uneven::testing::CliOutput&>(out) = uneven::testing::run_uneven(args + " --logits-out " + logits.string());
  std::ifstream in(logits, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  out.logits.resize(bytes.size() / sizeof(float));
  std::memcpy(out.logits.data(), bytes.data(), out.logits.size() * sizeof(float));
  fs::remove(logits);
  return out;
}

void expect_equivalent(const std::string& model_args, const std::string& what) {
  SCOPED_TRACE(what);
  Output single = run("generate " + model_args);
  ASSERT_EQ(single.exit_code, 0) << single.text;
  ASSERT_GE(single.json["generated_ids"].size(), 32u) << single.text;
  for (const std::string split : {"--ranks 2 --split 3,1", "--ranks 3 --split 5,2,1"})
    for (const std::string mode : {"tensor", "pipeline"}) {
      Output multi = run("generate " + model_args + " " + split + " --mode " + mode);
      SCOPED_TRACE(split + " --mode " + mode);
      ASSERT_EQ(multi.exit_code, 0) << multi.text;
      EXPECT_EQ(multi.json["generated_ids"], single.json["generated_ids"]);
      EXPECT_EQ(multi.json["ranks"], split.find("--ranks 2") != std::string::npos ? 2 : 3);
      ASSERT_EQ(multi.logits.size(), single.logits.size());
      float diff = 0;
      for (size_t i = 0; i < multi.logits.size(); ++i) diff = std::max(diff, std::abs(multi.logits[i] - single.logits[i]));
      EXPECT_LE(diff, 1e-4f);
    }
}

TEST(MultiRank, Stories260KSplitsMatchOneRank) {
  expect_equivalent("--model " + (kSource / "models/stories260K.gguf").string() +
                        " --prompt 'Once upon a time' -n 40 --json --threads 1",
                    "stories260K");
}

TEST(MultiRank, TransformersFixturesSplitsMatchOneRank) {
  int checked = 0;
  for (const auto& entry : fs::directory_iterator(kSource / "tests/data/hf")) {
    if (!fs::exists(entry.path() / "reference.json")) continue;
    std::ifstream in(entry.path() / "reference.json");
    std::string prompt = nlohmann::json::parse(in)["prompt"];
    for (char& c : prompt)
      if (c == '\'') c = ' ';
    expect_equivalent("--model " + entry.path().string() + " --prompt '" + prompt + "' -n 32 --ignore-eos --json --threads 1",
                      entry.path().filename().string());
    // The 5:2:1 split is the case the issue asks for: a query-head boundary inside a KV group, so that KV
    // head is held (weights and cache) by two ranks, and the smallest rank holds fewer KV heads than groups.
    const fs::path plan_file = fs::temp_directory_path() / ("uneven_mr_plan_" + std::to_string(::getpid()) + ".json");
    uneven::testing::CliOutput made = uneven::testing::run_uneven("plan --model " + entry.path().string() +
                                                                  " --nodes 5G,2G,1G --split 5,2,1 --mode tensor --json " + plan_file.string());
    ASSERT_EQ(made.exit_code, 0) << made.text;
    const nlohmann::json plan = nlohmann::json::parse(std::ifstream(plan_file));
    fs::remove(plan_file);
    const nlohmann::json config = nlohmann::json::parse(std::ifstream(entry.path() / "config.json"));
    const int group = config["num_attention_heads"].get<int>() / config["num_key_value_heads"].get<int>();
    const std::vector<int> bounds = plan["layers"][0]["q_heads"];
    EXPECT_TRUE(bounds[1] % group != 0 || bounds[2] % group != 0) << entry.path() << ": no KV head is shared";
    ++checked;
  }
  EXPECT_GE(checked, 4);
}

}  // namespace
