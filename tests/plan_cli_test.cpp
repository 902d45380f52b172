// `uneven plan` end to end: the table, the mode and its reasons, --json, explicit shares on tiny models, errors.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "cli_run.h"

namespace {

namespace fs = std::filesystem;
using uneven::testing::CliOutput;
using uneven::testing::run_uneven;

const fs::path kSource = UNEVEN_SOURCE_DIR;

std::string configs(const std::string& name) { return (kSource / "tests/data/configs" / (name + ".json")).string(); }

// The table row of a node: the line starting with its name.
std::string row(const std::string& text, const std::string& node) {
  size_t at = text.find("\n" + node + " ");
  if (at == std::string::npos) return "";
  return text.substr(at + 1, text.find('\n', at + 1) - at - 1);
}

TEST(PlanCli, TableShowsSharesBytesTimeAndTheChoice) {
  const CliOutput out = run_uneven("plan --config " + configs("qwen3.5-122b-a10b") + " --nodes 128G,48G --bandwidth 546,273 --quant 8:64");
  ASSERT_EQ(out.exit_code, 0) << out.text;
  // One column per unit type of this hybrid MoE model, and bytes, total against budget, time.
  for (const char* column : {"q heads", "kv held", "lin v", "lin k held", "experts", "shared", "vocab", "weights", "kv+state",
                             "total / memory", "ms/token"})
    EXPECT_NE(out.text.find(column), std::string::npos) << column << "\n" << out.text;
  const std::string small = row(out.text, "node1");
  ASSERT_FALSE(small.empty()) << out.text;
  EXPECT_NE(small.find("48.00 GiB"), std::string::npos) << small;
  EXPECT_NE(small.find("273"), std::string::npos) << small;
  EXPECT_NE(out.text.find("predicted decode:"), std::string::npos);
  EXPECT_NE(out.text.find("tok/s"), std::string::npos);
  EXPECT_NE(out.text.find("mode: tensor"), std::string::npos) << out.text;
  EXPECT_NE(out.text.find("the equal split does not fit"), std::string::npos) << out.text;
  EXPECT_NE(out.text.find("rejected equal: node1 needs"), std::string::npos) << out.text;
  EXPECT_NE(out.text.find("rejected pipeline"), std::string::npos) << out.text;
  EXPECT_NE(out.text.find("rejected single node"), std::string::npos) << out.text;
  EXPECT_NE(out.text.find("plan hash: fnv1a64:"), std::string::npos);
}

TEST(PlanCli, JsonFileIsTheHashedPlan) {
  const fs::path file = fs::temp_directory_path() / ("uneven_plan_" + std::to_string(::getpid()) + ".json");
  const CliOutput out = run_uneven("plan --config " + configs("llama-3.1-70b") + " --nodes 96G,48G,24G,24G --dtype bf16 --json " + file.string());
  ASSERT_EQ(out.exit_code, 0) << out.text;
  std::ifstream in(file);
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  fs::remove(file);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["version"], 1);
  EXPECT_EQ(j["mode"], "tensor");
  EXPECT_EQ(j["world_size"], 4);
  ASSERT_TRUE(j["hash"].is_string());
  // The hash printed under the table is the one in the file.
  EXPECT_NE(out.text.find(j["hash"].get<std::string>()), std::string::npos) << out.text;
  EXPECT_EQ(j["layers"].size(), 80u);
  // `--json -` writes the same plan to standard output: planning is deterministic.
  const CliOutput again = run_uneven("plan --config " + configs("llama-3.1-70b") + " --nodes 96G,48G,24G,24G --dtype bf16 --json -");
  ASSERT_EQ(again.exit_code, 0);
  EXPECT_EQ(nlohmann::json::parse(again.text, nullptr, false), j);
}

