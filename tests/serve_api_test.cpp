// The OpenAI wire format of `uneven serve` without a server: every field parsed, every bad input refused with
// its status, param and message, and the response objects and SSE chunks in OpenAI's shape.
#include <gtest/gtest.h>

#include <functional>
#include <set>

#include "serve/openai_api.h"

namespace uneven::serve {
namespace {

using nlohmann::json;

json chat_body(json extra = json::object()) {
  json body = {{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}};
  body.update(extra);
  return body;
}

// Runs `parse`, expecting a 400 naming `param` whose message contains every one of `parts`.
void expect_invalid(const std::function<void()>& parse, const std::string& param, const std::vector<std::string>& parts) {
  try {
    parse();
    ADD_FAILURE() << "accepted; expected a 400 on '" << param << "'";
  } catch (const ApiException& e) {
    EXPECT_EQ(e.error.status, 400);
    EXPECT_EQ(e.error.type, "invalid_request_error");
    EXPECT_EQ(e.error.param, param) << e.error.message;
    for (const std::string& p : parts) EXPECT_NE(e.error.message.find(p), std::string::npos) << "\"" << p << "\" not in: " << e.error.message;
  }
}
void expect_bad_chat(const json& body, const std::string& param, const std::vector<std::string>& parts) {
  SCOPED_TRACE(body.dump());
  expect_invalid([&] { parse_chat_request(body); }, param, parts);
}
void expect_bad_completion(const json& body, const std::string& param, const std::vector<std::string>& parts) {
  SCOPED_TRACE(body.dump());
  expect_invalid([&] { parse_completion_request(body); }, param, parts);
}

TEST(ServeApi, ChatRequestWithEveryField) {
  const CompletionRequest r = parse_chat_request(chat_body({{"max_completion_tokens", 7}, {"max_tokens", 99},
                                                            {"temperature", 0.5}, {"top_p", 0.9}, {"top_k", 40}, {"min_p", 0.05},
                                                            {"seed", 123}, {"stop", {"a", "b"}}, {"stream", true},
                                                            {"stream_options", {{"include_usage", true}}}, {"n", 1},
                                                            {"logprobs", true}, {"top_logprobs", 3}, {"frequency_penalty", 0},
                                                            {"user", "x"}, {"tools", json::array({{{"type", "function"}}})},
                                                            {"chat_template_kwargs", {{"enable_thinking", false}}}}));
  EXPECT_EQ(r.endpoint, Endpoint::Chat);
  EXPECT_EQ(r.model, "m");
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0]["content"], "hi");
  EXPECT_EQ(r.max_tokens, 7);  // max_completion_tokens wins
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 0.9f);
  EXPECT_EQ(r.sampling.top_k, 40);
  EXPECT_FLOAT_EQ(r.sampling.min_p, 0.05f);
  EXPECT_EQ(r.sampling.seed, 123u);
  EXPECT_TRUE(r.seeded);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.top_logprobs, 3);
  EXPECT_EQ(r.tools.size(), 1u);
  EXPECT_EQ(r.chat_template_kwargs["enable_thinking"], false);
}

TEST(ServeApi, ChatDefaultsFollowOpenAI) {
  const CompletionRequest r = parse_chat_request({{"messages", {{{"role", "user"}, {"content", "hi"}}}}});
  EXPECT_EQ(r.model, "");
  EXPECT_FALSE(r.max_tokens.has_value());  // up to the context
  EXPECT_FLOAT_EQ(r.sampling.temperature, 1.0f);
  EXPECT_FALSE(r.seeded);
  EXPECT_FALSE(r.stream);
  EXPECT_EQ(r.top_logprobs, -1);
  EXPECT_TRUE(r.stop.empty());
  // Nulls mean "not given"; logprobs alone gives the sampled token's only.
  const CompletionRequest n = parse_chat_request(chat_body({{"temperature", nullptr}, {"stop", nullptr}, {"logprobs", true}}));
  EXPECT_FLOAT_EQ(n.sampling.temperature, 1.0f);
  EXPECT_EQ(n.top_logprobs, 0);
  EXPECT_EQ(parse_chat_request(chat_body({{"stop", "x"}})).stop, std::vector<std::string>{"x"});
  EXPECT_EQ(parse_chat_request(chat_body({{"top_p", 0}})).sampling.temperature, 0.0f);  // nothing but the best token
  EXPECT_EQ(parse_chat_request(chat_body({{"top_k", -1}})).sampling.top_k, 0);
}

