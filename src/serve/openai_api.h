// The OpenAI wire format of `uneven serve`: request bodies parsed and validated, responses and SSE chunks built.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "engine/sampler.h"
#include "serve/batch_engine.h"
#include "tokenizer/tokenizer.h"

namespace uneven::serve {

// An error the client gets, rendered as OpenAI does: {"error": {"message", "type", "param", "code"}}.
// Empty `param` / `code` are sent as null.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;
  std::string code;
};

// Thrown by the parsers and the server's checks; caught where the response is written.
struct ApiException : std::runtime_error {
  ApiError error;
  explicit ApiException(ApiError e) : std::runtime_error(e.message), error(std::move(e)) {}
};

// 400 invalid_request_error naming `param` (what OpenAI answers for a wrong type or value).
[[noreturn]] void invalid(const std::string& param, const std::string& message, const std::string& code = "");

nlohmann::json error_body(const ApiError& e);
// The error as a JSON text (what goes into a response or an SSE `data:` line).
std::string error_text(const ApiError& e);

enum class Endpoint { Chat, Completion };

// One request, validated. Ranges are OpenAI's (temperature 0..2, top_p 0..1, ...); fields the engine
// does not know (frequency_penalty, user, ...) are ignored, as OpenAI ignores unknown ones.
struct CompletionRequest {
  Endpoint endpoint = Endpoint::Chat;
  std::string model;  // empty when the body has none
  // Chat: the messages, each an object with a string role and string (or null) content: content given
  // as an array of text parts is joined into one string here, so templates see plain strings.
  nlohmann::ordered_json messages;
  nlohmann::ordered_json tools;                 // null or an array
  nlohmann::ordered_json chat_template_kwargs;  // null or an object: extra variables for the template
  // Completions: the prompt as text, or as token ids (then prompt_is_ids).
  std::string prompt_text;
  std::vector<TokenId> prompt_ids;
  bool prompt_is_ids = false;
  std::optional<int64_t> max_tokens;  // > 0 when present (max_completion_tokens wins over max_tokens)
  SamplingParams sampling;            // temperature defaults to 1 as OpenAI's does
  bool seeded = false;                // a seed was given (otherwise the server picks one)
  std::vector<std::string> stop;      // at most 4, none empty
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  int top_logprobs = -1;       // -1: no logprobs; 0..20 alternatives per token otherwise
  bool ignore_eos = false;     // an extension (vLLM has the same field)
};

// Both throw ApiException (400) naming the field and what is wrong with it. `body` is any JSON value.
// Bodies are ordered_json so that messages and tools keep the client's key order.
CompletionRequest parse_chat_request(const nlohmann::ordered_json& body);
CompletionRequest parse_completion_request(const nlohmann::ordered_json& body);

// What one finished (or so far streamed) choice holds.
struct ChoiceResult {
  std::string text;
  std::string finish_reason;  // "stop" or "length"
  std::vector<TokenLogprob> logprobs;
  int64_t prompt_tokens = 0, completion_tokens = 0;
};

// Where a response comes from: the same id and created time go into every chunk of one stream.
struct ResponseMeta {
  std::string id;  // "chatcmpl-..." or "cmpl-..."
  int64_t created = 0;
  std::string model;
};

// A fresh id with OpenAI's prefix for the endpoint (random hex, unique per process in practice).
std::string new_response_id(Endpoint endpoint);

nlohmann::json usage_json(int64_t prompt_tokens, int64_t completion_tokens);
// OpenAI's logprobs objects: chat {"content": [{token, logprob, bytes, top_logprobs}], "refusal": null};
// completions {"tokens", "token_logprobs", "top_logprobs" (one {token: logprob} per token), "text_offset"}
// (`text_offset0`: where the first token's text starts in the whole completion).
nlohmann::json chat_logprobs_json(const std::vector<TokenLogprob>& tokens);
nlohmann::json completion_logprobs_json(const std::vector<TokenLogprob>& tokens, int64_t text_offset0);

// Non-streamed bodies: a `chat.completion` or a `text_completion` with one choice and usage.
nlohmann::json chat_response(const ResponseMeta& meta, const ChoiceResult& choice, bool with_logprobs);
nlohmann::json completion_response(const ResponseMeta& meta, const ChoiceResult& choice, bool with_logprobs);

// Streamed chunks. Chat: `chat.completion.chunk` with a delta ({"role": "assistant", "content": ""} first,
// then {"content": piece}, then {} with the finish reason); completions: `text_completion` with text.
// With include_usage every chunk carries "usage": null and usage_chunk() comes last with empty choices.
nlohmann::json chat_chunk(const ResponseMeta& meta, const nlohmann::json& delta, const std::string& finish_reason,
                          const nlohmann::json& logprobs, bool include_usage);
nlohmann::json completion_chunk(const ResponseMeta& meta, const std::string& text, const std::string& finish_reason,
                                const nlohmann::json& logprobs, bool include_usage);
nlohmann::json usage_chunk(const ResponseMeta& meta, Endpoint endpoint, int64_t prompt_tokens, int64_t completion_tokens);

// JSON text that never throws on bytes that are not UTF-8 (a token's bytes may be half a character):
// they become U+FFFD.
std::string dump(const nlohmann::json& value);
// One server-sent event: "data: <json>\n\n"; sse_done() is the stream's end, "data: [DONE]\n\n".
std::string sse(const nlohmann::json& value);
inline std::string sse_done() { return "data: [DONE]\n\n"; }

}  // namespace uneven::serve
