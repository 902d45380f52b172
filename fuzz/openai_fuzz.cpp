// libFuzzer harness: the OpenAI request parsers (parse_chat_request, parse_completion_request) of `uneven serve`.
#include <nlohmann/json.hpp>

#include "fuzz_common.h"
#include "serve/openai_api.h"

namespace {
// The parsers' documented contract is ApiException (a 400 for the client) or uneven::Error; anything else traps.
template <typename F>
void parse(const char* what, F&& body) {
  fuzz::expect_error_or_success(what, [&] {
    try {
      const uneven::serve::CompletionRequest r = body();
      if (r.stop.size() > 4) __builtin_trap();
      if (r.top_logprobs < -1 || r.top_logprobs > 20) __builtin_trap();
      if (r.max_tokens && *r.max_tokens <= 0) __builtin_trap();
      (void)r.messages.dump();
    } catch (const uneven::serve::ApiException& e) {
      (void)uneven::serve::error_text(e.error);
    }
  });
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::ordered_json body = nlohmann::ordered_json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return 0;
  parse("chat request", [&] { return uneven::serve::parse_chat_request(body); });
  parse("completion request", [&] { return uneven::serve::parse_completion_request(body); });
  return 0;
}