// Explicit shares on tiny models: every node with a positive share gets layers (pipeline) or a piece of every
// dimension (tensor), even where a small share of few units would round to nothing.
TEST(PlanCli, ExplicitSharesOnTinyModels) {
  const std::string stories = "--model " + (kSource / "models/stories260K.gguf").string();
  struct Run {
    std::string args;
    int nodes;
  };
  std::vector<Run> runs = {{stories + " --nodes 3G,1G --split 3,1 --mode pipeline", 2},
                           {stories + " --nodes 5G,2G,1G --split 5,2,1 --mode pipeline", 3},
                           {stories + " --nodes 5G,2G,1G --split 5,2,1 --mode tensor", 3}};
  for (const auto& entry : fs::directory_iterator(kSource / "tests/data/hf"))
    if (entry.is_directory())
      for (const char* mode : {"tensor", "pipeline"})
        runs.push_back({"--model " + entry.path().string() + " --nodes 3G,1G --split 3,1 --mode " + mode, 2});
  ASSERT_GE(runs.size(), 13u);
  for (const Run& r : runs) {
    const CliOutput out = run_uneven("plan " + r.args + " --json -");
    ASSERT_EQ(out.exit_code, 0) << r.args << "\n" << out.text;
    const nlohmann::json j = nlohmann::json::parse(out.text, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << out.text;
    EXPECT_EQ(j["world_size"], r.nodes) << r.args;
    if (r.args.find("pipeline") != std::string::npos) {
      ASSERT_EQ(j["stages"].size(), size_t(r.nodes)) << r.args;
      for (const auto& s : j["stages"]) EXPECT_GT(s["layers"][1].get<int>(), s["layers"][0].get<int>()) << r.args << " " << s.dump();
    }
  }
  // 5 layers, shares 5:2:1: the stages hold 3, 1 and 1 layers (never 0 for the 1/8 share).
  const CliOutput p = run_uneven("plan " + stories + " --nodes 5G,2G,1G --split 5,2,1 --mode pipeline");
  ASSERT_EQ(p.exit_code, 0) << p.text;
  EXPECT_NE(row(p.text, "node0").find("0-2"), std::string::npos) << p.text;
  EXPECT_NE(row(p.text, "node1").find("3-3"), std::string::npos) << p.text;
  EXPECT_NE(row(p.text, "node2").find("4-4"), std::string::npos) << p.text;
  // More nodes than layers: the one case a pipeline cannot serve, said with the numbers.
  const CliOutput many = run_uneven("plan " + stories + " --nodes 1G,1G,1G,1G,1G,1G --split 1,1,1,1,1,1 --mode pipeline");
  EXPECT_NE(many.exit_code, 0);
  EXPECT_NE(many.text.find("the model has 5 layers but 6 nodes have a positive share"), std::string::npos) << many.text;
}

TEST(PlanCli, ErrorsNameTheConstraintAndExitNonZero) {
  const std::string model = "plan --config " + configs("qwen3-8b");
  struct Case {
    std::string args, message;
  };
  const fs::path bad = fs::temp_directory_path() / ("uneven_plan_bad_" + std::to_string(::getpid()) + ".json");
  std::ofstream(bad) << R"({"model_type": "gpt_neox", "hidden_size": 64})";
  const std::vector<Case> cases = {
      {model + " --nodes ''", "no nodes given"},
      {model + " --nodes 0", "node0 has no memory (0 bytes)"},
      {model + " --nodes 8G,-4G", "memory size '-4G' must not be negative"},
      {model + " --nodes 8G,lots", "memory size 'lots' is not a number"},
      {model + " --nodes 8G,4X", "unknown unit 'X'"},
      {model + " --nodes 8G,8G --bandwidth 100", "--bandwidth has 1 values but --nodes has 2"},
      {model + " --nodes 8G,8G --split 1,2,3", "--split has 3 shares but there are 2 nodes"},
      {"plan --config " + bad.string() + " --nodes 8G", "unsupported architecture 'gpt_neox'"},
      {"plan --config " + configs("llama-3.1-70b") + " --nodes 48G,24G --dtype bf16", "does not fit on these 2 nodes"},
  };
  for (const Case& k : cases) {
    const CliOutput out = run_uneven(k.args);
    EXPECT_NE(out.exit_code, 0) << k.args;
    EXPECT_NE(out.text.find(k.message), std::string::npos) << k.args << "\n" << out.text;
  }
  fs::remove(bad);
  // The impossible cluster names the shortfall in bytes.
  const CliOutput out = run_uneven("plan --config " + configs("llama-3.1-70b") + " --nodes 48G,24G --dtype bf16");
  EXPECT_NE(out.text.find("GiB short"), std::string::npos) << out.text;
  EXPECT_NE(out.text.find("have 72.00 GiB"), std::string::npos) << out.text;
}

}  // namespace
