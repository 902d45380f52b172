// Inputs the fuzzers found (fuzz/findings/<target>/) stay fixed: each is refused with uneven::Error, never
// undefined behaviour (the sanitizer build runs this too) or another exception.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "model/config.h"
#include "test_files.h"
#include "util/error.h"

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
  j["eos_token_id"] = {1, 1e30};
  testing::expect_error([&] { config_from_hf_json(j, "c.json"); }, {"c.json", "eos_token_id lists 1e+30"});
}

}  // namespace
}  // namespace uneven
