// mlx-lm checkpoints: quantized tensors decode to the values mlx's formula gives (reference vectors from
// scripts/make_mlx_fixture.py), products match, and malformed checkpoints are refused with the numbers.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "compute/kernels.h"
#include "engine/model.h"
#include "engine/model_files.h"
#include "test_files.h"

namespace uneven {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kMlx = fs::path(UNEVEN_SOURCE_DIR) / "tests" / "data" / "mlx";

OpenOptions no_tokenizer() {
  OpenOptions o;
  o.need_tokenizer = false;
  return o;
}

// The logical tensor (Hugging Face name) and first row holding a reference tensor's row 0 of `expert`.
struct Located {
  std::string name;
  int64_t first_row = 0;
};

Located locate(const json& ref) {
  std::string n = ref.at("name");
  if (n.starts_with("language_model.")) n = n.substr(15);
  const int64_t expert = ref.at("expert").is_null() ? -1 : ref.at("expert").get<int64_t>();
  const std::vector<int64_t> shape = ref.at("logical_shape");
  const auto at = n.find("switch_mlp.");
  if (at == std::string::npos) return {n, 0};
  const std::string prefix = n.substr(0, at), proj = n.substr(at + 11);
  const int64_t rows = shape[1];
  if (proj == "down_proj.weight") return {prefix + "experts.down_proj", expert * rows};
  // gate_up_proj entries are [gate rows; up rows] per expert.
  return {prefix + "experts.gate_up_proj", expert * 2 * rows + (proj == "up_proj.weight" ? rows : 0)};
}

class MlxFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(MlxFixture, TensorsDecodeAsMlxFormulaSays) {
  const fs::path dir = kMlx / GetParam();
  const json ref = json::parse(std::ifstream(dir / "reference.json"));
  ModelFiles files = open_model(dir.string(), no_tokenizer());
  ThreadPool pool(2);
  ASSERT_GE(ref.at("tensors").size(), 3u);
  for (const json& t : ref.at("tensors")) {
    SCOPED_TRACE(t.at("name").get<std::string>());
    const Located where = locate(t);
    const TensorInfo* info = files.weights->find(where.name);
    ASSERT_NE(info, nullptr) << where.name;
    const int64_t bits = t.at("bits");
    EXPECT_EQ(info->dtype, bits == 4 ? DType::MLX4 : DType::MLX8);
    EXPECT_EQ(info->group, t.at("group_size").get<int32_t>());
    const std::vector<int64_t> shape = t.at("logical_shape");
    const int64_t rows = shape[shape.size() - 2], cols = shape.back();
    // The expert's (or matrix's) rows, as the loader reads a stacked entry.
    TensorInfo entry = *info;
    const uint64_t row_bytes = info->type().bytes(cols);
    entry.shape = {rows, cols};
    entry.offset = info->offset + uint64_t(where.first_row) * row_bytes;
    entry.nbytes = uint64_t(rows) * row_bytes;
    TensorBytes bytes = files.weights->read_rows(entry, 0, rows);
    ASSERT_EQ(bytes.size(), entry.nbytes);
    std::vector<float> w(size_t(2 * cols));
    kernels::to_f32(bytes.data(), info->type(), 2 * cols, w.data());
    for (int r = 0; r < 2; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const float want = t.at("dequant_rows_0_1")[size_t(r)][size_t(c)];
        ASSERT_NEAR(w[size_t(r * cols + c)], want, 1e-6f * (1.0f + std::fabs(want))) << "row " << r << " col " << c;
      }
    // y = W x with the SIMD kernel against mlx's formula in double precision.
    std::vector<float> x(static_cast<size_t>(cols)), y(static_cast<size_t>(rows));
    for (int64_t i = 0; i < cols; ++i) x[size_t(i)] = float(std::sin(double(i + 1)));
    kernels::WeightView v{bytes.data(), info->dtype, rows, cols, info->group, info->group_scale};
    kernels::matmul(v, x.data(), 1, y.data(), pool);
    for (int64_t r = 0; r < rows; ++r) {
      const double want = t.at("y")[size_t(r)];
      ASSERT_NEAR(y[size_t(r)], want, 1e-4 * (1.0 + std::fabs(want))) << "y row " << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, MlxFixture,
                         ::testing::Values("qwen3_4bit_g32", "qwen3_8bit_g64", "qwen2_bf16_4bit_g64", "qwen3_moe_4bit_g32",
                                           "qwen3_5_moe_4bit_g32", "qwen3_next_4bit_g32"));

// A copy of a fixture with config.json edited by `edit`.
fs::path edited_copy(const testing::ScratchDir& scratch, const std::string& fixture, const std::function<void(json&)>& edit,
                     const std::string& as = "copy") {
  const fs::path out = fs::path(scratch.str()) / as;
  fs::create_directories(out);
  for (const auto& e : fs::directory_iterator(kMlx / fixture)) fs::copy_file(e.path(), out / e.path().filename());
  json config = json::parse(std::ifstream(out / "config.json"));
  edit(config);
  std::ofstream(out / "config.json") << config.dump();
  return out;
}

TEST(MlxErrors, QuantizationBlockContradictingTheTensors) {
  testing::ScratchDir scratch;
  const fs::path dir = edited_copy(scratch, "qwen3_4bit_g32", [](json& c) {
    c["quantization"]["group_size"] = 64;
    c.erase("quantization_config");
  });
  testing::expect_error([&] { open_model(dir.string(), no_tokenizer()); },
                        {"model.safetensors", "model.embed_tokens", "groups of 64", "contradicts"});
}

TEST(MlxErrors, UnsupportedBitsAndGroups) {
  testing::ScratchDir scratch;
  const fs::path three = edited_copy(scratch, "qwen3_4bit_g32", [](json& c) {
    c["quantization"]["bits"] = 3;
    c.erase("quantization_config");
  });
  testing::expect_error([&] { open_model(three.string(), no_tokenizer()); }, {"3-bit MLX weights are not supported"});
  const fs::path odd = edited_copy(scratch, "qwen3_4bit_g32", [](json& c) {
    c["quantization"]["group_size"] = 48;
    c.erase("quantization_config");
  }, "odd");
  testing::expect_error([&] { open_model(odd.string(), no_tokenizer()); }, {"group size 48 is not 32, 64 or 128"});
  // mlx-lm's mixed_4_6 recipe stores some modules at 6 bits.
  testing::expect_error([&] { open_model((kMlx / "qwen3_next_mixed_4_6_g64").string(), no_tokenizer()); },
                        {"quantization.lm_head", "6-bit"});
}

TEST(MlxErrors, CodesWithoutAQuantizationBlock) {
  testing::ScratchDir scratch;
  const fs::path dir = edited_copy(scratch, "qwen3_4bit_g32", [](json& c) {
    c.erase("quantization");
    c.erase("quantization_config");
  });
  ModelFiles files = open_model(dir.string(), no_tokenizer());
  testing::expect_error([&] { Model(files.config, single_rank_slices(files.config), *files.weights); },
                        {"U32 codes", "no quantization block"});
}

TEST(MlxErrors, MissingOrMisshapenScales) {
  testing::ScratchDir scratch;
  const fs::path dir = edited_copy(scratch, "qwen3_4bit_g32", [](json&) {});
  auto write = [&](bool with_biases, int64_t scale_cols) {
    testing::SafetensorsWriter w;
    w.tensor("model.norm.weight", "F32", {4}, std::string(16, '\0'));
    w.tensor("model.layers.0.mlp.down_proj.weight", "U32", {4, 8}, std::string(4 * 8 * 4, '\0'));
    w.tensor("model.layers.0.mlp.down_proj.scales", "F32", {4, scale_cols}, std::string(size_t(4 * scale_cols * 4), '\0'));
    if (with_biases)
      w.tensor("model.layers.0.mlp.down_proj.biases", "F32", {4, scale_cols}, std::string(size_t(4 * scale_cols * 4), '\0'));
    fs::remove(dir / "model.safetensors.index.json");
    w.write((dir / "model.safetensors").string());
  };
  write(false, 2);
  testing::expect_error([&] { open_model(dir.string(), no_tokenizer()); },
                        {"model.layers.0.mlp.down_proj.weight holds U32 codes", "down_proj.biases is missing"});
  write(true, 3);
  testing::expect_error([&] { open_model(dir.string(), no_tokenizer()); },
                        {"model.layers.0.mlp.down_proj", "rows of 64 elements", "[4, 2]", "[4, 3]"});
}

}  // namespace
}  // namespace uneven
