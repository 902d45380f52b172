// libFuzzer harness: config.json -> ModelConfig (config_from_hf_json + validate), for every model family.
#include <nlohmann/json.hpp>

#include "fuzz_common.h"
#include "model/config.h"

namespace {
const char* const kFamilies[] = {"llama", "qwen2", "qwen3", "qwen3_moe", "qwen3_next", "qwen3_5",
                                 "qwen3_5_moe", "qwen3_5_text", "qwen3_5_moe_text"};

void parse(const nlohmann::json& j) {
  fuzz::expect_error_or_success("config", [&] {
    const uneven::ModelConfig c = uneven::config_from_hf_json(j, "fuzz/config.json");
    uneven::validate(c, "fuzz/config.json");
  });
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;  // JSON syntax is nlohmann's business, not the config parser's
  parse(j);
  // The same fields read as each family (and as GGUF metadata), so every family's branch sees fuzzed values.
  if (j.is_object()) {
    const uint8_t pick = size ? data[size - 1] : 0;
    nlohmann::json k = j;
    k["model_type"] = kFamilies[pick % std::size(kFamilies)];
    if (k.contains("text_config") && k["text_config"].is_object())
      k["text_config"]["model_type"] = kFamilies[(pick / 16) % std::size(kFamilies)];
    parse(k);
  }
  fuzz::expect_error_or_success("config gguf", [&] { (void)uneven::config_from_gguf_metadata(j, "fuzz.gguf"); });
  return 0;
}
