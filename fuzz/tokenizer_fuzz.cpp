// libFuzzer harness: tokenizer.json loading (tokenizer_from_hf_json) plus encode/decode of part of the input.
#include <nlohmann/json.hpp>
#include <string_view>

#include "fuzz_common.h"
#include "tokenizer/tokenizer.h"

// Input: tokenizer.json text, optionally followed by a NUL byte and the text to encode.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const size_t nul = all.find('\0');
  const std::string_view json_text = all.substr(0, nul);
  const std::string_view text = nul == std::string_view::npos ? all.substr(0, std::min<size_t>(size, 200)) : all.substr(nul + 1);
  nlohmann::json j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  fuzz::expect_error_or_success("tokenizer", [&] {
    auto tok = uneven::tokenizer_from_hf_json(j, nullptr, "fuzz/tokenizer.json");
    const std::vector<uneven::TokenId> ids = tok->encode(text, true);
    const int64_t vocab = tok->vocab_size();
    for (uneven::TokenId id : ids)
      if (id < 0 || id >= vocab) __builtin_trap();  // encode must produce ids inside the vocabulary
    (void)tok->decode(ids, false);
    (void)tok->decode(ids, true);
    std::vector<uneven::TokenId> raw;  // ids straight from the text's bytes, some out of range
    for (size_t i = 0; i + 1 < text.size() && raw.size() < 64; i += 2)
      raw.push_back(uneven::TokenId(int8_t(text[i])) * 256 + uint8_t(text[i + 1]));
    (void)tok->decode(raw, false);
    uneven::StreamDecoder stream(*tok);
    for (uneven::TokenId id : ids) (void)stream.push(id);
    (void)stream.flush();
    (void)tok->token_id(text.substr(0, 16));
  });
  return 0;
}