TEST(ServeApi, ContentPartsAreJoinedAndAssistantMayHaveNone) {
  const CompletionRequest r = parse_chat_request(
      {{"messages",
        {{{"role", "system"}, {"content", {{{"type", "text"}, {"text", "a"}}, {{"type", "text"}, {"text", "b"}}}}},
         {{"role", "assistant"}, {"tool_calls", json::array()}},
         {{"role", "tool"}, {"content", "42"}, {"tool_call_id", "c1"}}}}});
  EXPECT_EQ(r.messages[0]["content"], "ab");
  EXPECT_TRUE(r.messages[1]["content"].is_null());
  EXPECT_EQ(r.messages[2]["tool_call_id"], "c1");
}

TEST(ServeApi, BadChatRequestsNameTheFieldAndTheValue) {
  expect_invalid([] { parse_chat_request(json::array()); }, "", {"must be a JSON object", "an array"});
  expect_bad_chat({{"model", "m"}}, "messages", {"'messages' is required"});
  expect_bad_chat({{"messages", "hi"}}, "messages", {"must be an array", "a string"});
  expect_bad_chat({{"messages", json::array()}}, "messages", {"at least one message"});
  expect_bad_chat({{"messages", {1}}}, "messages[0]", {"must be an object", "an integer"});
  expect_bad_chat({{"messages", {{{"content", "x"}}}}}, "messages[0].role", {"must be a string"});
  expect_bad_chat({{"messages", {{{"role", "robot"}, {"content", "x"}}}}}, "messages[0].role", {"'robot'", "system"});
  expect_bad_chat({{"messages", {{{"role", "user"}}}}}, "messages[0].content", {"required for a user message"});
  expect_bad_chat({{"messages", {{{"role", "user"}, {"content", 5}}}}}, "messages[0].content", {"an integer"});
  expect_bad_chat({{"messages", {{{"role", "user"}, {"content", {{{"type", "image_url"}}}}}}}}, "messages[0].content[0]", {"text part"});
  expect_bad_chat(chat_body({{"model", 3}}), "model", {"must be a string"});
  expect_bad_chat(chat_body({{"max_tokens", 0}}), "max_tokens", {"at least 1", "got 0"});
  expect_bad_chat(chat_body({{"max_tokens", -5}}), "max_tokens", {"got -5"});
  expect_bad_chat(chat_body({{"max_completion_tokens", 0}}), "max_completion_tokens", {"got 0"});
  expect_bad_chat(chat_body({{"max_tokens", 1.5}}), "max_tokens", {"must be an integer", "a number"});
  expect_bad_chat(chat_body({{"max_tokens", "10"}}), "max_tokens", {"a string"});
  expect_bad_chat(chat_body({{"temperature", 2.5}}), "temperature", {"[0, 2]", "2.5"});
  expect_bad_chat(chat_body({{"temperature", -1}}), "temperature", {"got -1"});
  expect_bad_chat(chat_body({{"temperature", "hot"}}), "temperature", {"must be a number"});
  expect_bad_chat(chat_body({{"top_p", 1.5}}), "top_p", {"[0, 1]"});
  expect_bad_chat(chat_body({{"top_k", -2}}), "top_k", {"got -2"});
  expect_bad_chat(chat_body({{"top_k", 0.5}}), "top_k", {"must be an integer"});
  expect_bad_chat(chat_body({{"min_p", 2}}), "min_p", {"[0, 1]", "got 2"});
  expect_bad_chat(chat_body({{"seed", "x"}}), "seed", {"must be an integer"});
  expect_bad_chat(chat_body({{"stop", {"a", "b", "c", "d", "e"}}}), "stop", {"at most 4", "got 5"});
  expect_bad_chat(chat_body({{"stop", {"a", 1}}}), "stop", {"'stop[1]'"});
  expect_bad_chat(chat_body({{"stop", 1}}), "stop", {"string or an array"});
  expect_bad_chat(chat_body({{"stream", "yes"}}), "stream", {"must be a boolean"});
  expect_bad_chat(chat_body({{"stream_options", {{"include_usage", true}}}}), "stream_options", {"only allowed when 'stream' is true"});
  expect_bad_chat(chat_body({{"stream", true}, {"stream_options", 1}}), "stream_options", {"must be an object"});
  expect_bad_chat(chat_body({{"stream", true}, {"stream_options", {{"include_usage", 1}}}}), "stream_options.include_usage", {"boolean"});
  expect_bad_chat(chat_body({{"n", 2}}), "n", {"must be 1", "got 2"});
  expect_bad_chat(chat_body({{"logprobs", 1}}), "logprobs", {"must be a boolean"});
  expect_bad_chat(chat_body({{"logprobs", true}, {"top_logprobs", 21}}), "top_logprobs", {"[0, 20]", "got 21"});
  expect_bad_chat(chat_body({{"top_logprobs", 2}}), "top_logprobs", {"needs 'logprobs'"});
  expect_bad_chat(chat_body({{"tools", {{"type", "function"}}}}), "tools", {"must be an array"});
  expect_bad_chat(chat_body({{"chat_template_kwargs", json::array()}}), "chat_template_kwargs", {"must be an object"});
}

