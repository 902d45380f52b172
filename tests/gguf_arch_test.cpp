// GGUF files of the MoE and hybrid families as llama.cpp's converter writes them (names, metadata, layouts),
// made here from the Hugging Face fixtures, run against the same checkpoints read from safetensors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <tuple>
#include <nlohmann/json.hpp>

#include "engine/arch.h"
#include "engine/model_files.h"
#include "engine_test_util.h"
#include "model/gguf.h"
#include "test_files.h"

namespace uneven {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
const fs::path kHf = fs::path(UNEVEN_SOURCE_DIR) / "tests/data/hf";

struct Tensor {
  std::vector<int64_t> shape;  // row-major
  std::vector<float> values;
};

// Every F32 tensor of a Hugging Face fixture, by name.
std::map<std::string, Tensor> read_fixture(const fs::path& dir) {
  TensorFiles files = TensorFiles::open_safetensors_dir(dir.string());
  std::map<std::string, Tensor> out;
  for (const TensorInfo& t : files.tensors()) {
    EXPECT_EQ(t.dtype, DType::F32) << t.name;
    TensorBytes b = files.read_all(t);
    Tensor x{t.shape, std::vector<float>(size_t(t.numel()))};
    std::memcpy(x.values.data(), b.data(), b.size());
    out[t.name] = std::move(x);
  }
  return out;
}

json read_json(const fs::path& path) { return json::parse(std::ifstream(path)); }

// Keys of llama.cpp's GGUF writer that this file needs beyond test_files.h's: booleans and u32 arrays.
void kv_bool(testing::GgufWriter& w, const std::string& key, bool v) { w.kv_raw(key, 7, std::string(1, v ? 1 : 0)); }
void kv_u32s(testing::GgufWriter& w, const std::string& key, const std::vector<uint32_t>& v) {
  testing::Bytes p;
  p.put<uint32_t>(4).put<uint64_t>(v.size());
  for (uint32_t x : v) p.put(x);
  w.kv_raw(key, 9, p.b);
}

// Writes `w` as GgufWriter lays it out, also for files past the 1 MiB up to which GgufWriter places tensor
// data (the MoE fixtures are larger): the header from GgufWriter, the data appended here.
void write_gguf(const testing::GgufWriter& w, const std::string& path) {
  testing::GgufWriter header = w;
  std::vector<uint64_t> offsets;
  uint64_t at = 0;
  for (testing::GgufTensor& t : header.tensors) {
    offsets.push_back(at);
    at = (at + t.data.size() + w.alignment - 1) / w.alignment * w.alignment;
    t.offset = 0;  // placed at the data section's start, so bytes() ends where the data section starts
    t.data.clear();
  }
  const size_t data_start = header.bytes().size();
  for (size_t i = 0; i < header.tensors.size(); ++i) header.tensors[i].offset = offsets[i];
  std::string bytes = header.bytes().substr(0, data_start);
  bytes.resize(data_start + at, '\0');
  for (size_t i = 0; i < w.tensors.size(); ++i) bytes.replace(data_start + offsets[i], w.tensors[i].data.size(), w.tensors[i].data);
  testing::write_file(path, bytes);
}

// Adds a row-major tensor under its GGUF name; GGUF lists dimensions innermost first.
void add(testing::GgufWriter& w, const std::string& name, const Tensor& t) {
  std::vector<uint64_t> ne(t.shape.rbegin(), t.shape.rend());
  w.tensor(name, ne, 0, testing::f32_bytes(t.values));
}

// Experts [E, rows, cols] stacked from per-expert tensors, as llama.cpp's converter does (torch.stack, dim 0).
Tensor stack(const std::map<std::string, Tensor>& hf, const std::string& prefix, int64_t experts, const std::string& proj) {
  Tensor out;
  for (int64_t e = 0; e < experts; ++e) {
    const Tensor& t = hf.at(prefix + "mlp.experts." + std::to_string(e) + "." + proj + ".weight");
    if (out.shape.empty()) out.shape = {experts, t.shape[0], t.shape[1]};
    out.values.insert(out.values.end(), t.values.begin(), t.values.end());
  }
  return out;
}

// gate and up concatenated per expert along the rows ([E, 2I, H]), as `--fuse-gate-up-exps` writes them.
Tensor fuse_gate_up(const Tensor& gate, const Tensor& up) {
  const int64_t e = gate.shape[0], rows = gate.shape[1], cols = gate.shape[2];
  Tensor out{{e, 2 * rows, cols}, {}};
  for (int64_t i = 0; i < e; ++i)
    for (const Tensor* t : {&gate, &up})
      out.values.insert(out.values.end(), t->values.begin() + i * rows * cols, t->values.begin() + (i + 1) * rows * cols);
  return out;
}

// llama.cpp's name for a tensor of a Qwen dense / MoE layer (gguf-py tensor_mapping.py for QWEN3 / QWEN3MOE),
// written out here rather than taken from hf_name_from_gguf so that the test checks the engine's table.
std::string llama_cpp_name(const std::string& hf) {
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  static const std::vector<std::pair<std::string, std::string>> parts = {
      {"input_layernorm.weight", "attn_norm.weight"},     {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},       {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},       {"self_attn.o_proj.weight", "attn_output.weight"},
      {"self_attn.q_norm.weight", "attn_q_norm.weight"},  {"self_attn.k_norm.weight", "attn_k_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},        {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},        {"mlp.gate.weight", "ffn_gate_inp.weight"},
  };
  const std::string prefix = "model.layers.";
  const size_t dot = hf.find('.', prefix.size());
  const std::string layer = hf.substr(prefix.size(), dot - prefix.size()), rest = hf.substr(dot + 1);
  for (const auto& [from, to] : parts)
    if (rest == from) return "blk." + layer + "." + to;
  ADD_FAILURE() << "no llama.cpp name for " << hf;
  return hf;
}

struct ConvertOptions {
  bool fuse_gate_up = false;  // ffn_gate_up_exps instead of ffn_gate_exps + ffn_up_exps
};

// A Qwen3 / Qwen3-MoE fixture as llama.cpp's converter writes it (conversion/qwen.py Qwen3Model, Qwen3MoeModel
// over TextModel.set_gguf_parameters): no q/k permutation (NEOX rope), experts stacked into 3-D tensors, the
// hyper-parameters under "<arch>.". Two keys go beyond what the converter writes for Qwen3-MoE, because
// llama.cpp's qwen3moe graph has no dense layers and always renormalises the top-k weights while this
// fixture has mlp_only_layers [1] and norm_topk_prob false: expert_feed_forward_length as llama.cpp's per-layer
// array with 0 for the dense layer, and expert_weights_norm (the key llama.cpp reads for other MoE families).
testing::GgufWriter convert_qwen3(const fs::path& dir, const ConvertOptions& o = {}) {
  const json cfg = read_json(dir / "config.json");
  const std::map<std::string, Tensor> hf = read_fixture(dir);
  const int64_t experts = cfg.value("num_local_experts", cfg.value("num_experts", int64_t(0)));
  const std::string arch = experts > 0 ? "qwen3moe" : "qwen3";
  const int64_t layers = cfg["num_hidden_layers"];
  const std::vector<int64_t> dense = cfg.value("mlp_only_layers", std::vector<int64_t>{});
  auto is_dense = [&](int64_t l) { return experts == 0 || std::find(dense.begin(), dense.end(), l) != dense.end(); };

  testing::GgufWriter w;
  w.kv_str("general.architecture", arch);
  w.kv_u32(arch + ".block_count", uint32_t(layers));
  w.kv_u32(arch + ".context_length", cfg["max_position_embeddings"].get<uint32_t>());
  w.kv_u32(arch + ".embedding_length", cfg["hidden_size"].get<uint32_t>());
  w.kv_u32(arch + ".feed_forward_length", cfg["intermediate_size"].get<uint32_t>());
  w.kv_u32(arch + ".attention.head_count", cfg["num_attention_heads"].get<uint32_t>());
  w.kv_u32(arch + ".attention.head_count_kv", cfg["num_key_value_heads"].get<uint32_t>());
  const json& rope = cfg.contains("rope_parameters") ? cfg["rope_parameters"] : cfg;
  w.kv_f32(arch + ".rope.freq_base", rope["rope_theta"].get<float>());
  w.kv_f32(arch + ".attention.layer_norm_rms_epsilon", cfg["rms_norm_eps"].get<float>());
  if (experts > 0) {
    w.kv_u32(arch + ".expert_count", uint32_t(experts));
    w.kv_u32(arch + ".expert_used_count", cfg["num_experts_per_tok"].get<uint32_t>());
  }
  w.kv_u32(arch + ".attention.key_length", cfg["head_dim"].get<uint32_t>());
  w.kv_u32(arch + ".attention.value_length", cfg["head_dim"].get<uint32_t>());
  if (experts > 0) {
    std::vector<uint32_t> expert_ff;
    for (int64_t l = 0; l < layers; ++l) expert_ff.push_back(is_dense(l) ? 0 : cfg["moe_intermediate_size"].get<uint32_t>());
    if (dense.empty()) w.kv_u32(arch + ".expert_feed_forward_length", expert_ff[0]);
    else kv_u32s(w, arch + ".expert_feed_forward_length", expert_ff);
    kv_bool(w, arch + ".expert_weights_norm", cfg.value("norm_topk_prob", true));
  }
  std::vector<std::string> tokens;
  for (int64_t i = 0; i < cfg["vocab_size"].get<int64_t>(); ++i) tokens.push_back("t" + std::to_string(i));
  w.kv_strs("tokenizer.ggml.tokens", tokens);

  for (const auto& [name, t] : hf)
    if (name.find(".mlp.experts.") == std::string::npos) add(w, llama_cpp_name(name), t);
  for (int64_t l = 0; l < layers; ++l) {
    if (is_dense(l)) continue;
    const std::string p = "model.layers." + std::to_string(l) + ".", b = "blk." + std::to_string(l) + ".";
    const Tensor gate = stack(hf, p, experts, "gate_proj"), up = stack(hf, p, experts, "up_proj");
    if (o.fuse_gate_up) {
      add(w, b + "ffn_gate_up_exps.weight", fuse_gate_up(gate, up));
    } else {
      add(w, b + "ffn_gate_exps.weight", gate);
      add(w, b + "ffn_up_exps.weight", up);
    }
    add(w, b + "ffn_down_exps.weight", stack(hf, p, experts, "down_proj"));
  }
  return w;
}

std::vector<TokenId> reference_prompt(const fs::path& dir) {
  return read_json(dir / "reference.json")["prompt_ids"].get<std::vector<TokenId>>();
}

ModelFiles open_without_tokenizer(const std::string& path) {
  OpenOptions o;
  o.need_tokenizer = false;
  return open_model(path, o);
}

// Logits of the GGUF and of the Hugging Face directory for the fixture's prompt, unsplit; the GGUF also
// split 3:1 by the planner.
void expect_gguf_runs_as_hf(const fs::path& dir, const std::string& gguf) {
  const std::vector<TokenId> prompt = reference_prompt(dir);
  ModelFiles hf = open_without_tokenizer(dir.string()), gg = open_without_tokenizer(gguf);
  const std::vector<float> want = testing::run_split(hf.config, *hf.weights, {single_rank_slices(hf.config)}, prompt);
  const std::vector<float> got = testing::run_split(gg.config, *gg.weights, {single_rank_slices(gg.config)}, prompt);
  EXPECT_LE(testing::max_abs_diff(got, want), 1e-4f);
  const std::vector<float> split = testing::run_split(gg.config, *gg.weights, testing::planned_slices(gg.config, {3, 1}), prompt);
  EXPECT_LE(testing::max_abs_diff(split, want), 1e-4f);
}

TEST(GgufArch, Qwen3MoeAsLlamaCppWritesItRunsAsTheHuggingFaceCheckpoint) {
  testing::ScratchDir scratch;
  const fs::path dir = kHf / "qwen3_moe_e16";
  write_gguf(convert_qwen3(dir), scratch.file("m.gguf"));
  const ModelConfig want = load_hf_config((dir / "config.json").string());
  const ModelConfig got = open_without_tokenizer(scratch.file("m.gguf")).config;
  EXPECT_EQ(got.architecture, "qwen3_moe");
  EXPECT_EQ(got.num_experts, want.num_experts);
  EXPECT_EQ(got.num_experts_per_tok, want.num_experts_per_tok);
  EXPECT_EQ(got.moe_intermediate_size, want.moe_intermediate_size);
  EXPECT_EQ(got.intermediate_size, want.intermediate_size);
  EXPECT_EQ(got.layer_is_moe, want.layer_is_moe);
  EXPECT_EQ(got.norm_topk_prob, want.norm_topk_prob);
  EXPECT_EQ(got.qk_norm, want.qk_norm);
  EXPECT_FALSE(got.rope_interleaved) << "llama.cpp runs Qwen with NEOX rope on unpermuted rows";
  EXPECT_FALSE(got.tie_word_embeddings);
  expect_gguf_runs_as_hf(dir, scratch.file("m.gguf"));
}

TEST(GgufArch, Qwen3MoeWithFusedGateUpExperts) {
  testing::ScratchDir scratch;
  const fs::path dir = kHf / "qwen3_moe_e16";
  write_gguf(convert_qwen3(dir, {.fuse_gate_up = true}), scratch.file("m.gguf"));
  expect_gguf_runs_as_hf(dir, scratch.file("m.gguf"));
}

// Dense Qwen3 (tied embeddings: no output.weight) as llama.cpp writes it: rows unpermuted, rotated by halves.
TEST(GgufArch, Qwen3DenseRunsWithNeoxRope) {
  testing::ScratchDir scratch;
  const fs::path dir = kHf / "qwen3";
  write_gguf(convert_qwen3(dir), scratch.file("m.gguf"));
  expect_gguf_runs_as_hf(dir, scratch.file("m.gguf"));
}

TEST(GgufArch, MoeLayersFollowLlamaCppKeys) {
  auto config = [](const std::function<void(testing::GgufWriter&)>& extra) {
    testing::GgufWriter w;
    w.kv_str("general.architecture", "qwen3moe")
        .kv_u32("qwen3moe.block_count", 4).kv_u32("qwen3moe.embedding_length", 64).kv_u32("qwen3moe.feed_forward_length", 96)
        .kv_u32("qwen3moe.attention.head_count", 4).kv_u32("qwen3moe.attention.head_count_kv", 2)
        .kv_u32("qwen3moe.expert_count", 8).kv_u32("qwen3moe.expert_used_count", 2).kv_u32("qwen3moe.vocab_size", 50);
    extra(w);
    testing::ScratchDir scratch;
    w.write(scratch.file("m.gguf"));
    const TensorFiles f = TensorFiles::open_gguf(scratch.file("m.gguf"));
    return config_from_gguf_metadata(f.metadata(), "m.gguf");
  };
  const ModelConfig every = config([](auto& w) { w.kv_u32("qwen3moe.expert_feed_forward_length", 32); });
  EXPECT_EQ(every.layer_is_moe, std::vector<bool>(4, true));
  EXPECT_TRUE(every.norm_topk_prob) << "llama.cpp's qwen3moe graph renormalises the top-k weights";
  EXPECT_EQ(every.moe_intermediate_size, 32);
  EXPECT_EQ(every.intermediate_size, 96);
  EXPECT_EQ(every.head_dim, 16);
  const ModelConfig step = config([](auto& w) {
    w.kv_u32("qwen3moe.expert_feed_forward_length", 32).kv_u32("qwen3moe.interleave_moe_layer_step", 2);
    kv_bool(w, "qwen3moe.expert_weights_norm", false);
  });
  EXPECT_EQ(step.layer_is_moe, (std::vector<bool>{false, true, false, true}));
  EXPECT_FALSE(step.norm_topk_prob);
  const ModelConfig leading = config([](auto& w) {
    w.kv_u32("qwen3moe.expert_feed_forward_length", 32).kv_u32("qwen3moe.leading_dense_block_count", 1);
  });
  EXPECT_EQ(leading.layer_is_moe, (std::vector<bool>{false, true, true, true}));
  const ModelConfig listed = config([](auto& w) { kv_u32s(w, "qwen3moe.expert_feed_forward_length", {32, 0, 32, 0}); });
  EXPECT_EQ(listed.layer_is_moe, (std::vector<bool>{true, false, true, false}));

  testing::expect_error([&] { config([](auto& w) { kv_u32s(w, "qwen3moe.expert_feed_forward_length", {32, 0}); }); },
                        {"m.gguf", "qwen3moe.expert_feed_forward_length", "2 entries", "block_count is 4"});
  testing::expect_error([&] { config([](auto& w) { kv_u32s(w, "qwen3moe.expert_feed_forward_length", {32, 16, 32, 32}); }); },
                        {"m.gguf", "different expert widths (32 and 16)"});
  testing::expect_error([&] { config([](auto&) {}); },
                        {"m.gguf", "qwen3moe.expert_count = 8", "qwen3moe.expert_feed_forward_length"});
  testing::expect_error([&] { config([](auto& w) { w.kvs[0] = {"general.architecture", testing::Bytes().put<uint32_t>(8).str("qwen9").b}; }); },
                        {"m.gguf", "qwen9"});
}

TEST(GgufArch, UnknownArchitectureListsTheKnownOnes) {
  testing::GgufWriter w;
  w.kv_str("general.architecture", "mamba");
  testing::ScratchDir scratch;
  w.write(scratch.file("m.gguf"));
  const TensorFiles f = TensorFiles::open_gguf(scratch.file("m.gguf"));
  testing::expect_error([&] { config_from_gguf_metadata(f.metadata(), "m.gguf"); },
                        {"m.gguf", "unsupported GGUF architecture 'mamba'", "qwen3moe", "qwen3next", "qwen35moe"});
}

TEST(GgufArch, TranslatesMoeAndLinearAttentionNames) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"blk.2.ffn_gate_inp.weight", "model.layers.2.mlp.gate.weight"},
      {"blk.2.ffn_gate_exps.weight", "model.layers.2.mlp.experts.gate_proj"},
      {"blk.2.ffn_up_exps.weight", "model.layers.2.mlp.experts.up_proj"},
      {"blk.2.ffn_down_exps.weight", "model.layers.2.mlp.experts.down_proj"},
      {"blk.2.ffn_gate_up_exps.weight", "model.layers.2.mlp.experts.gate_up_proj"},
      {"blk.2.ffn_gate_shexp.weight", "model.layers.2.mlp.shared_expert.gate_proj.weight"},
      {"blk.2.ffn_up_shexp.weight", "model.layers.2.mlp.shared_expert.up_proj.weight"},
      {"blk.2.ffn_down_shexp.weight", "model.layers.2.mlp.shared_expert.down_proj.weight"},
      {"blk.2.ffn_gate_inp_shexp.weight", "model.layers.2.mlp.shared_expert_gate.weight"},
      {"blk.0.post_attention_norm.weight", "model.layers.0.post_attention_layernorm.weight"},
      {"blk.0.attn_qkv.weight", "model.layers.0.linear_attn.in_proj_qkv.weight"},
      {"blk.0.attn_gate.weight", "model.layers.0.linear_attn.in_proj_z.weight"},
      {"blk.0.ssm_ba.weight", "model.layers.0.linear_attn.in_proj_ba.weight"},
      {"blk.0.ssm_beta.weight", "model.layers.0.linear_attn.in_proj_b.weight"},
      {"blk.0.ssm_alpha.weight", "model.layers.0.linear_attn.in_proj_a.weight"},
      {"blk.0.ssm_dt.bias", "model.layers.0.linear_attn.dt_bias"},
      {"blk.0.ssm_norm.weight", "model.layers.0.linear_attn.norm.weight"},
      {"blk.0.ssm_out.weight", "model.layers.0.linear_attn.out_proj.weight"},
      // Stored transformed (-exp(A_log); kernel axis squeezed): kept under their GGUF names.
      {"blk.0.ssm_a", "blk.0.ssm_a"},
      {"blk.0.ssm_conv1d.weight", "blk.0.ssm_conv1d.weight"},
  };
  for (const auto& [gguf, hf] : cases) EXPECT_EQ(hf_name_from_gguf(gguf), hf) << gguf;
}

