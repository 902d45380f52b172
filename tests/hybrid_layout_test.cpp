// Checkpoint layouts of the MoE / Gated DeltaNet families and bad input: stacked experts, multimodal prefixes
// with vision and MTP tensors that are never read, Qwen3-Next's fused projections; and missing, miscounted or
// misshapen tensors and configs refused with the file, tensor and numbers.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "engine/model_files.h"
#include "engine_test_util.h"
#include "test_files.h"

namespace uneven {
namespace {

namespace fs = std::filesystem;
const fs::path kShared = fs::path(UNEVEN_SOURCE_DIR) / "../shared/fixtures/hf/qwen3_5_moe_text";

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> values;  // the fixture is F32
};

// Every tensor of the shared Qwen3.5-MoE fixture, by name (ordered, so files are written deterministically).
std::map<std::string, Tensor> load_fixture() {
  TensorFiles files = TensorFiles::open_safetensors_dir(kShared.string());
  std::map<std::string, Tensor> out;
  for (const TensorInfo& t : files.tensors()) {
    TensorBytes b = files.read_all(t);
    Tensor x{t.shape, std::vector<float>(size_t(t.numel()))};
    std::memcpy(x.values.data(), b.data(), b.size());
    out[t.name] = std::move(x);
  }
  return out;
}

nlohmann::json fixture_config() { return nlohmann::json::parse(std::ifstream(kShared / "config.json")); }

// Writes `tensors` and `config` as a Hugging Face directory (with the fixture's tokenizer).
std::string write_model(const testing::ScratchDir& scratch, const std::string& name,
                        const std::map<std::string, Tensor>& tensors, const nlohmann::json& config) {
  const fs::path dir = scratch.file(name);
  fs::create_directories(dir);
  testing::SafetensorsWriter w;
  for (const auto& [n, t] : tensors) w.tensor(n, "F32", t.shape, testing::f32_bytes(t.values));
  w.write((dir / "model.safetensors").string());
  testing::write_file((dir / "config.json").string(), config.dump(2));
  fs::copy_file(kShared / "tokenizer.json", dir / "tokenizer.json");
  return dir.string();
}

std::vector<float> prompt_logits(const std::string& path, const std::vector<RankSlices>* slices = nullptr,
                                 uint64_t* bytes_read = nullptr) {
  ModelFiles files = open_model(path, {});
  const std::vector<TokenId> prompt = {5, 17, 101, 250, 33, 7, 64, 399, 12, 200};
  if (slices) return testing::run_split(files.config, *files.weights, *slices, prompt);
  Model model(files.config, single_rank_slices(files.config), *files.weights);
  if (bytes_read) *bytes_read = files.weights->bytes_touched();
  ThreadPool pool(1);
  auto comm = make_local_collective();
  Session s(model, *comm, pool, 32);
  std::vector<float> logits;
  s.forward(prompt.data(), int64_t(prompt.size()), logits, true);
  return logits;
}

// Real Qwen3.5 checkpoints: experts stacked as gate_up_proj [E, 2I, H] (gate rows then up rows) and down_proj
// [E, H, I]; the multimodal ones put the text model under model.language_model.* beside model.visual.* and
// mtp.*. The same weights in that layout give bit-identical logits, and the vision and MTP tensors are never read.
TEST(HybridLayouts, StackedExpertsUnderAMultimodalPrefixGiveTheSameLogits) {
  testing::ScratchDir scratch;
  const auto fixture = load_fixture();
  const nlohmann::json text = fixture_config();
  const int64_t experts = text["num_experts"], inter = text["moe_intermediate_size"], h = text["hidden_size"];
  std::map<std::string, Tensor> out;
  uint64_t text_bytes = 0;
  for (const auto& [name, t] : fixture) {
    if (name.find(".mlp.experts.") != std::string::npos) continue;
    std::string n = name.starts_with("model.") ? "model.language_model." + name.substr(6) : name;
    out[n] = t;
    text_bytes += t.values.size() * 4;
  }
  for (int64_t l = 0; l < int64_t(text["num_hidden_layers"]); ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".mlp.experts.";
    Tensor gate_up{{experts, 2 * inter, h}, {}}, down{{experts, h, inter}, {}};
    for (int64_t e = 0; e < experts; ++e) {
      const std::string x = p + std::to_string(e) + ".";
      for (const char* part : {"gate_proj.weight", "up_proj.weight"}) {
        const auto& v = fixture.at(x + part).values;
        gate_up.values.insert(gate_up.values.end(), v.begin(), v.end());
      }
      const auto& v = fixture.at(x + "down_proj.weight").values;
      down.values.insert(down.values.end(), v.begin(), v.end());
    }
    text_bytes += (gate_up.values.size() + down.values.size()) * 4;
    const std::string q = "model.language_model.layers." + std::to_string(l) + ".mlp.experts.";
    out[q + "gate_up_proj"] = std::move(gate_up);
    out[q + "down_proj"] = std::move(down);
  }
  // A vision tower and multi-token-prediction layers: present, large, never to be read.
  out["model.visual.patch_embed.proj.weight"] = {{256, 1024}, std::vector<float>(256 * 1024, 0.5f)};
  out["mtp.fc.weight"] = {{64, 128}, std::vector<float>(64 * 128, 0.25f)};
  out["mtp.layers.0.input_layernorm.weight"] = {{64}, std::vector<float>(64, 0.0f)};
  nlohmann::json config = {{"architectures", {"Qwen3_5MoeForConditionalGeneration"}}, {"model_type", "qwen3_5_moe"},
                           {"text_config", text}, {"vision_config", {{"depth", 1}, {"hidden_size", 32}}},
                           {"tie_word_embeddings", false}};
  const std::string dir = write_model(scratch, "stacked_vl", out, config);

  uint64_t read_original = 0, read_stacked = 0;
  const std::vector<float> original = prompt_logits(kShared.string(), nullptr, &read_original);
  const std::vector<float> stacked = prompt_logits(dir, nullptr, &read_stacked);
  EXPECT_EQ(stacked, original);
  EXPECT_EQ(read_stacked, text_bytes) << "the vision tower or MTP tensors were read";
  EXPECT_EQ(read_stacked, read_original);

  // Split 5:2:1, every rank reads only its columns of each stacked tensor (the logits stay the same).
  ModelFiles files = open_model(dir, {});
  auto slices = testing::planned_slices(files.config, {5, 2, 1});
  EXPECT_LE(testing::max_abs_diff(prompt_logits(dir, &slices), original), 1e-4f);
  uint64_t sum = 0;
  for (const RankSlices& s : slices) {
    ModelFiles mine = open_model(dir, {});
    Model model(mine.config, s, *mine.weights);
    EXPECT_EQ(mine.weights->bytes_touched(), model.weights().bytes) << "rank " << s.rank;
    EXPECT_LT(model.weights().bytes, text_bytes) << "rank " << s.rank;
    sum += model.weights().bytes;
  }
  EXPECT_GE(sum, text_bytes);  // replicated norms and routers, straddling key/KV heads held twice
}

// Qwen3-Next's fused in_proj_qkvz / in_proj_ba: per key-head group [q, k, v (r heads), z (r heads)] and
// [b (r), a (r)], r = value heads per key head. The fixture's separate projections repacked that way give
// the same logits, unsplit and split so that a key head straddles two ranks.
TEST(HybridLayouts, FusedQwen3NextProjectionsGiveTheSameLogits) {
  testing::ScratchDir scratch;
  const auto fixture = load_fixture();
  nlohmann::json config = fixture_config();
  const int64_t nk = config["linear_num_key_heads"], nv = config["linear_num_value_heads"];
  const int64_t dk = config["linear_key_head_dim"], dv = config["linear_value_head_dim"], h = config["hidden_size"];
  const int64_t r = nv / nk;
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : fixture)
    if (name.find("in_proj_") == std::string::npos) out[name] = t;
  for (int64_t l = 0; l < int64_t(config["num_hidden_layers"]); ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".linear_attn.";
    if (!fixture.count(p + "in_proj_qkv.weight")) continue;
    const auto& qkv = fixture.at(p + "in_proj_qkv.weight").values;
    const auto& z = fixture.at(p + "in_proj_z.weight").values;
    const auto& b = fixture.at(p + "in_proj_b.weight").values;
    const auto& a = fixture.at(p + "in_proj_a.weight").values;
    auto rows = [&](const std::vector<float>& src, int64_t first, int64_t count, std::vector<float>& dst) {
      dst.insert(dst.end(), src.begin() + first * h, src.begin() + (first + count) * h);
    };
    Tensor qkvz{{2 * nk * dk + 2 * nv * dv, h}, {}}, ba{{2 * nv, h}, {}};
    for (int64_t g = 0; g < nk; ++g) {
      rows(qkv, g * dk, dk, qkvz.values);                            // q of key head g
      rows(qkv, nk * dk + g * dk, dk, qkvz.values);                  // k
      rows(qkv, 2 * nk * dk + g * r * dv, r * dv, qkvz.values);      // v of its r value heads
      rows(z, g * r * dv, r * dv, qkvz.values);                      // z
      rows(b, g * r, r, ba.values);
      rows(a, g * r, r, ba.values);
    }
    out[p + "in_proj_qkvz.weight"] = std::move(qkvz);
    out[p + "in_proj_ba.weight"] = std::move(ba);
  }
  config["model_type"] = "qwen3_next";
  config["decoder_sparse_step"] = 1;
  const std::string dir = write_model(scratch, "fused", out, config);
  const std::vector<float> original = prompt_logits(kShared.string());
  EXPECT_EQ(prompt_logits(dir), original);
  ModelFiles files = open_model(dir, {});
  for (auto shares : {std::vector<double>{3, 1}, std::vector<double>{5, 2, 1}}) {
    auto slices = testing::planned_slices(files.config, shares);
    EXPECT_LE(testing::max_abs_diff(prompt_logits(dir, &slices), original), 1e-4f) << shares.size() << " ranks";
  }
}

