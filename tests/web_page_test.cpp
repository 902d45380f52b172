// The web page of `uneven serve` in headless Chromium (tests/browser/page_test.cjs through playwright-core):
// a chat question streams a growing answer equal to the API's greedy one, and the cluster view of a
// `--ranks 2 --split 3,1` server shows both ranks. Skipped when node, chromium or playwright-core is missing
// (scripts/setup_browser.sh installs them). UNEVEN_WEB_SCREENSHOT=PATH keeps the screenshot (docs/ has one).
#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "cli_run.h"
#include "serve/server_process.h"
#include "test_files.h"

namespace uneven::testing {
namespace {

namespace fs = std::filesystem;
const fs::path kSource = UNEVEN_SOURCE_DIR;

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

TEST(WebPage, ChatStreamsAndClusterShowsTwoRanks) {
  std::signal(SIGPIPE, SIG_IGN);  // a server closing early must not end the test
  const fs::path modules = fs::path(env_or("UNEVEN_BROWSER_CLIENTS", (kSource / "build/browser_clients").string())) / "node_modules";
  const std::string chromium = env_or("UNEVEN_CHROMIUM", "/usr/bin/chromium");
  if (run_shell("node --version").exit_code != 0) GTEST_SKIP() << "node is missing: run scripts/setup_browser.sh";
  if (!fs::exists(chromium)) GTEST_SKIP() << chromium << " is missing: run scripts/setup_browser.sh (Debian's chromium)";
  if (!fs::exists(modules / "playwright-core")) GTEST_SKIP() << "playwright-core is not in " << modules << ": run scripts/setup_browser.sh";

  // stories260K has no chat template; this one passes the user's words on as the story's beginning.
  ScratchDir scratch;
  const std::string tmpl = scratch.file("story.jinja");
  write_file(tmpl, "{% for message in messages %}{{ message['content'] }}{% endfor %}");
  ServerProcess server(std::string(UNEVEN_BINARY) + " serve --port 0 --threads 1 --model " + (kSource / "models/stories260K.gguf").string() +
                       " --ranks 2 --split 3,1 --chat-template " + tmpl);
  ASSERT_GT(server.port(), 0) << server.output();

  const std::string shot = env_or("UNEVEN_WEB_SCREENSHOT", scratch.file("page.png"));
  const CliOutput out = run_shell("UNEVEN_NODE_MODULES=" + modules.string() + " UNEVEN_CHROMIUM=" + chromium + " timeout 180 node " +
                                  (kSource / "tests/browser/page_test.cjs").string() + " http://127.0.0.1:" + std::to_string(server.port()) +
                                  " " + shot + " 2 'Once upon a time, there was a little dog' 48");
  ASSERT_EQ(out.exit_code, 0) << out.text << "\nserver:\n" << server.output();
  ASSERT_TRUE(out.json.is_object()) << out.text;
  std::printf("page answer (%zu streamed states): %s\n", out.json["lengths"].size(), out.json["answer"].dump().c_str());
  EXPECT_EQ(out.json.value("ok", false), true) << out.text;
  EXPECT_FALSE(out.json.value("answer", std::string()).empty()) << out.text;
  EXPECT_EQ(out.json["answer"], out.json["api"]) << out.text;
  // 3:1 of the weights: rank 0's bar is the longer one.
  ASSERT_EQ(out.json["ranks"].size(), 2u) << out.text;
  EXPECT_GT(out.json["ranks"][0]["share"].get<double>(), 2 * out.json["ranks"][1]["share"].get<double>()) << out.text;

  // The screenshot is a PNG of the viewport's size (1280 x 760): the signature, then IHDR's width and height.
  std::ifstream png(shot, std::ios::binary);
  std::string head(24, '\0');
  png.read(head.data(), 24);
  ASSERT_TRUE(png) << shot << " is missing or short";
  EXPECT_EQ(head.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  auto be32 = [&](size_t at) { return (uint32_t(uint8_t(head[at])) << 24) | (uint32_t(uint8_t(head[at + 1])) << 16) | (uint32_t(uint8_t(head[at + 2])) << 8) | uint8_t(head[at + 3]); };
  EXPECT_EQ(be32(16), 1280u);
  EXPECT_EQ(be32(20), 760u);
  EXPECT_EQ(server.stop(), 0) << server.output();
}

}  // namespace
}  // namespace uneven::testing