// The metadata llama.cpp's converter writes for a Gated DeltaNet hybrid (conversion/qwen.py Qwen3NextModel,
// Qwen3_5TextModel, Qwen3_5MoeTextModel over Qwen2MoeModel and TextModel): ssm.* sizes, full_attention_interval,
// the rotary dimension count, expert widths; mlp_only_layers as a per-layer expert_feed_forward_length (0 =
// dense), as for Qwen3-MoE above.
testing::GgufWriter hybrid_metadata(const fs::path& dir, const std::string& arch) {
  const json root = read_json(dir / "config.json");
  const json& cfg = root.contains("text_config") ? root["text_config"] : root;
  const int64_t layers = cfg["num_hidden_layers"], experts = cfg.value("num_experts", int64_t(0));
  const std::vector<int64_t> dense = cfg.value("mlp_only_layers", std::vector<int64_t>{});
  testing::GgufWriter w;
  auto u32 = [&](const std::string& k, int64_t v) { w.kv_u32(arch + "." + k, uint32_t(v)); };
  w.kv_str("general.architecture", arch);
  u32("block_count", layers);
  u32("context_length", cfg["max_position_embeddings"]);
  u32("embedding_length", cfg["hidden_size"]);
  if (cfg.contains("intermediate_size") && !cfg["intermediate_size"].is_null()) u32("feed_forward_length", cfg["intermediate_size"]);
  u32("attention.head_count", cfg["num_attention_heads"]);
  u32("attention.head_count_kv", cfg["num_key_value_heads"]);
  w.kv_f32(arch + ".rope.freq_base", cfg["rope_parameters"]["rope_theta"].get<float>());
  w.kv_f32(arch + ".attention.layer_norm_rms_epsilon", cfg["rms_norm_eps"].get<float>());
  if (experts > 0) {
    u32("expert_count", experts);
    u32("expert_used_count", cfg["num_experts_per_tok"]);
  }
  u32("attention.key_length", cfg["head_dim"]);
  u32("attention.value_length", cfg["head_dim"]);
  if (experts > 0) {
    std::vector<uint32_t> ff;
    for (int64_t l = 0; l < layers; ++l)
      ff.push_back(std::find(dense.begin(), dense.end(), l) != dense.end() ? 0 : cfg["moe_intermediate_size"].get<uint32_t>());
    if (dense.empty()) u32("expert_feed_forward_length", ff[0]);
    else kv_u32s(w, arch + ".expert_feed_forward_length", ff);
    u32("expert_shared_feed_forward_length", cfg["shared_expert_intermediate_size"]);
  }
  u32("ssm.conv_kernel", cfg["linear_conv_kernel_dim"]);
  u32("ssm.state_size", cfg["linear_key_head_dim"]);
  u32("ssm.group_count", cfg["linear_num_key_heads"]);
  u32("ssm.time_step_rank", cfg["linear_num_value_heads"]);
  u32("ssm.inner_size", cfg["linear_value_head_dim"].get<int64_t>() * cfg["linear_num_value_heads"].get<int64_t>());
  u32("full_attention_interval", cfg.value("full_attention_interval", 4));
  u32("rope.dimension_count", int64_t(cfg["head_dim"].get<double>() * cfg["rope_parameters"]["partial_rotary_factor"].get<double>()));
  if (arch != "qwen3next") kv_u32s(w, arch + ".rope.dimension_sections", {11, 11, 10, 0});
  w.kv_u32(arch + ".vocab_size", cfg["vocab_size"].get<uint32_t>());
  return w;
}

