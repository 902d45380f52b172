// Inputs the fuzzers found (fuzz/findings/<target>/) stay fixed: each is refused with uneven::Error, never
// undefined behaviour (the sanitizer build runs this too) or another exception.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "model/config.h"
#include "model/tensor_file.h"
#include "plan/plan.h"
#include "test_files.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/json_integer.h"

namespace uneven {
namespace {

namespace fs = std::filesystem;
const fs::path kFindings = fs::path(UNEVEN_SOURCE_DIR) / "fuzz/findings";

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(FuzzFindings, ConfigInputsAreRefusedWithErrors) {
  int checked = 0;
  for (const auto& entry : fs::directory_iterator(kFindings / "config")) {
    SCOPED_TRACE(entry.path().string());
    const nlohmann::json j = nlohmann::json::parse(read_all(entry.path()), nullptr, false);
    if (j.is_discarded()) continue;  // the harness feeds text JSON; a non-JSON finding would be a parser bug
    EXPECT_THROW(config_from_hf_json(j, entry.path().string()), Error);
    ++checked;
  }
  EXPECT_GE(checked, 2);
}

TEST(FuzzFindings, IntegerFieldsHoldingHugeFloatsAreNamed) {
  nlohmann::json j = {{"model_type", "llama"}, {"hidden_size", 64}, {"num_hidden_layers", 1},
                      {"num_attention_heads", 4}, {"num_key_value_heads", 1e30}, {"intermediate_size", 8},
                      {"vocab_size", 10}};
  testing::expect_error([&] { config_from_hf_json(j, "c.json"); },
                        {"c.json", "field 'num_key_value_heads' must be an integer, got 1e+30"});
  j["num_key_value_heads"] = 2.0;  // an integer written as a float is taken
  EXPECT_EQ(config_from_hf_json(j, "c.json").num_kv_heads, 2);
  j["partial_rotary_factor"] = 1.06667e28;  // head_dim x factor no int64 holds (config_fuzz)
  testing::expect_error([&] { config_from_hf_json(j, "c.json"); }, {"c.json", "partial_rotary_factor must be in (0, 1]"});
  j.erase("partial_rotary_factor");
  j["hidden_size"] = int64_t(1) << 50;
  testing::expect_error([&] { config_from_hf_json(j, "c.json"); }, {"c.json", "hidden_size is 1125899906842624, larger than"});
  j["hidden_size"] = 64;
  j["eos_token_id"] = {1, 1e30};
  testing::expect_error([&] { config_from_hf_json(j, "c.json"); }, {"c.json", "eos_token_id lists 1e+30"});
}

// The files of one findings directory, each read whole.
std::vector<std::pair<std::string, std::string>> findings(const std::string& target) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& entry : fs::directory_iterator(kFindings / target)) out.emplace_back(entry.path().string(), read_all(entry.path()));
  return out;
}

// gguf_fuzz: a header whose block_count was ~1.2e9 made the per-layer metadata tables allocate 9.5 GB.
TEST(FuzzFindings, GgufInputsAreRefusedWithErrors) {
  int checked = 0;
  for (const auto& [path, bytes] : findings("gguf")) {
    SCOPED_TRACE(path);
    EXPECT_THROW(
        {
          const TensorFiles tf = TensorFiles::open_gguf(path);
          (void)config_from_gguf_metadata(tf.metadata(), path);
        },
        Error);
    ++checked;
  }
  EXPECT_GE(checked, 1);
  nlohmann::json md = {{"general.architecture", "llama"}, {"llama.embedding_length", 64}, {"llama.block_count", 1190000000},
                       {"llama.attention.head_count", 4}, {"llama.feed_forward_length", 128}, {"llama.vocab_size", 10}};
  testing::expect_error([&] { config_from_gguf_metadata(md, "m.gguf"); },
                        {"m.gguf", "block_count is 1190000000", "from 1 to 65536 layers"});
  md["llama.block_count"] = 2;
  md["llama.context_length"] = 7.7e25;  // a float metadata value no int64 holds
  testing::expect_error([&] { config_from_gguf_metadata(md, "m.gguf"); },
                        {"m.gguf", "'llama.context_length' must be an integer", "7.7e+25"});
  md["llama.context_length"] = 4096.0;  // a whole number stored as a float is taken
  EXPECT_EQ(config_from_gguf_metadata(md, "m.gguf").max_position, 4096);
}

