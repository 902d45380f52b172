// HF -> llama.cpp naming: the tensor-name table (kept in step with hf_name_from_gguf in model/gguf.cpp,
// which tests check), architecture metadata from ModelConfig, and tokenizer.ggml.* from tokenizer.json.
#include "util/json_file.h"
#include "model/gguf_names.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numbers>
#include <unordered_map>
#include <utility>

#include "tokenizer/components.h"
#include "util/error.h"

namespace uneven {

using nlohmann::json;

std::string gguf_name_from_hf(std::string_view name) {
  if (name == "model.embed_tokens.weight") return "token_embd.weight";
  if (name == "model.norm.weight") return "output_norm.weight";
  if (name == "lm_head.weight") return "output.weight";
  // model.layers.<digits>.<part>.<weight|bias>
  constexpr std::string_view prefix = "model.layers.";
  if (name.substr(0, prefix.size()) == prefix) {
    size_t i = prefix.size();
    while (i < name.size() && name[i] >= '0' && name[i] <= '9') ++i;
    if (i > prefix.size() && i < name.size() && name[i] == '.') {
      const std::string_view layer = name.substr(prefix.size(), i - prefix.size());
      const std::string_view rest = name.substr(i + 1);
      const size_t dot = rest.rfind('.');
      const std::string_view part = dot == std::string_view::npos ? rest : rest.substr(0, dot);
      const std::string_view kind = dot == std::string_view::npos ? "" : rest.substr(dot + 1);
      static constexpr std::array<std::pair<std::string_view, std::string_view>, 11> parts = {{
          {"input_layernorm", "attn_norm"},
          {"post_attention_layernorm", "ffn_norm"},
          {"self_attn.q_proj", "attn_q"},
          {"self_attn.k_proj", "attn_k"},
          {"self_attn.v_proj", "attn_v"},
          {"self_attn.o_proj", "attn_output"},
          {"self_attn.q_norm", "attn_q_norm"},
          {"self_attn.k_norm", "attn_k_norm"},
          {"mlp.gate_proj", "ffn_gate"},
          {"mlp.up_proj", "ffn_up"},
          {"mlp.down_proj", "ffn_down"},
      }};
      if (kind == "weight" || kind == "bias")
        for (const auto& [from, to] : parts)
          if (part == from) return fmt::format("blk.{}.{}.{}", layer, to, kind);
    }
  }
  fail("tensor {} has no GGUF name (known: embed_tokens, norm, lm_head and the attention, norm and dense MLP "
       "tensors of llama, qwen2 and qwen3 layers)", name);
}

bool gguf_family_supported(const ModelConfig& c) {
  const bool family = c.architecture == "llama" || c.architecture == "qwen2" || c.architecture == "qwen3";
  const bool dense = c.num_experts == 0 &&
                     std::all_of(c.layer_types.begin(), c.layer_types.end(),
                                 [](LayerKind k) { return k == LayerKind::FullAttention; });
  return family && dense && !c.attn_output_gate && c.norm_weight_offset == 0.0f;
}

std::vector<GgufKv> gguf_model_metadata(const ModelConfig& c, const std::string& model_name) {
  if (!gguf_family_supported(c))
    fail("architecture '{}' cannot be written as GGUF here (supported: dense llama, qwen2, qwen3)", c.architecture);
  const std::string& a = c.architecture;
  auto u32 = [&](const std::string& what, int64_t v) {
    if (v < 0 || v > int64_t(UINT32_MAX)) fail("{}: {} = {} does not fit GGUF's u32", model_name, what, v);
    return GgufValue::u32(uint32_t(v));
  };
  std::vector<GgufKv> kv = {
      {"general.architecture", GgufValue::string(a)},
      {"general.name", GgufValue::string(model_name)},
      {a + ".vocab_size", u32("vocab_size", c.vocab_size)},
      {a + ".context_length", u32("max_position_embeddings", c.max_position)},
      {a + ".embedding_length", u32("hidden_size", c.hidden_size)},
      {a + ".block_count", u32("num_hidden_layers", c.num_layers)},
      {a + ".feed_forward_length", u32("intermediate_size", c.intermediate_size)},
      {a + ".rope.dimension_count", u32("rotary dimension", c.rotary_dim())},
      {a + ".attention.head_count", u32("num_attention_heads", c.num_heads)},
      {a + ".attention.head_count_kv", u32("num_key_value_heads", c.num_kv_heads)},
      {a + ".attention.key_length", u32("head_dim", c.head_dim)},
      {a + ".attention.value_length", u32("head_dim", c.head_dim)},
      {a + ".attention.layer_norm_rms_epsilon", GgufValue::f32(float(c.rms_norm_eps))},
      {a + ".rope.freq_base", GgufValue::f32(float(c.rope_theta))},
  };
  // Linear scaling is a pair of keys; llama3 scaling is the rope_freqs.weight tensor (llama3_rope_factors),
  // since llama.cpp rejects scaling types it does not know.
  if (c.rope_scaling.type == "linear") {
    kv.push_back({a + ".rope.scaling.type", GgufValue::string("linear")});
    kv.push_back({a + ".rope.scaling.factor", GgufValue::f32(float(c.rope_scaling.factor))});
  }
  return kv;
}

std::vector<float> llama3_rope_factors(const ModelConfig& c) {
  if (c.rope_scaling.type != "llama3") return {};
  const RopeScaling& s = c.rope_scaling;
  const double old_context = double(s.original_max_position);
  const double low_wavelen = old_context / s.low_freq_factor, high_wavelen = old_context / s.high_freq_factor;
  const int64_t dim = c.rotary_dim();
  std::vector<float> factors;
  for (int64_t i = 0; i < dim; i += 2) {
    const double freq = 1.0 / std::pow(c.rope_theta, double(i) / double(dim));
    const double wavelen = 2 * std::numbers::pi / freq;
    if (wavelen < high_wavelen) {
      factors.push_back(1.0f);
    } else if (wavelen > low_wavelen) {
      factors.push_back(float(s.factor));
    } else {
      const double smooth = (old_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      factors.push_back(float(1.0 / ((1 - smooth) / s.factor + smooth)));
    }
  }
  return factors;
}

namespace {

// The Split regex of a byte-level pre-tokenizer (alone or in a Sequence), "" when there is none; sets
// `byte_level_regex` when a ByteLevel step splits with GPT-2's own regex.
std::string split_regex(const json& pre, bool& byte_level, bool& byte_level_regex) {
  if (!pre.is_object()) return "";
  const std::string type = pre.value("type", "");
  if (type == "Sequence" && pre.contains("pretokenizers") && pre["pretokenizers"].is_array()) {
    std::string found;
    for (const auto& p : pre["pretokenizers"]) {
      std::string r = split_regex(p, byte_level, byte_level_regex);
      if (!r.empty()) found = r;
    }
    return found;
  }
  if (type == "ByteLevel") {
    byte_level = true;
    byte_level_regex = byte_level_regex || pre.value("use_regex", true);
  }
  if (type == "Split" && pre.contains("pattern") && pre["pattern"].is_object() && pre["pattern"].contains("Regex"))
    return pre["pattern"]["Regex"].get<std::string>();
  return "";
}

// A special token named in tokenizer_config.json: a string or {"content": ...}.
std::string token_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

}  // namespace

std::optional<std::vector<GgufKv>> gguf_tokenizer_from_hf(const std::string& dir, const ModelConfig& c,
                                                          std::string& why_not) {
  namespace fs = std::filesystem;
  const fs::path tok_path = fs::path(dir) / "tokenizer.json", cfg_path = fs::path(dir) / "tokenizer_config.json";
  std::error_code ec;
  if (!fs::exists(tok_path, ec)) {
    why_not = tok_path.string() + " does not exist";
    return std::nullopt;
  }
  const json tok = read_json_file(tok_path);
  const json tcfg = fs::exists(cfg_path, ec) ? read_json_file(cfg_path) : json::object();
  const std::string src = tok_path.string();
  if (!tok.contains("model") || !tok["model"].is_object()) fail("{}: no 'model' object", src);
  const json& model = tok["model"];
  if (model.value("type", "") != "BPE") {
    why_not = fmt::format("{}: tokenizer model '{}' is not byte-level BPE", src, model.value("type", "?"));
    return std::nullopt;
  }
  bool byte_level = false, byte_level_regex = false;
  const std::string regex = split_regex(tok.value("pre_tokenizer", json()), byte_level, byte_level_regex);
  std::string pre;
  if (byte_level && regex == kLlama3SplitRegex) pre = "llama-bpe";
  else if (byte_level && regex == kQwen2SplitRegex) pre = "qwen2";
  else if (byte_level && regex.empty() && byte_level_regex) pre = "gpt-2";
  if (pre.empty()) {
    why_not = fmt::format("{}: the pre-tokenizer is not one llama.cpp names (byte-level BPE with the GPT-2, "
                          "Llama 3 or Qwen2 split regex)", src);
    return std::nullopt;
  }

  // Tokens by id: the model's vocabulary, then added tokens; ids nobody claims become [PADn] (unused),
  // as llama.cpp's converter pads the list to the embedding's vocabulary size.
  if (!model.contains("vocab") || !model["vocab"].is_object()) fail("{}: model has no 'vocab' object", src);
  std::unordered_map<int64_t, std::pair<std::string, int32_t>> by_id;  // id -> (text, token type)
  int64_t max_id = -1;
  for (const auto& [text, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0) fail("{}: vocab entry '{}' has no non-negative id", src, text);
    by_id[id.get<int64_t>()] = {text, 1};  // normal
    max_id = std::max(max_id, id.get<int64_t>());
  }
  if (tok.contains("added_tokens") && tok["added_tokens"].is_array())
    for (const auto& a : tok["added_tokens"]) {
      if (!a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") || !a["content"].is_string())
        fail("{}: an added_tokens entry lacks an integer id or string content", src);
      const int64_t id = a["id"].get<int64_t>();
      if (id < 0) fail("{}: added token '{}' has negative id {}", src, a["content"].get<std::string>(), id);
      by_id[id] = {a["content"].get<std::string>(), a.value("special", false) ? 3 : 4};  // control / user-defined
      max_id = std::max(max_id, id);
    }
  const int64_t n = std::max(c.vocab_size, max_id + 1);
  if (n > c.vocab_size)
    fail("{}: token id {} is beyond the model's vocabulary of {} (config vocab_size)", src, max_id, c.vocab_size);
  std::vector<std::string> tokens(static_cast<size_t>(n));
  std::vector<int32_t> types(static_cast<size_t>(n), 5);  // unused
  std::unordered_map<std::string, int64_t> id_of;
  for (int64_t i = 0; i < n; ++i) {
    auto it = by_id.find(i);
    if (it == by_id.end()) {
      tokens[size_t(i)] = fmt::format("[PAD{}]", i);
      continue;
    }
    tokens[size_t(i)] = it->second.first;
    types[size_t(i)] = it->second.second;
    id_of.emplace(it->second.first, i);
  }

  std::vector<std::string> merges;
  if (model.contains("merges") && model["merges"].is_array())
    for (const auto& m : model["merges"]) {
      if (m.is_string()) merges.push_back(m.get<std::string>());
      else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
        merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
      else fail("{}: merges entry {} is neither \"a b\" nor [\"a\", \"b\"]", src, merges.size());
    }

  std::vector<GgufKv> kv = {
      {"tokenizer.ggml.model", GgufValue::string("gpt2")},
      {"tokenizer.ggml.pre", GgufValue::string(pre)},
      {"tokenizer.ggml.tokens", GgufValue::strings(tokens)},
      {"tokenizer.ggml.token_type", GgufValue::i32s(types)},
      {"tokenizer.ggml.merges", GgufValue::strings(merges)},
  };
  // Special ids: config.json's, else the token text tokenizer_config.json names.
  auto id_for = [&](int64_t from_config, const char* key) -> int64_t {
    if (from_config >= 0 && from_config < n) return from_config;
    if (tcfg.contains(key)) {
      auto it = id_of.find(token_text(tcfg[key]));
      if (it != id_of.end()) return it->second;
    }
    return -1;
  };
  const int64_t bos = id_for(c.bos_token_id, "bos_token");
  const int64_t eos = id_for(c.eos_token_ids.empty() ? -1 : c.eos_token_ids.front(), "eos_token");
  const int64_t pad = id_for(-1, "pad_token");
  if (bos >= 0) kv.push_back({"tokenizer.ggml.bos_token_id", GgufValue::u32(uint32_t(bos))});
  if (eos >= 0) kv.push_back({"tokenizer.ggml.eos_token_id", GgufValue::u32(uint32_t(eos))});
  if (pad >= 0) kv.push_back({"tokenizer.ggml.padding_token_id", GgufValue::u32(uint32_t(pad))});
  // add_bos_token: tokenizer_config.json's flag, else whether the post-processor's template starts with a
  // special token (Llama 3's TemplateProcessing); byte-level post-processors add nothing.
  bool add_bos = false;
  if (tcfg.contains("add_bos_token") && tcfg["add_bos_token"].is_boolean()) {
    add_bos = tcfg["add_bos_token"].get<bool>();
  } else {
    std::vector<const json*> procs;
    if (const json* p = tok.contains("post_processor") ? &tok["post_processor"] : nullptr; p && p->is_object()) {
      if (p->value("type", "") == "Sequence" && p->contains("processors") && (*p)["processors"].is_array())
        for (const auto& q : (*p)["processors"]) procs.push_back(&q);
      else procs.push_back(p);
    }
    for (const json* p : procs)
      if (p->is_object() && p->value("type", "") == "TemplateProcessing" && p->contains("single") &&
          (*p)["single"].is_array() && !(*p)["single"].empty() && (*p)["single"][0].contains("SpecialToken"))
        add_bos = true;
  }
  kv.push_back({"tokenizer.ggml.add_bos_token", GgufValue::boolean(add_bos)});
  if (tcfg.contains("chat_template") && tcfg["chat_template"].is_string())
    kv.push_back({"tokenizer.chat_template", GgufValue::string(tcfg["chat_template"].get<std::string>())});
  return kv;
}

}  // namespace uneven