ModelConfig config_of(const testing::GgufWriter& w) {
  testing::ScratchDir scratch;
  w.write(scratch.file("m.gguf"));
  return config_from_gguf_metadata(TensorFiles::open_gguf(scratch.file("m.gguf")).metadata(), "m.gguf");
}

TEST(GgufArch, HybridMetadataGivesTheHuggingFaceConfig) {
  for (const auto& [fixture, arch, model_type] :
       {std::tuple{"qwen3_next", "qwen3next", "qwen3_next"}, std::tuple{"qwen3_5_text", "qwen35", "qwen3_5_text"},
        std::tuple{"qwen3_5_moe_stacked", "qwen35moe", "qwen3_5_moe_text"}}) {
    SCOPED_TRACE(fixture);
    const ModelConfig want = load_hf_config((kHf / fixture / "config.json").string());
    const ModelConfig got = config_of(hybrid_metadata(kHf / fixture, arch));
    EXPECT_EQ(got.architecture, model_type);
    EXPECT_EQ(got.layer_types, want.layer_types);
    EXPECT_EQ(got.linear_num_key_heads, want.linear_num_key_heads);
    EXPECT_EQ(got.linear_num_value_heads, want.linear_num_value_heads);
    EXPECT_EQ(got.linear_key_head_dim, want.linear_key_head_dim);
    EXPECT_EQ(got.linear_value_head_dim, want.linear_value_head_dim);
    EXPECT_EQ(got.linear_conv_kernel_dim, want.linear_conv_kernel_dim);
    EXPECT_EQ(got.num_experts, want.num_experts);
    EXPECT_EQ(got.num_experts_per_tok, want.num_experts_per_tok);
    EXPECT_EQ(got.moe_intermediate_size, want.moe_intermediate_size);
    EXPECT_EQ(got.shared_expert_intermediate_size, want.shared_expert_intermediate_size);
    EXPECT_EQ(got.is_moe_layer(0), want.is_moe_layer(0));
    for (int64_t l = 0; l < want.num_layers; ++l) EXPECT_EQ(got.is_moe_layer(l), want.is_moe_layer(l)) << l;
    EXPECT_EQ(got.norm_topk_prob, want.norm_topk_prob);
    EXPECT_EQ(got.attn_output_gate, want.attn_output_gate);
    EXPECT_EQ(got.qk_norm, want.qk_norm);
    EXPECT_EQ(got.head_dim, want.head_dim);
    EXPECT_EQ(got.rotary_dim(), want.rotary_dim());
    EXPECT_FALSE(got.rope_interleaved);
    EXPECT_EQ(got.norm_weight_offset, 0.0f) << "the converter stores the RMSNorm weights with the 1 added";
    EXPECT_FALSE(got.linear_fused_projections) << "in_proj_qkvz arrives split into attn_qkv and attn_gate";
  }
  testing::GgufWriter odd = hybrid_metadata(kHf / "qwen3_next", "qwen3next");
  odd.kv_u32("qwen3next.ssm.inner_size", 50);  // a second entry would be refused; replace the first
  odd.kvs.erase(std::find_if(odd.kvs.begin(), odd.kvs.end(), [](const auto& kv) { return kv.first == "qwen3next.ssm.inner_size"; }));
  testing::expect_error([&] { config_of(odd); }, {"m.gguf", "qwen3next.ssm.inner_size' = 50", "ssm.time_step_rank' = 6"});
}