// Builds a model from an edited copy of the fixture and expects the load to fail naming `parts`.
void expect_load_error(const testing::ScratchDir& scratch, const std::string& name, std::map<std::string, Tensor> tensors,
                       const nlohmann::json& config, const std::vector<std::string>& parts) {
  SCOPED_TRACE(name);
  const std::string dir = write_model(scratch, name, tensors, config);
  testing::expect_error(
      [&] {
        ModelFiles files = open_model(dir, {});
        Model model(files.config, single_rank_slices(files.config), *files.weights);
      },
      parts);
}

TEST(HybridBadInput, MissingMiscountedAndMisshapenTensorsAreRefusedWithTheNumbers) {
  testing::ScratchDir scratch;
  const auto fixture = load_fixture();
  const nlohmann::json config = fixture_config();

  auto missing = fixture;
  missing.erase("model.layers.1.mlp.experts.3.gate_proj.weight");
  expect_load_error(scratch, "missing_expert", missing, config,
                    {"model.safetensors", "model.layers.1.mlp.experts.3.gate_proj.weight is missing",
                     "model.layers.1.mlp.experts.gate_up_proj"});

  auto more_experts = config;
  more_experts["num_experts"] = 16;
  expect_load_error(scratch, "expert_count", fixture, more_experts,
                    {"model.layers.0.mlp.gate.weight", "[8, 64]", "[16, 64]", "num_experts 16"});

  auto router = fixture;
  router["model.layers.2.mlp.gate.weight"] = {{8, 32}, std::vector<float>(8 * 32, 0.1f)};
  expect_load_error(scratch, "router_shape", router, config, {"model.layers.2.mlp.gate.weight", "[8, 32]", "[8, 64]"});

  // Stacked experts whose shape contradicts config.json (moe_intermediate_size 32 stored, 16 claimed).
  auto stacked = fixture;
  for (auto it = stacked.begin(); it != stacked.end();)
    it = it->first.find(".mlp.experts.") != std::string::npos ? stacked.erase(it) : std::next(it);
  for (int l = 0; l < 4; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".mlp.experts.";
    stacked[p + "gate_up_proj"] = {{8, 64, 64}, std::vector<float>(8 * 64 * 64, 0.01f)};
    stacked[p + "down_proj"] = {{8, 64, 32}, std::vector<float>(8 * 64 * 32, 0.01f)};
  }
  auto narrower = config;
  narrower["moe_intermediate_size"] = 16;
  expect_load_error(scratch, "stacked_shape", stacked, narrower,
                    {"stacked tensor model.layers.0.mlp.experts.gate_up_proj", "[8, 64, 64]", "[8, 32, 64]",
                     "moe_intermediate_size 16"});

  // A fused projection whose size does not match the head counts.
  auto fused_config = config;
  fused_config["model_type"] = "qwen3_next";
  auto fused = fixture;
  fused.erase("model.layers.0.linear_attn.in_proj_qkv.weight");
  fused["model.layers.0.linear_attn.in_proj_qkvz.weight"] = {{160, 64}, std::vector<float>(160 * 64, 0.01f)};
  expect_load_error(scratch, "fused_size", fused, fused_config,
                    {"model.layers.0.linear_attn.in_proj_qkvz.weight", "[160, 64]", "[192, 64]",
                     "linear_num_key_heads 2", "linear_num_value_heads 4"});
}