// plan_fuzz: an integer list holding 7.8e25 was converted to int64 (undefined behaviour). The harness
// re-hashes mutated plans so they reach the field checks; the test does the same.
TEST(FuzzFindings, PlanInputsAreRefusedWithErrors) {
  int checked = 0;
  for (const auto& [path, text] : findings("plan")) {
    SCOPED_TRACE(path);
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    ASSERT_TRUE(j.is_object());
    j["hash"] = plan_content_hash(j);
    EXPECT_THROW(plan_from_json(j, path), Error);
    ++checked;
  }
  EXPECT_GE(checked, 1);
  // The first finding is otherwise a well-formed plan: one bad number is all it takes.
  nlohmann::json j = nlohmann::json::parse(read_all(kFindings / "plan/crash-e3ff4b9cc5e0faec0f7464f2142299aa281b28da"));
  j["context"] = 1e300;
  j["hash"] = plan_content_hash(j);
  testing::expect_error([&] { plan_from_json(j, "p.json"); }, {"p.json: malformed plan", "'context' must be an integer", "1e+300"});
  j["format"] = 5;  // value("format", "") threw nlohmann's type_error, not uneven::Error
  testing::expect_error([&] { plan_from_json(j, "p.json"); }, {"p.json: not an uneven plan"});
}

// Fields of the wrong type outside the checked ones ("model_type": 5, "general.architecture": 5) escaped as
// nlohmann's type_error (config_fuzz, gguf_fuzz).
TEST(FuzzFindings, WrongTypedFieldsAreErrorsNamingTheFile) {
  testing::expect_error([] { config_from_hf_json({{"model_type", 5}}, "c.json"); }, {"c.json: malformed field", "string"});
  testing::expect_error([] { config_from_gguf_metadata({{"general.architecture", 5}}, "m.gguf"); },
                        {"m.gguf: malformed GGUF metadata", "string"});
}

// tokenizer_fuzz: with "added_tokens" misspelt, the post-processor's template still added id 510 to a
// vocabulary of 510 ids, and encode returned it.
TEST(FuzzFindings, TokenizerInputsAreRefusedWithErrors) {
  int checked = 0;
  for (const auto& [path, bytes] : findings("tokenizer")) {
    SCOPED_TRACE(path);
    const nlohmann::json j = nlohmann::json::parse(bytes.substr(0, bytes.find('\0')), nullptr, false);
    ASSERT_FALSE(j.is_discarded());
    testing::expect_error([&] { tokenizer_from_hf_json(j, nullptr, path); },
                          {path, "post_processor adds token id 510", "outside the vocabulary of"});
    ++checked;
  }
  EXPECT_GE(checked, 1);
}

TEST(JsonInteger, AcceptsWholeNumbersInRangeOnly) {
  using nlohmann::json;
  EXPECT_EQ(json_integer<int>(json(7)), 7);
  EXPECT_EQ(json_integer<int>(json(7.0)), 7);
  EXPECT_EQ(json_integer<int>(json(-2147483648.0)), INT32_MIN);
  EXPECT_EQ(json_integer<int>(json(2147483647.0)), INT32_MAX);
  EXPECT_FALSE(json_integer<int>(json(2147483648.0)));
  EXPECT_FALSE(json_integer<int>(json(int64_t(1) << 40)));
  EXPECT_FALSE(json_integer<int>(json(7.5)));
  EXPECT_FALSE(json_integer<int>(json("7")));
  EXPECT_FALSE(json_integer<int64_t>(json(9.3e18)));
  EXPECT_FALSE(json_integer<int64_t>(json(9223372036854775808.0)));  // 2^63
  EXPECT_EQ(json_integer<int64_t>(json(-9223372036854775808.0)), INT64_MIN);
  EXPECT_FALSE(json_integer<int64_t>(json(UINT64_MAX)));
  EXPECT_EQ(json_integer<uint64_t>(json(UINT64_MAX)), UINT64_MAX);
  EXPECT_FALSE(json_integer<uint64_t>(json(-1)));
  EXPECT_FALSE(json_integer<uint64_t>(json(1.8446744073709552e19)));  // 2^64
  EXPECT_FALSE(json_integer<int64_t>(json(1e30)));
  testing::expect_error([] { require_json_integer<int>(json(3e9), "field 'x'"); },
                        {"field 'x' must be an integer from -2147483648 to 2147483647, got 3000000000.0"});
}

}  // namespace
}  // namespace uneven