// llama.cpp stores ssm_a = -exp(A_log) and conv1d without its middle axis; the engine cannot take those yet,
// so a hybrid GGUF is refused at load, naming the tensor it lacks, rather than run with wrong values.
TEST(GgufArch, HybridTensorsInLlamaCppLayoutAreRefusedNotMisread) {
  testing::ScratchDir scratch;
  testing::GgufWriter w = hybrid_metadata(kHf / "qwen3_5_text", "qwen35");
  const std::map<std::string, Tensor> hf = read_fixture(kHf / "qwen3_5_text");
  for (const auto& [name, t] : hf) {
    std::string g = name;
    if (name == "model.embed_tokens.weight") g = "token_embd.weight";
    else if (name == "model.norm.weight") g = "output_norm.weight";
    for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
             {".input_layernorm.weight", ".attn_norm.weight"}, {".post_attention_layernorm.weight", ".post_attention_norm.weight"},
             {".linear_attn.in_proj_qkv.weight", ".attn_qkv.weight"}, {".linear_attn.in_proj_z.weight", ".attn_gate.weight"},
             {".linear_attn.in_proj_b.weight", ".ssm_beta.weight"}, {".linear_attn.in_proj_a.weight", ".ssm_alpha.weight"},
             {".linear_attn.conv1d.weight", ".ssm_conv1d.weight"}, {".linear_attn.dt_bias", ".ssm_dt.bias"},
             {".linear_attn.A_log", ".ssm_a"}, {".linear_attn.norm.weight", ".ssm_norm.weight"},
             {".linear_attn.out_proj.weight", ".ssm_out.weight"}, {".self_attn.q_proj.weight", ".attn_q.weight"},
             {".self_attn.k_proj.weight", ".attn_k.weight"}, {".self_attn.v_proj.weight", ".attn_v.weight"},
             {".self_attn.o_proj.weight", ".attn_output.weight"}, {".self_attn.q_norm.weight", ".attn_q_norm.weight"},
             {".self_attn.k_norm.weight", ".attn_k_norm.weight"}, {".mlp.gate_proj.weight", ".ffn_gate.weight"},
             {".mlp.up_proj.weight", ".ffn_up.weight"}, {".mlp.down_proj.weight", ".ffn_down.weight"}})
      if (name.ends_with(from)) g = "blk." + name.substr(13, name.size() - 13 - from.size()) + to;
    Tensor x = t;
    if (g.ends_with("ssm_conv1d.weight")) x.shape = {t.shape[0], t.shape[2]};
    add(w, g, x);
  }
  write_gguf(w, scratch.file("m.gguf"));
  ModelFiles f = open_without_tokenizer(scratch.file("m.gguf"));
  testing::expect_error([&] { Model(f.config, single_rank_slices(f.config), *f.weights); },
                        {"m.gguf", "model.layers.0.linear_attn.conv1d.weight is missing"});
}

// A stacked expert tensor of the wrong shape names the tensor and both shapes.
TEST(GgufArch, MisshapenExpertStackIsRefused) {
  testing::ScratchDir scratch;
  testing::GgufWriter w = convert_qwen3(kHf / "qwen3_moe_e16");
  for (testing::GgufTensor& t : w.tensors)
    if (t.name == "blk.2.ffn_up_exps.weight") {
      t.ne = {64, 16, 32};
      t.data.resize(64 * 16 * 32 * 4);
    }
  write_gguf(w, scratch.file("m.gguf"));
  ModelFiles f = open_without_tokenizer(scratch.file("m.gguf"));
  testing::expect_error([&] { Model(f.config, single_rank_slices(f.config), *f.weights); },
                        {"m.gguf", "model.layers.2.mlp.experts.up_proj", "blk.2.ffn_up_exps.weight", "[32, 16, 64]",
                         "[16, 32, 64]"});
}

}  // namespace
}  // namespace uneven