TEST(HybridBadInput, LayerTypesAndExpertFieldsAreChecked) {
  nlohmann::json c = fixture_config();
  auto refused = [](nlohmann::json j, const std::vector<std::string>& parts) {
    testing::expect_error([&] { config_from_hf_json(j, "cfg.json"); }, parts);
  };
  auto short_types = c;
  short_types["layer_types"] = {"linear_attention", "full_attention"};
  refused(short_types, {"cfg.json", "layer_types has 2 entries", "num_hidden_layers is 4"});
  auto unknown = c;
  unknown["layer_types"][1] = "mamba";
  refused(unknown, {"cfg.json", "layer_types[1] is 'mamba'"});
  auto not_string = c;
  not_string["layer_types"][2] = 7;
  refused(not_string, {"layer_types[2] is not a string"});
  auto top_k = c;
  top_k["num_experts_per_tok"] = 9;
  refused(top_k, {"num_experts_per_tok 9 exceeds num_experts 8"});
  auto heads = c;
  heads["linear_num_value_heads"] = 5;
  refused(heads, {"linear_num_value_heads 5 is not a multiple of linear_num_key_heads 2"});
  auto act = c;
  act["hidden_act"] = "gelu";
  refused(act, {"hidden_act 'gelu' is not supported"});
  auto nested = nlohmann::json{{"model_type", "qwen3_5_moe"}, {"text_config", c}};
  EXPECT_EQ(config_from_hf_json(nested, "vl.json").num_experts, 8);
}

}  // namespace
}  // namespace uneven
