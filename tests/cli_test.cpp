// The `uneven` command line (UNEVEN_BINARY) as users run it: generate (streamed and --json), tokenize on
// stdin, and bad input, each refused with exit code 1 and a message naming the file, tensor or limit.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "cli_run.h"
#include "test_files.h"

namespace uneven::testing {
namespace {

namespace fs = std::filesystem;
const fs::path kSource = UNEVEN_SOURCE_DIR;
const std::string kStories = (kSource / "models/stories260K.gguf").string();

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

TEST(Cli, GenerateStreamsTextThenOneLineOfFigures) {
  CliOutput out = run_uneven("generate --model " + kStories + " --prompt 'Once upon a time' -n 20 --threads 1");
  ASSERT_EQ(out.exit_code, 0) << out.text;
  EXPECT_EQ(out.text.rfind(", there was a little girl named Lily.", 0), 0u) << out.text;  // the continuation only
  EXPECT_NE(out.text.find("\nprompt: 5 tokens, "), std::string::npos) << out.text;
  EXPECT_NE(out.text.find(" | generated: 20 tokens, "), std::string::npos) << out.text;
  EXPECT_NE(out.text.find("finish: length"), std::string::npos) << out.text;
}

TEST(Cli, OnManyRanksTheFiguresFollowTheWholeText) {
  // mpirun forwards stdout and stderr separately; the figures must not land inside the text.
  CliOutput out = run_uneven("generate --model " + kStories + " --prompt 'Once upon a time' -n 30 --threads 1 --ranks 2");
  ASSERT_EQ(out.exit_code, 0) << out.text;
  EXPECT_EQ(out.text.rfind(", there was a little girl named Lily. She loved to play outside in the park. One day,\nprompt: 5 tokens, ", 0), 0u)
      << out.text;
}

TEST(Cli, GenerateJsonHasIdsTextAndFigures) {
  const nlohmann::json ref = read_json(kSource / "tests/data/stories260K/reference.json");
  CliOutput out = run_uneven("generate --model " + kStories + " --prompt 'Once upon a time' -n 12 --json --threads 1");
  ASSERT_EQ(out.exit_code, 0) << out.text;
  ASSERT_TRUE(out.json.is_object()) << out.text;
  EXPECT_EQ(out.json["prompt_ids"], ref["prompt_ids"]);
  ASSERT_EQ(out.json["generated_ids"].size(), 12u);
  for (size_t i = 0; i < 12; ++i) EXPECT_EQ(out.json["generated_ids"][i], ref["greedy_ids"][i]) << i;
  EXPECT_EQ(out.json["text"].get<std::string>().rfind(", there was a little girl", 0), 0u) << out.json.dump();
  EXPECT_EQ(out.json["generated_tokens"], 12);
  EXPECT_GT(out.json["decode_tokens_per_second"].get<double>(), 0.0);
  EXPECT_GT(out.json["prompt_tokens_per_second"].get<double>(), 0.0);
}

TEST(Cli, TokenizePrintsOneLineOfIdsPerInputLine) {
  const nlohmann::json stories = read_json(kSource / "tests/data/stories260K/reference.json");
  const fs::path qwen = kSource / "tests/data/hf/qwen2";
  const nlohmann::json qref = read_json(qwen / "reference.json");
  ScratchDir scratch;
  write_file(scratch.file("in.txt"), "Once upon a time\n" + qref["prompt"].get<std::string>() + "\n");
  auto ids_text = [](const nlohmann::json& ids) {
    std::string s;
    for (const auto& id : ids) s += (s.empty() ? "" : " ") + std::to_string(id.get<int>());
    return s;
  };
  CliOutput a = run_uneven("tokenize --model " + kStories + " < " + scratch.file("in.txt"));
  ASSERT_EQ(a.exit_code, 0) << a.text;
  EXPECT_EQ(a.text.substr(0, a.text.find('\n')), ids_text(stories["prompt_ids"]));
  CliOutput b = run_uneven("tokenize --model " + qwen.string() + " < " + scratch.file("in.txt"));
  ASSERT_EQ(b.exit_code, 0) << b.text;
  const size_t first = b.text.find('\n');
  EXPECT_EQ(b.text.substr(first + 1), ids_text(qref["prompt_ids"]) + "\n");
}

// Runs `args`, expecting exit code 1 and every one of `parts` in the output.
void expect_refused(const std::string& args, const std::vector<std::string>& parts) {
  SCOPED_TRACE(args);
  CliOutput out = run_uneven(args);
  EXPECT_EQ(out.exit_code, 1) << out.text;
  for (const std::string& p : parts) EXPECT_NE(out.text.find(p), std::string::npos) << "\"" << p << "\" not in: " << out.text;
}

// A copy of a fixture whose config.json has `from` replaced by `to`.
std::string edited_copy(const ScratchDir& scratch, const std::string& name, const std::string& from, const std::string& to) {
  const fs::path dir = scratch.file(name);
  fs::copy(kSource / "tests/data/hf/qwen2", dir);
  std::ifstream in(dir / "config.json");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  write_file((dir / "config.json").string(), text);
  return dir.string();
}

TEST(Cli, BadModelsAndRequestsAreRefusedWithTheNumbers) {
  ScratchDir scratch;
  const std::string gen = " --prompt hello -n 2 --threads 1";
  expect_refused("generate --model " + scratch.file("nowhere") + gen, {"nowhere", "no such file"});
  expect_refused("generate --model " + edited_copy(scratch, "shape", "\"intermediate_size\": 384", "\"intermediate_size\": 256") + gen,
                 {"model.layers.0.mlp.gate_proj.weight", "[384, 128]", "[256, 128]", "config.json"});
  expect_refused("generate --model " + edited_copy(scratch, "arch", "\"model_type\": \"qwen2\"", "\"model_type\": \"gpt2\"") + gen,
                 {"unsupported architecture 'gpt2'", "config.json"});
  expect_refused("generate --model " + edited_copy(scratch, "moe", "\"model_type\": \"qwen2\"",
                                                   "\"model_type\": \"qwen3_moe\", \"num_experts\": 4, \"num_experts_per_tok\": 2, "
                                                   "\"moe_intermediate_size\": 64") + gen,
                 {"model.layers.0.self_attn.q_norm.weight is missing", "qwen3_moe"});

  const std::string truncated = scratch.file("truncated");
  fs::copy(kSource / "tests/data/hf/qwen2", truncated);
  fs::resize_file(fs::path(truncated) / "model.safetensors", 1000000);
  expect_refused("generate --model " + truncated + gen, {"model.safetensors", "beyond the end of the file"});

  const std::string gguf_cut = scratch.file("cut.gguf");
  fs::copy_file(kStories, gguf_cut);
  fs::resize_file(gguf_cut, 600000);
  expect_refused("generate --model " + gguf_cut + gen, {"cut.gguf"});

  expect_refused("generate --model " + kStories + " --context 8 --prompt 'Once upon a time there was a big dog' --threads 1",
                 {"prompt is", "tokens long", "context holds 8 tokens"});
  expect_refused("generate --model " + kStories + " --prompt hello --top-p 1.5", {"top"});
}

}  // namespace
}  // namespace uneven::testing
