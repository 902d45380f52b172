// `uneven chat`: each answer is what `uneven generate` gives the conversation rendered by the model's chat
// template (multi-turn, /reset), plain completions for a model without one, and the same on 2 ranks.
#include <gtest/gtest.h>

#include <filesystem>

#include "chat/chat_template.h"
#include "cli_run.h"
#include "test_files.h"
#include "tokenizer/tokenizer.h"

namespace uneven {
namespace {

using testing::run_shell;
using testing::run_uneven;
namespace fs = std::filesystem;

const fs::path kSource = UNEVEN_SOURCE_DIR;

// A new file path under the system temp dir (the test's ScratchDir is the model's; this is for inputs).
std::string temp_file(const std::string& text) {
  static int n = 0;
  const fs::path p = fs::temp_directory_path() / ("uneven_chat_cli_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
  testing::write_file(p.string(), text);
  return p.string();
}

// Runs chat with `lines` on stdin; returns its stdout+stderr.
std::string chat(const std::string& model, const std::string& lines, const std::string& extra = "") {
  const std::string in = temp_file(lines);
  testing::CliOutput out =
      run_shell("timeout -k 5 120 " + std::string(UNEVEN_BINARY) + " chat --model " + model + " -n 12 " + extra + " < " + in);
  fs::remove(in);
  EXPECT_EQ(out.exit_code, 0) << out.text;
  return out.text;
}

std::string generated_text(const std::string& model, const std::string& prompt) {
  const std::string file = temp_file(prompt);
  testing::CliOutput out = run_shell("timeout -k 5 120 " + std::string(UNEVEN_BINARY) + " generate --model " + model +
                                     " -n 12 --json --prompt-file " + file);
  fs::remove(file);
  EXPECT_EQ(out.exit_code, 0) << out.text;
  return out.json.is_object() ? out.json.value("text", std::string()) : std::string();
}

TEST(ChatCli, PlainModelCompletesEachLine) {
  const std::string model = (kSource / "models/stories260K.gguf").string();
  const std::string out = chat(model, "Once upon a time\n/reset\nThe little dog\n");
  EXPECT_NE(out.find("no chat template"), std::string::npos) << out;
  EXPECT_NE(out.find("> " + generated_text(model, "Once upon a time") + "\n"), std::string::npos) << out;
  EXPECT_NE(out.find("> " + generated_text(model, "The little dog") + "\n"), std::string::npos) << out;
  // Two ranks answer alike.
  const std::string two = chat(model, "Once upon a time\n", "--ranks 2 --split 3,1");
  EXPECT_NE(two.find("> " + generated_text(model, "Once upon a time") + "\n"), std::string::npos) << two;
}

TEST(ChatCli, TemplatedConversationIsRenderedTurnByTurn) {
  // The qwen3 transformers fixture with the real Qwen3 chat template beside it.
  testing::ScratchDir dir;
  const fs::path model = fs::path(dir.str()) / "qwen3";
  fs::copy(kSource / "tests/data/hf/qwen3", model);
  fs::copy_file(kSource / "tests/data/chat_templates/qwen3.jinja", model / "chat_template.jinja");
  const ChatTemplate t = load_chat_template(model.string());

  const std::string out = chat(model.string(), "hello there\nand then?\n", "--system \"be brief\"");
  // The first answer: what generate gives the rendered first turn.
  nlohmann::ordered_json messages = {{{"role", "system"}, {"content", "be brief"}}, {{"role", "user"}, {"content", "hello there"}}};
  const std::string first = generated_text(model.string(), render_chat(t, messages, nullptr, true, nlohmann::ordered_json::object()));
  ASSERT_FALSE(first.empty());
  const size_t at = out.find("> " + first + "\n");
  ASSERT_NE(at, std::string::npos) << out << "\nwanted first answer: " << first;
  // The second turn sees the first answer in the conversation.
  messages.push_back({{"role", "assistant"}, {"content", first}});
  messages.push_back({{"role", "user"}, {"content", "and then?"}});
  const std::string second = generated_text(model.string(), render_chat(t, messages, nullptr, true, nlohmann::ordered_json::object()));
  EXPECT_NE(out.find("> " + second + "\n", at + 1), std::string::npos) << out << "\nwanted second answer: " << second;
}

}  // namespace
}  // namespace uneven
