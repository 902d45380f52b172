// `uneven serve` end to end over loopback: greedy answers equal `uneven generate` (1 rank and 3 uneven ranks),
// streaming, stop strings, usage, every bad input with its status, 64 concurrent clients, and the official
// `openai` npm client (skipped when scripts/setup_node_clients.sh has not installed it).
#include <gtest/gtest.h>
#include <httplib.h>

#include <csignal>
#include <filesystem>
#include <fstream>

#include "chat/chat_template.h"
#include "cli_run.h"
#include "serve/http_client.h"
#include "serve/server_process.h"
#include "test_files.h"

namespace uneven::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
const fs::path kSource = UNEVEN_SOURCE_DIR;
const std::string kStories = (kSource / "models/stories260K.gguf").string();
const std::string kServe = std::string(UNEVEN_BINARY) + " serve --port 0 --threads 1 ";

// The `data:` payloads of an SSE body, in order.
std::vector<std::string> sse_data(const std::string& body) {
  std::vector<std::string> out;
  for (size_t at = 0; (at = body.find("data: ", at)) != std::string::npos;) {
    const size_t end = body.find("\n\n", at);
    out.push_back(body.substr(at + 6, end - at - 6));
    at = end;
  }
  return out;
}

json generate_json(const std::string& model, const std::string& prompt, int n, const std::string& extra = "") {
  std::string quoted = "'";
  for (char c : prompt) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  CliOutput out = run_uneven("generate --model " + model + " --prompt " + quoted + "' -n " + std::to_string(n) + " --json --threads 1 " + extra);
  EXPECT_EQ(out.exit_code, 0) << out.text;
  return out.json;
}

void expect_error(const Reply& r, int status, const std::string& code, const std::vector<std::string>& parts) {
  EXPECT_EQ(r.status, status) << r.text;
  ASSERT_TRUE(r.body.is_object() && r.body.contains("error")) << r.text;
  const json& e = r.body["error"];
  EXPECT_TRUE(e.contains("message") && e.contains("type") && e.contains("param") && e.contains("code")) << r.text;
  if (!code.empty()) {
    EXPECT_EQ(e["code"], code) << r.text;
  }
  for (const auto& p : parts) EXPECT_NE(e["message"].get<std::string>().find(p), std::string::npos) << "\"" << p << "\" not in " << r.text;
}

json greedy(const std::string& prompt, int n) { return {{"prompt", prompt}, {"max_tokens", n}, {"temperature", 0}}; }

class Serve : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { std::signal(SIGPIPE, SIG_IGN); }  // a server closing early must not end the test
};