TEST(ServeApi, CompletionPrompts) {
  EXPECT_EQ(parse_completion_request({{"prompt", "Once"}}).prompt_text, "Once");
  EXPECT_EQ(parse_completion_request({{"prompt", {"Once"}}}).prompt_text, "Once");
  const CompletionRequest ids = parse_completion_request({{"prompt", {1, 2, 3}}, {"logprobs", 2}});
  EXPECT_TRUE(ids.prompt_is_ids);
  EXPECT_EQ(ids.prompt_ids, (std::vector<TokenId>{1, 2, 3}));
  EXPECT_EQ(ids.top_logprobs, 2);
  EXPECT_EQ(parse_completion_request({{"prompt", {{4, 5}}}}).prompt_ids, (std::vector<TokenId>{4, 5}));
  EXPECT_EQ(parse_completion_request({{"prompt", "x"}}).max_tokens, 16);  // OpenAI's default here
  EXPECT_EQ(parse_completion_request({{"prompt", "x"}, {"logprobs", nullptr}}).top_logprobs, -1);
}

TEST(ServeApi, BadCompletionRequests) {
  expect_bad_completion({{"model", "m"}}, "prompt", {"'prompt' is required"});
  expect_bad_completion({{"prompt", ""}}, "prompt", {"empty"});
  expect_bad_completion({{"prompt", json::array()}}, "prompt", {"empty array"});
  expect_bad_completion({{"prompt", {"a", "b"}}}, "prompt", {"holds 2 prompts"});
  expect_bad_completion({{"prompt", {1, -2}}}, "prompt", {"'prompt[1]'", "-2"});
  expect_bad_completion({{"prompt", {1, "x"}}}, "prompt", {"'prompt[1]'", "a string"});
  expect_bad_completion({{"prompt", 5}}, "prompt", {"must be a string", "an integer"});
  expect_bad_completion({{"prompt", "x"}, {"logprobs", true}}, "logprobs", {"must be an integer", "a boolean"});
  expect_bad_completion({{"prompt", "x"}, {"logprobs", 30}}, "logprobs", {"[0, 20]", "got 30"});
  expect_bad_completion({{"prompt", "x"}, {"echo", true}}, "echo", {"not supported"});
  expect_bad_completion({{"prompt", "x"}, {"max_tokens", 0}}, "max_tokens", {"got 0"});
}

