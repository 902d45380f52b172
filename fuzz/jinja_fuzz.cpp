// libFuzzer harness: the Jinja chat-template interpreter (parse + render with a small fixed context, tight limits).
#include <nlohmann/json.hpp>

#include "chat/jinja.h"
#include "fuzz_common.h"

namespace {
const nlohmann::ordered_json& context() {
  static const nlohmann::ordered_json ctx = nlohmann::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "You are helpful."},
      {"role": "user", "content": "Hi <b>there</b>"},
      {"role": "assistant", "content": "Hello", "reasoning_content": "think",
       "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]},
      {"role": "tool", "content": "42"},
      {"role": "user", "content": null}
    ],
    "tools": [{"type": "function", "function": {"name": "f", "description": "d",
               "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}}],
    "add_generation_prompt": true, "enable_thinking": false,
    "bos_token": "<s>", "eos_token": "</s>", "n": 3, "f": 1.5, "s": "abc", "l": [1, 2, 3], "d": {"k": "v"}
  })");
  return ctx;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string source(reinterpret_cast<const char*>(data), size);
  uneven::jinja::Options options;
  options.max_output_bytes = 1u << 20;
  options.max_iterations = 100000;
  options.max_depth = 40;
  options.now = [] { std::tm t{}; t.tm_year = 124; t.tm_mon = 6; t.tm_mday = 26; return t; };
  fuzz::expect_error_or_success("jinja", [&] {
    const uneven::jinja::Template t(source, options);
    const std::string out = t.render(context());
    if (out.size() > options.max_output_bytes) __builtin_trap();  // the output limit must hold
  });
  return 0;
}