TEST_F(Serve, CompletionsEqualGenerateStreamedOrNot) {
  ServerProcess server(kServe + "--model " + kStories);
  ASSERT_GT(server.port(), 0) << server.output();
  const json ref = generate_json(kStories, "Once upon a time", 20);
  const Reply r = post(server.port(), "/v1/completions", greedy("Once upon a time", 20));
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["object"], "text_completion");
  EXPECT_EQ(r.body["model"], "stories260K");
  EXPECT_EQ(r.body["choices"][0]["text"], ref["text"]);
  EXPECT_EQ(r.body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(r.body["usage"], json({{"prompt_tokens", 5}, {"completion_tokens", 20}, {"total_tokens", 25}}));

  // The same prompt as token ids gives the same answer.
  const Reply ids = post(server.port(), "/v1/completions", {{"prompt", ref["prompt_ids"]}, {"max_tokens", 20}, {"temperature", 0}});
  EXPECT_EQ(ids.body["choices"][0]["text"], ref["text"]) << ids.text;

  json body = greedy("Once upon a time", 20);
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  const Reply s = post(server.port(), "/v1/completions", body);
  ASSERT_EQ(s.status, 200);
  const auto events = sse_data(s.text);
  ASSERT_GE(events.size(), 3u) << s.text;
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  for (size_t i = 0; i + 2 < events.size(); ++i) text += json::parse(events[i])["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(text, ref["text"].get<std::string>());
  EXPECT_EQ(json::parse(events[events.size() - 3])["choices"][0]["finish_reason"], "length");
  const json usage = json::parse(events[events.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 20);

  // A stop string ends the text before it, with finish_reason "stop".
  json stop = greedy("Once upon a time", 40);
  stop["stop"] = {" named", "zzz"};
  const Reply st = post(server.port(), "/v1/completions", stop);
  EXPECT_EQ(st.body["choices"][0]["text"], ", there was a little girl") << st.text;
  EXPECT_EQ(st.body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(server.stop(), 0) << server.output();  // SIGTERM stops it cleanly
}

TEST_F(Serve, EveryBadRequestGetsItsStatusAndTheServerGoesOn) {
  ServerProcess server(kServe + "--model " + kStories + " --context 64 --max-body 65536");
  const int port = server.port();
  ASSERT_GT(port, 0) << server.output();
  expect_error(post(port, "/v1/completions", std::string("{\"prompt\": ")), 400, "invalid_json", {"could not parse the JSON"});
  expect_error(post(port, "/v1/completions", std::string("[1, 2]")), 400, "", {"must be a JSON object"});
  expect_error(post(port, "/v1/completions", {{"prompt", "x"}, {"max_tokens", 0}}), 400, "invalid_value", {"'max_tokens'", "got 0"});
  expect_error(post(port, "/v1/completions", {{"prompt", "x"}, {"temperature", 3}}), 400, "invalid_value", {"[0, 2]", "got 3"});
  expect_error(post(port, "/v1/completions", {{"prompt", {1, 99999}}}), 400, "invalid_value", {"99999", "vocabulary of 512"});
  expect_error(post(port, "/v1/completions", {{"prompt", "x"}, {"model", "gpt-4o"}}), 404, "model_not_found", {"'gpt-4o'", "stories260K"});
  std::string long_prompt;
  for (int i = 0; i < 40; ++i) long_prompt += "Once upon a time ";
  expect_error(post(port, "/v1/completions", greedy(long_prompt, 5)), 400, "context_length_exceeded", {"64 tokens", "your prompt is"});
  expect_error(post(port, "/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "hi"}}}}}), 400, "no_chat_template",
               {"no usable chat template", "/v1/completions"});
  expect_error(post(port, "/v1/chat/completions", {{"messages", json::array()}}), 400, "invalid_value", {"at least one message"});
  expect_error(get(port, "/v1/nothing"), 404, "unknown_url", {"/v1/nothing"});
  expect_error(get(port, "/v1/models/other"), 404, "model_not_found", {"'other'"});
  {
    // A body over --max-body (raw: a client library might refuse to send it).
    RawConnection c(port);
    const std::string big = "{\"prompt\": \"" + std::string(100000, 'a') + "\"}";
    c.send_all("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
               std::to_string(big.size()) + "\r\n\r\n" + big);
    const std::string got = c.read_until("}}");
    EXPECT_NE(got.find("HTTP/1.1 413"), std::string::npos) << got;
    EXPECT_NE(got.find("larger than the 65536 bytes"), std::string::npos) << got;
  }
  // After all of that, everyone else is still served.
  const Reply ok = post(port, "/v1/completions", greedy("Once upon a time", 4));
  EXPECT_EQ(ok.status, 200) << ok.text;
  EXPECT_EQ(get(port, "/health").body["status"], "ok");
  EXPECT_EQ(get(port, "/v1/models").body["data"][0]["id"], "stories260K");
  const Reply cluster = get(port, "/v1/cluster");
  ASSERT_EQ(cluster.body["ranks"].size(), 1u) << cluster.text;
  EXPECT_GT(cluster.body["ranks"][0]["weight_bytes"].get<double>(), 0);
  const std::string metrics = get(port, "/metrics").text;
  EXPECT_NE(metrics.find("uneven_http_requests_total{endpoint=\"/v1/completions\",status=\"400\"}"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("uneven_http_requests_total{endpoint=\"/v1/completions\",status=\"404\"} 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("uneven_completion_tokens_total 4"), std::string::npos) << metrics;
  EXPECT_NE(get(port, "/").text.find("/v1/chat/completions"), std::string::npos);
}

TEST_F(Serve, ApiKeyIsRequiredOnV1) {
  ServerProcess server(kServe + "--model " + kStories + " --api-key sekrit");
  ASSERT_GT(server.port(), 0) << server.output();
  expect_error(post(server.port(), "/v1/completions", greedy("Once", 2)), 401, "invalid_api_key", {"didn't provide an API key"});
  expect_error(post(server.port(), "/v1/completions", greedy("Once", 2), {{"Authorization", "Bearer wrong"}}), 401, "invalid_api_key",
               {"Incorrect API key"});
  expect_error(get(server.port(), "/v1/models"), 401, "invalid_api_key", {});
  EXPECT_EQ(post(server.port(), "/v1/completions", greedy("Once", 2), {{"Authorization", "Bearer sekrit"}}).status, 200);
  EXPECT_EQ(get(server.port(), "/health").status, 200);  // probes need no key
}

TEST_F(Serve, FullQueueGets429AndAClientThatLeavesFreesItsSlot) {
  ServerProcess server(kServe + "--model " + kStories + " --max-batch 1 --queue 0");
  const int port = server.port();
  ASSERT_GT(port, 0) << server.output();
  // A long stream holds the only slot; once its first token arrived, a second request finds no room.
  const std::string body = json{{"prompt", "Once upon a time"}, {"max_tokens", 2000}, {"ignore_eos", true}, {"temperature", 0}, {"stream", true}}.dump();
  RawConnection first(port);
  first.send_all("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
                 std::to_string(body.size()) + "\r\n\r\n" + body);
  ASSERT_NE(first.read_until("data: ").find("data: "), std::string::npos) << first.got;
  expect_error(post(port, "/v1/completions", greedy("Once", 2)), 429, "rate_limit_exceeded", {"retry later"});
  first.close();  // the client goes away mid-stream: the engine drops its sequence
  Reply next;
  for (int i = 0; i < 100 && next.status != 200; ++i) {
    next = post(port, "/v1/completions", greedy("Once", 2));
    if (next.status != 200) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(next.status, 200) << next.text;
  // The stream's sequence was dropped when its client left (not run to its 2000 tokens).
  const std::string metrics = get(port, "/metrics").text;
  EXPECT_NE(metrics.find("uneven_jobs_total{outcome=\"cancelled\"} 1"), std::string::npos) << metrics;
  EXPECT_EQ(metrics.find("uneven_jobs_total{outcome=\"rejected\"} 0"), std::string::npos) << metrics;
}

// A tiny Hugging Face fixture (random Qwen3 weights) whose tokenizer_config.json carries Qwen3's chat template.
std::string chat_fixture(const ScratchDir& scratch) {
  const fs::path dir = scratch.file("qwen3chat");
  fs::copy(kSource / "tests/data/hf/qwen3", dir);
  std::ifstream t(kSource / "tests/data/chat_templates/qwen3.jinja");
  const std::string tmpl((std::istreambuf_iterator<char>(t)), {});
  std::ifstream in(dir / "tokenizer_config.json");
  json config = json::parse(in);
  config["chat_template"] = tmpl;
  write_file((dir / "tokenizer_config.json").string(), config.dump());
  return dir.string();
}

TEST_F(Serve, ChatRendersTheModelsTemplateAndEqualsGenerate) {
  ScratchDir scratch;
  const std::string model = chat_fixture(scratch);
  ServerProcess server(kServe + "--model " + model);
  ASSERT_GT(server.port(), 0) << server.output();
  const json messages = {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hello there"}}};
  const std::string prompt = render_chat(load_chat_template(model), messages, nullptr, true, json::object());
  const json ref = generate_json(model, prompt, 12);
  const Reply r = post(server.port(), "/v1/chat/completions",
                       {{"messages", messages}, {"max_tokens", 12}, {"temperature", 0}, {"logprobs", true}, {"top_logprobs", 2}});
  ASSERT_EQ(r.status, 200) << r.text;
  EXPECT_EQ(r.body["object"], "chat.completion");
  EXPECT_EQ(r.body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(r.body["choices"][0]["message"]["content"], ref["text"]);
  EXPECT_EQ(r.body["usage"]["prompt_tokens"], ref["prompt_ids"].size());
  EXPECT_EQ(r.body["usage"]["completion_tokens"], 12);
  ASSERT_EQ(r.body["choices"][0]["logprobs"]["content"].size(), 12u);
  EXPECT_EQ(r.body["choices"][0]["logprobs"]["content"][0]["top_logprobs"].size(), 2u);

  const Reply s = post(server.port(), "/v1/chat/completions", {{"messages", messages}, {"max_tokens", 12}, {"temperature", 0}, {"stream", true}});
  const auto events = sse_data(s.text);
  ASSERT_GE(events.size(), 3u) << s.text;
  EXPECT_EQ(json::parse(events[0])["choices"][0]["delta"]["role"], "assistant");
  std::string content;
  for (size_t i = 1; i + 1 < events.size(); ++i) content += json::parse(events[i])["choices"][0]["delta"].value("content", "");
  EXPECT_EQ(content, ref["text"].get<std::string>());
  EXPECT_EQ(json::parse(events[events.size() - 2])["choices"][0]["finish_reason"], "length");
}

TEST_F(Serve, ATemplateThatRaisesIsA400WithItsMessage) {
  ScratchDir scratch;
  write_file(scratch.file("t.jinja"),
             "{% if messages[0].role != 'user' %}{{ raise_exception('the first message must be from the user') }}{% endif %}"
             "{% for m in messages %}{{ m.content }}{% endfor %}");
  ServerProcess server(kServe + "--model " + kStories + " --chat-template " + scratch.file("t.jinja"));
  ASSERT_GT(server.port(), 0) << server.output();
  expect_error(post(server.port(), "/v1/chat/completions", {{"messages", {{{"role", "system"}, {"content", "x"}}}}}), 400,
               "template_error", {"the first message must be from the user", "t.jinja"});
  // The same template renders a good conversation; a stories prompt then continues as completions do.
  const Reply ok = post(server.port(), "/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "Once upon a time"}}}},
                                                                {"max_tokens", 20}, {"temperature", 0}});
  EXPECT_EQ(ok.body["choices"][0]["message"]["content"], generate_json(kStories, "Once upon a time", 20)["text"]) << ok.text;
}

TEST_F(Serve, ThreeUnevenRanksAnswerAsGenerateDoes) {
  ServerProcess server(kServe + "--model " + kStories + " --ranks 3 --split 5,2,1");
  ASSERT_GT(server.port(), 0) << server.output();
  const json ref = generate_json(kStories, "Once upon a time", 30);
  const Reply r = post(server.port(), "/v1/completions", greedy("Once upon a time", 30));
  EXPECT_EQ(r.body["choices"][0]["text"], ref["text"]) << r.text;
  const Reply cluster = get(server.port(), "/v1/cluster");
  ASSERT_EQ(cluster.body["ranks"].size(), 3u) << cluster.text;
  EXPECT_GT(cluster.body["ranks"][0]["weight_share"].get<double>(), cluster.body["ranks"][2]["weight_share"].get<double>());
  EXPECT_EQ(server.stop(), 0) << server.output();
}

TEST_F(Serve, SixtyFourConcurrentClientsEachGetTheirOwnAnswer) {
  ServerProcess server(kServe + "--model " + kStories + " --max-batch 8");
  const int port = server.port();
  ASSERT_GT(port, 0) << server.output();
  const std::vector<std::string> starts = {"Once upon a time", "The cat", "Lily and Tom", "One day, a big dog", "The sun was",
                                           "There was a boy", "In the park", "Mom said"};
  auto request = [&](int i) { return greedy(starts[size_t(i) % starts.size()], 8 + 4 * (i % 7)); };
  std::vector<std::string> alone(64);
  for (int i = 0; i < 64; ++i) alone[size_t(i)] = post(port, "/v1/completions", request(i)).body["choices"][0]["text"].get<std::string>();
  std::vector<Reply> together(64);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> clients;
  for (int i = 0; i < 64; ++i) clients.emplace_back([&, i] { together[size_t(i)] = post(port, "/v1/completions", request(i)); });
  for (auto& c : clients) c.join();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("64 concurrent completions (max-batch 8): %.2f s wall\n", wall);
  for (int i = 0; i < 64; ++i) {
    ASSERT_EQ(together[size_t(i)].status, 200) << i << ": " << together[size_t(i)].text;
    EXPECT_EQ(together[size_t(i)].body["choices"][0]["text"], alone[size_t(i)]) << "client " << i;
  }
}

TEST_F(Serve, OfficialOpenAIClient) {
  const char* env = std::getenv("UNEVEN_NODE_CLIENTS");
  const fs::path modules = fs::path(env ? env : (kSource / "build/node_clients").string()) / "node_modules";
  if (run_shell("node --version").exit_code != 0 || !fs::exists(modules / "openai"))
    GTEST_SKIP() << "node or the openai package is missing: run scripts/setup_node_clients.sh";
  auto client = [&](int port, const std::string& model, const std::string& mode) {
    CliOutput out = run_shell("UNEVEN_NODE_MODULES=" + modules.string() + " timeout 120 node " + (kSource / "tests/serve/openai_client.cjs").string() +
                              " http://127.0.0.1:" + std::to_string(port) + "/v1 " + model + " " + mode);
    EXPECT_EQ(out.exit_code, 0) << out.text;
    return out.json;
  };
  {
    ServerProcess server(kServe + "--model " + kStories);
    ASSERT_GT(server.port(), 0) << server.output();
    const json ref = generate_json(kStories, "Once upon a time", 20);
    const json got = client(server.port(), "stories260K", "");
    EXPECT_EQ(got["completion"]["text"], ref["text"]) << got.dump();
    EXPECT_EQ(got["completion"]["usage"]["total_tokens"], 25);
    EXPECT_EQ(got["completion_stream"]["text"], ref["text"]);
    EXPECT_EQ(got["completion_stream"]["usage"]["completion_tokens"], 20);
    EXPECT_EQ(got["stop"]["text"], ", there was a little girl");
    EXPECT_EQ(got["stop"]["finish_reason"], "stop");
    EXPECT_EQ(got["wrong_model"]["status"], 404);
    EXPECT_EQ(got["wrong_model"]["code"], "model_not_found");
    EXPECT_EQ(got["models"], json::array({"stories260K"}));
    // The same client against three uneven ranks: the same answers.
    ServerProcess split(kServe + "--model " + kStories + " --ranks 3 --split 5,2,1");
    ASSERT_GT(split.port(), 0) << split.output();
    const json on_three = client(split.port(), "stories260K", "");
    EXPECT_EQ(on_three["completion"]["text"], ref["text"]) << on_three.dump();
    EXPECT_EQ(on_three["completion_stream"]["text"], ref["text"]);
    EXPECT_EQ(on_three["stop"], got["stop"]);
    EXPECT_EQ(split.stop(), 0) << split.output();
  }
  ScratchDir scratch;
  const std::string model = chat_fixture(scratch);
  ServerProcess server(kServe + "--model " + model + " --model-id tiny");
  ASSERT_GT(server.port(), 0) << server.output();
  const json messages = {{{"role", "user"}, {"content", "Hello there"}}};
  const json ref = generate_json(model, render_chat(load_chat_template(model), messages, nullptr, true, json::object()), 12);
  const json got = client(server.port(), "tiny", "chat");
  EXPECT_EQ(got["chat"]["content"], ref["text"]) << got.dump();
  EXPECT_EQ(got["chat"]["role"], "assistant");
  EXPECT_EQ(got["chat"]["usage"]["completion_tokens"], 12);
  EXPECT_EQ(got["chat"]["logprobs"], 12);
  EXPECT_EQ(got["chat"]["top"], 2);
  EXPECT_EQ(got["chat_stream"]["content"], ref["text"]);
  EXPECT_EQ(got["chat_stream"]["role"], "assistant");
  EXPECT_EQ(got["chat_stream"]["finish_reason"], "length");
  EXPECT_EQ(got["chat_stream"]["usage"]["prompt_tokens"], ref["prompt_ids"].size());
}

}  // namespace
}  // namespace uneven::testing

namespace uneven::testing {
namespace {

// The KV cache and state of --max-batch sequences at --context are counted before anything is loaded:
// alone against the memory available, on several ranks by the plan.
TEST(ServeStart, MemoryForTheWholeBatchIsCheckedAtStart) {
  const std::string model = (kSource / "configs/qwen3-30b-a3b.json").string();
  CliOutput alone = run_shell("timeout 60 " + kServe + "--model " + model + " --random-weights --max-batch 100 --context 32768");
  EXPECT_NE(alone.exit_code, 0);
  EXPECT_NE(alone.text.find("100 sequence(s) at a context of 32768 tokens need 600.00 GiB of KV cache and state"),
            std::string::npos) << alone.text;
  EXPECT_NE(alone.text.find("--max-batch"), std::string::npos) << alone.text;
  // Llama-3.2-1B's 2.5 GB of weights fit two 20G ranks; 100 sequences of 32768 tokens (200 GiB of cache) do not.
  const std::string small = (kSource / "configs/llama-3.2-1b.json").string();
  CliOutput two = run_shell("timeout 60 " + kServe + "--model " + small + " --random-weights --weight-dtype bf16 "
                            "--max-batch 100 --context 32768 --ranks 2 --mem 20G,20G");
  EXPECT_NE(two.exit_code, 0);
  EXPECT_NE(two.text.find("does not fit on these 2 nodes"), std::string::npos) << two.text;
  EXPECT_NE(two.text.find("the model needs 204.30 GiB"), std::string::npos) << two.text;
}

}  // namespace
}  // namespace uneven::testing