TEST(ServeApi, ErrorBodyIsOpenAIs) {
  const json e = error_body({404, "The model 'x' does not exist", "invalid_request_error", "model", "model_not_found"});
  EXPECT_EQ(e, json::parse(R"({"error": {"message": "The model 'x' does not exist", "type": "invalid_request_error",
                                         "param": "model", "code": "model_not_found"}})"));
  const json n = error_body({500, "boom", "server_error", "", ""});
  EXPECT_TRUE(n["error"]["param"].is_null());
  EXPECT_TRUE(n["error"]["code"].is_null());
}

TEST(ServeApi, ResponsesHaveOpenAIsShape) {
  const ResponseMeta meta{"chatcmpl-1", 1700000000, "stories"};
  ChoiceResult c{"Hello", "length", {{7, "Hel", -0.5f, {{"Hel", -0.5f}, {"X", -2.0f}}}, {8, "lo", -0.25f, {}}}, 5, 2};
  const json chat = chat_response(meta, c, true);
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["id"], "chatcmpl-1");
  EXPECT_EQ(chat["created"], 1700000000);
  EXPECT_EQ(chat["model"], "stories");
  EXPECT_EQ(chat["choices"][0]["index"], 0);
  EXPECT_EQ(chat["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(chat["choices"][0]["message"]["content"], "Hello");
  EXPECT_EQ(chat["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(chat["usage"], json::parse(R"({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})"));
  const json& lp = chat["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(lp.size(), 2u);
  EXPECT_EQ(lp[0]["token"], "Hel");
  EXPECT_EQ(lp[0]["bytes"], json::parse("[72, 101, 108]"));
  EXPECT_FLOAT_EQ(lp[0]["logprob"].get<float>(), -0.5f);
  EXPECT_EQ(lp[0]["top_logprobs"][1]["token"], "X");
  EXPECT_TRUE(chat_response(meta, c, false)["choices"][0]["logprobs"].is_null());

  const json text = completion_response({"cmpl-1", 1, "stories"}, c, true);
  EXPECT_EQ(text["object"], "text_completion");
  EXPECT_EQ(text["choices"][0]["text"], "Hello");
  const json& tl = text["choices"][0]["logprobs"];
  EXPECT_EQ(tl["tokens"], json::parse(R"(["Hel", "lo"])"));
  EXPECT_EQ(tl["text_offset"], json::parse("[0, 3]"));
  EXPECT_FLOAT_EQ(tl["top_logprobs"][0]["X"].get<float>(), -2.0f);
  EXPECT_EQ(tl["token_logprobs"].size(), 2u);
}

TEST(ServeApi, StreamChunks) {
  const ResponseMeta meta{"chatcmpl-2", 5, "m"};
  const json first = chat_chunk(meta, {{"role", "assistant"}, {"content", ""}}, "", nullptr, true);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(first.contains("usage") && first["usage"].is_null());
  const json last = chat_chunk(meta, json::object(), "stop", nullptr, false);
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_FALSE(last.contains("usage"));
  const json usage = usage_chunk(meta, Endpoint::Chat, 3, 4);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 7);
  const json text = completion_chunk({"cmpl-2", 5, "m"}, "piece", "", nullptr, false);
  EXPECT_EQ(text["object"], "text_completion");
  EXPECT_EQ(text["choices"][0]["text"], "piece");
  EXPECT_EQ(usage_chunk(meta, Endpoint::Completion, 1, 1)["object"], "text_completion");

  const std::string event = sse({{"a", 1}});
  EXPECT_EQ(event, "data: {\"a\":1}\n\n");
  EXPECT_EQ(sse_done(), "data: [DONE]\n\n");
  // Half a UTF-8 character (a token's own bytes) does not throw; it becomes U+FFFD.
  EXPECT_EQ(dump(json("\xE2\x82")), "\"\xEF\xBF\xBD\"");
}

TEST(ServeApi, IdsAreUniqueAndPrefixed) {
  std::set<std::string> ids;
  for (int i = 0; i < 100; ++i) ids.insert(new_response_id(Endpoint::Chat));
  EXPECT_EQ(ids.size(), 100u);
  EXPECT_EQ(ids.begin()->rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(new_response_id(Endpoint::Completion).rfind("cmpl-", 0), 0u);
}

}  // namespace
}  // namespace uneven::serve
