// Parsing of config.json (transformers 4.x and 5.x) and GGUF metadata into ModelConfig.
#include "model/config.h"

#include <cmath>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/json_integer.h"

namespace uneven {
namespace {

using nlohmann::json;

// What a family implies beyond its config.json fields; the only place a family name selects behaviour.
struct FamilyTraits {
  const char* model_type;
  bool attention_bias;
  bool qk_norm;
  bool attn_output_gate;
  bool hybrid;              // has Gated DeltaNet layers
  float norm_weight_offset;  // RMSNorm weights stored as w - 1
  bool fused_linear_projections;  // in_proj_qkvz / in_proj_ba
};
constexpr FamilyTraits kFamilies[] = {
    {"llama", false, false, false, false, 0.0f, false},
    {"qwen2", true, false, false, false, 0.0f, false},
    {"qwen3", false, true, false, false, 0.0f, false},
    {"qwen3_moe", false, true, false, false, 0.0f, false},
    {"qwen3_next", false, true, true, true, 1.0f, true},
    {"qwen3_5", false, true, true, true, 1.0f, false},
    {"qwen3_5_moe", false, true, true, true, 1.0f, false},
    {"qwen3_5_text", false, true, true, true, 1.0f, false},
    {"qwen3_5_moe_text", false, true, true, true, 1.0f, false},
};

const FamilyTraits& family(const std::string& model_type, const std::string& source) {
  for (const auto& f : kFamilies)
    if (model_type == f.model_type) return f;
  std::string known;
  for (const auto& f : kFamilies) known += std::string(known.empty() ? "" : ", ") + f.model_type;
  fail("{}: unsupported architecture '{}' (supported: {})", source, model_type, known);
}

template <typename T>
T get_or(const json& j, const char* key, T fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  // An integer written as a float (4096.0) is taken; a float no int64 holds (1e30) is refused here rather
  // than converted, which is undefined behaviour (found by fuzz/config_fuzz), in lists too.
  const std::string what = fmt::format("field '{}'", key);
  auto integer = [&](const json& v) { return json_integer_or_json_error<int64_t>(v, what); };
  if constexpr (std::is_same_v<T, int64_t>) {
    if (it->is_number()) return integer(*it);
  } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
    if (it->is_array()) {
      T out;
      for (const json& e : *it) out.push_back(integer(e));
      return out;
    }
  }
  return it->get<T>();
}

// Per-layer tables are sized from the layer count before any tensor is seen, so a count no model has
// (block_count 1e9 made the GGUF reader allocate 9.5 GB; found by fuzz/gguf_fuzz) is refused first.
constexpr int64_t kMaxLayers = 1 << 16;
int64_t checked_layer_count(int64_t n, const char* key, const std::string& source) {
  if (n < 1 || n > kMaxLayers) fail("{}: {} is {}; a model has from 1 to {} layers", source, key, n, kMaxLayers);
  return n;
}

int64_t require_int(const json& j, const char* key, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer()) fail("{}: missing or non-integer field '{}'", source, key);
  return it->get<int64_t>();
}

void read_rope(const json& j, ModelConfig& c) {
  // transformers 5.x: rope_parameters {rope_type, rope_theta, factor, ...}; 4.x: rope_theta + rope_scaling.
  const json* params = nullptr;
  if (auto it = j.find("rope_parameters"); it != j.end() && it->is_object()) params = &*it;
  if (auto it = j.find("rope_scaling"); !params && it != j.end() && it->is_object()) params = &*it;
  c.rope_theta = get_or<double>(j, "rope_theta", c.rope_theta);
  c.partial_rotary_factor = get_or<double>(j, "partial_rotary_factor", c.partial_rotary_factor);
  if (!params) return;
  const json& p = *params;
  c.rope_theta = get_or<double>(p, "rope_theta", c.rope_theta);
  c.partial_rotary_factor = get_or<double>(p, "partial_rotary_factor", c.partial_rotary_factor);
  std::string type = get_or<std::string>(p, "rope_type", get_or<std::string>(p, "type", "default"));
  c.rope_scaling.type = type;
  c.rope_scaling.factor = get_or<double>(p, "factor", 1.0);
  c.rope_scaling.low_freq_factor = get_or<double>(p, "low_freq_factor", 1.0);
  c.rope_scaling.high_freq_factor = get_or<double>(p, "high_freq_factor", 4.0);
  c.rope_scaling.original_max_position =
      get_or<int64_t>(p, "original_max_position_embeddings", c.rope_scaling.original_max_position);
}

}  // namespace

bool ModelConfig::is_moe_layer(int64_t layer) const {
  if (num_experts == 0) return false;
  if (layer_is_moe.empty()) return true;
  return layer >= 0 && layer < int64_t(layer_is_moe.size()) && layer_is_moe[size_t(layer)];
}

static ModelConfig config_from_hf_json_unchecked(const json& root, const std::string& source) {
  if (!root.is_object()) fail("{}: config is not a JSON object", source);
  const json& j = root.contains("text_config") && root["text_config"].is_object() ? root["text_config"] : root;
  ModelConfig c;
  c.architecture = get_or<std::string>(j, "model_type", get_or<std::string>(root, "model_type", ""));
  if (c.architecture.empty()) fail("{}: missing field 'model_type'", source);
  const FamilyTraits& traits = family(c.architecture, source);
  try {
    c.hidden_size = require_int(j, "hidden_size", source);
    c.num_layers = checked_layer_count(require_int(j, "num_hidden_layers", source), "num_hidden_layers", source);
    c.num_heads = require_int(j, "num_attention_heads", source);
    c.num_kv_heads = get_or<int64_t>(j, "num_key_value_heads", c.num_heads);
    c.head_dim = get_or<int64_t>(j, "head_dim", c.num_heads > 0 ? c.hidden_size / c.num_heads : 0);
    c.vocab_size = require_int(j, "vocab_size", source);
    c.intermediate_size = get_or<int64_t>(j, "intermediate_size", 0);
    c.max_position = get_or<int64_t>(j, "max_position_embeddings", c.max_position);
    c.rms_norm_eps = get_or<double>(j, "rms_norm_eps", c.rms_norm_eps);
    c.hidden_act = get_or<std::string>(j, "hidden_act", c.hidden_act);
    c.tie_word_embeddings =
        get_or<bool>(j, "tie_word_embeddings", get_or<bool>(root, "tie_word_embeddings", false));
    c.attention_bias = get_or<bool>(j, "attention_bias", traits.attention_bias);
    c.qk_norm = traits.qk_norm;
    c.attn_output_gate = get_or<bool>(j, "attn_output_gate", traits.attn_output_gate);
    c.norm_weight_offset = traits.norm_weight_offset;
    c.linear_fused_projections = traits.fused_linear_projections;
    c.torch_dtype = get_or<std::string>(j, "torch_dtype",
                                        get_or<std::string>(j, "dtype", get_or<std::string>(root, "torch_dtype", "float32")));
    read_rope(j, c);

    // transformers 5 writes Qwen3-MoE's expert count as num_local_experts, earlier versions as num_experts.
    c.num_experts = get_or<int64_t>(j, "num_experts", get_or<int64_t>(j, "num_local_experts", 0));
    c.num_experts_per_tok = get_or<int64_t>(j, "num_experts_per_tok", 0);
    c.moe_intermediate_size = get_or<int64_t>(j, "moe_intermediate_size", 0);
    c.shared_expert_intermediate_size = get_or<int64_t>(j, "shared_expert_intermediate_size", 0);
    c.norm_topk_prob = get_or<bool>(j, "norm_topk_prob", true);
    if (c.num_experts > 0) {
      int64_t sparse_step = get_or<int64_t>(j, "decoder_sparse_step", 1);
      std::vector<int64_t> mlp_only = get_or<std::vector<int64_t>>(j, "mlp_only_layers", {});
      c.layer_is_moe.assign(size_t(c.num_layers), false);
      for (int64_t l = 0; l < c.num_layers; ++l) {
        bool dense = std::find(mlp_only.begin(), mlp_only.end(), l) != mlp_only.end();
        c.layer_is_moe[size_t(l)] = !dense && sparse_step > 0 && (l + 1) % sparse_step == 0;
      }
    }

    c.linear_num_key_heads = get_or<int64_t>(j, "linear_num_key_heads", 0);
    c.linear_num_value_heads = get_or<int64_t>(j, "linear_num_value_heads", 0);
    c.linear_key_head_dim = get_or<int64_t>(j, "linear_key_head_dim", 0);
    c.linear_value_head_dim = get_or<int64_t>(j, "linear_value_head_dim", 0);
    c.linear_conv_kernel_dim = get_or<int64_t>(j, "linear_conv_kernel_dim", 0);
    c.layer_types.assign(size_t(std::max<int64_t>(c.num_layers, 0)), LayerKind::FullAttention);
    if (auto it = j.find("layer_types"); it != j.end() && it->is_array()) {
      if (int64_t(it->size()) != c.num_layers)
        fail("{}: layer_types has {} entries but num_hidden_layers is {}", source, it->size(), c.num_layers);
      for (size_t l = 0; l < it->size(); ++l) {
        if (!(*it)[l].is_string()) fail("{}: layer_types[{}] is not a string", source, l);
        std::string kind = (*it)[l].get<std::string>();
        if (kind == "linear_attention") c.layer_types[l] = LayerKind::LinearAttention;
        else if (kind != "full_attention" && kind != "sliding_attention")
          fail("{}: layer_types[{}] is '{}', expected full_attention or linear_attention", source, l, kind);
      }
    } else if (traits.hybrid) {
      int64_t interval = get_or<int64_t>(j, "full_attention_interval", 4);
      if (interval <= 0) fail("{}: full_attention_interval must be positive, got {}", source, interval);
      for (int64_t l = 0; l < c.num_layers; ++l)
        c.layer_types[size_t(l)] = (l + 1) % interval == 0 ? LayerKind::FullAttention : LayerKind::LinearAttention;
    }

    c.bos_token_id = get_or<int64_t>(j, "bos_token_id", get_or<int64_t>(root, "bos_token_id", -1));
    const json* eos = j.contains("eos_token_id") ? &j["eos_token_id"] : root.contains("eos_token_id") ? &root["eos_token_id"] : nullptr;
    if (eos && eos->is_number_integer()) c.eos_token_ids.push_back(eos->get<int64_t>());
    if (eos && eos->is_array())
      for (const auto& e : *eos) {
        if (!e.is_number_integer()) fail("{}: eos_token_id lists {}, which is not a token id", source, e.dump());
        c.eos_token_ids.push_back(e.get<int64_t>());
      }
  } catch (const json::exception& e) {
    fail("{}: malformed field: {}", source, e.what());
  }
  validate(c, source);
  return c;
}

ModelConfig config_from_hf_json(const json& root, const std::string& source) {
  // A field of an unexpected type outside the checked ones ("model_type": 5) surfaces as nlohmann's
  // type_error; it is bad input like any other (found by fuzz/config_fuzz).
  try {
    return config_from_hf_json_unchecked(root, source);
  } catch (const json::exception& e) {
    fail("{}: malformed field: {}", source, e.what());
  }
}

ModelConfig load_hf_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("{}: cannot open config file", path);
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    fail("{}: invalid JSON: {}", path, e.what());
  }
  return config_from_hf_json(j, path);
}

namespace {

// general.architecture as llama.cpp names it (src/llama-arch.cpp), the Hugging Face family it holds, and
// what llama.cpp's converter and graph imply beyond the metadata keys.
struct GgufArch {
  const char* name;
  const char* model_type;  // kFamilies entry
  // q/k rows permuted so that RoPE rotates adjacent pairs: llama.cpp's converter does it for LLAMA_ROPE_TYPE_NORM
  // models (llama); the Qwen families run NEOX rope (halves) on rows as Hugging Face has them.
  bool rope_adjacent_pairs;
  // What llama.cpp's MoE graph does when the file has no expert_weights_norm key: qwen3moe, qwen3next
  // and qwen35moe renormalise the top-k probabilities whatever the Hugging Face config said.
  bool norm_topk_prob;
};
constexpr GgufArch kGgufArchs[] = {
    {"llama", "llama", true, true},
    {"qwen2", "qwen2", false, true},
    {"qwen3", "qwen3", false, true},
    {"qwen3moe", "qwen3_moe", false, true},
    {"qwen3next", "qwen3_next", false, true},
    {"qwen35", "qwen3_5_text", false, true},
    {"qwen35moe", "qwen3_5_moe_text", false, true},
};

const GgufArch& gguf_arch(const std::string& name, const std::string& source) {
  for (const auto& a : kGgufArchs)
    if (name == a.name) return a;
  std::string known;
  for (const auto& a : kGgufArchs) known += std::string(known.empty() ? "" : ", ") + a.name;
  fail("{}: unsupported GGUF architecture '{}' (supported: {})", source, name, known);
}

}  // namespace

static ModelConfig config_from_gguf_metadata_unchecked(const json& md, const std::string& source) {
  std::string arch = get_or<std::string>(md, "general.architecture", "");
  if (arch.empty()) fail("{}: GGUF metadata has no general.architecture", source);
  const GgufArch& ga = gguf_arch(arch, source);
  const FamilyTraits& traits = family(ga.model_type, source);
  auto key = [&](const char* suffix) { return arch + "." + suffix; };
  auto number = [&](const json& v, const char* suffix) {
    if (!v.is_number()) fail("{}: GGUF metadata key '{}' must be a number, not {}", source, key(suffix), v.type_name());
    return v.get<double>();
  };
  auto need = [&](const char* suffix) {
    auto it = md.find(key(suffix));
    if (it == md.end() || !it->is_number()) fail("{}: GGUF metadata lacks numeric key '{}'", source, key(suffix));
    return require_json_integer<int64_t>(*it, fmt::format("{}: GGUF metadata key '{}'", source, key(suffix)));
  };
  auto opt = [&](const char* suffix, double fallback) {
    auto it = md.find(key(suffix));
    return it == md.end() || !it->is_number() ? fallback : it->get<double>();
  };
  auto opt_int = [&](const char* suffix, int64_t fallback) {
    auto it = md.find(key(suffix));
    if (it == md.end() || !it->is_number()) return fallback;
    return require_json_integer<int64_t>(*it, fmt::format("{}: GGUF metadata key '{}'", source, key(suffix)));
  };
  ModelConfig c;
  c.architecture = ga.model_type;
  c.hidden_size = need("embedding_length");
  c.num_layers = checked_layer_count(need("block_count"), "block_count", source);
  c.num_heads = need("attention.head_count");
  c.num_kv_heads = opt_int("attention.head_count_kv", c.num_heads);
  c.head_dim = opt_int("attention.key_length", c.num_heads > 0 ? c.hidden_size / c.num_heads : 0);
  c.max_position = opt_int("context_length", 2048);
  c.rms_norm_eps = opt("attention.layer_norm_rms_epsilon", 1e-5);
  c.rope_theta = opt("rope.freq_base", 10000.0);
  double rot = opt("rope.dimension_count", double(c.head_dim));
  c.partial_rotary_factor = c.head_dim > 0 ? rot / double(c.head_dim) : 1.0;
  c.rope_interleaved = ga.rope_adjacent_pairs;
  c.attention_bias = traits.attention_bias;
  c.qk_norm = traits.qk_norm;
  c.attn_output_gate = traits.attn_output_gate;
  // llama.cpp's converter adds the 1 of (1 + w) RMSNorms to the weights (Qwen3NextModel.modify_tensors).
  c.norm_weight_offset = 0.0f;
  c.vocab_size = opt_int("vocab_size", 0);
  if (c.vocab_size == 0)
    if (auto it = md.find("tokenizer.ggml.tokens"); it != md.end() && it->is_array()) c.vocab_size = int64_t(it->size());
  if (auto it = md.find(key("rope.scaling.type")); it != md.end() && it->is_string()) {
    c.rope_scaling.type = it->get<std::string>() == "none" ? "default" : it->get<std::string>();
    c.rope_scaling.factor = opt("rope.scaling.factor", 1.0);
    c.rope_scaling.original_max_position = opt_int("rope.scaling.original_context_length", 8192);
  }
  const size_t layers = size_t(std::max<int64_t>(c.num_layers, 0));

  // A per-layer key (llama.cpp's get_key_or_arr) as one integer per layer.
  auto per_layer = [&](const char* suffix, int64_t fallback) {
    std::vector<int64_t> v(layers, fallback);
    auto it = md.find(key(suffix));
    if (it == md.end()) return v;
    const std::string what = fmt::format("{}: GGUF metadata key '{}'", source, key(suffix));
    if (!it->is_array()) {
      v.assign(layers, require_json_integer<int64_t>(*it, what));
      return v;
    }
    if (it->size() != layers)
      fail("{}: GGUF metadata key '{}' has {} entries but block_count is {}", source, key(suffix), it->size(), layers);
    for (size_t l = 0; l < layers; ++l) v[l] = require_json_integer<int64_t>((*it)[l], what);
    return v;
  };

  // Dense FFN width: one value, or one per layer (0 for MoE layers); the engine has one width.
  for (int64_t ff : per_layer("feed_forward_length", 0)) {
    if (ff == 0) continue;
    if (c.intermediate_size != 0 && ff != c.intermediate_size)
      fail("{}: GGUF metadata key '{}' gives dense layers different widths ({} and {})", source,
           key("feed_forward_length"), c.intermediate_size, ff);
    c.intermediate_size = ff;
  }

  // Mixture of experts. Which layers route: every layer, unless interleave_moe_layer_step (Hugging Face's
  // decoder_sparse_step), leading_dense_block_count, or a per-layer expert_feed_forward_length with 0 for
  // the dense layers (Hugging Face's mlp_only_layers) says otherwise.
  c.num_experts = opt_int("expert_count", 0);
  if (c.num_experts > 0) {
    c.num_experts_per_tok = opt_int("expert_used_count", 0);
    c.shared_expert_intermediate_size = opt_int("expert_shared_feed_forward_length", 0);
    c.norm_topk_prob = ga.norm_topk_prob;
    if (auto it = md.find(key("expert_weights_norm")); it != md.end() && it->is_boolean()) c.norm_topk_prob = it->get<bool>();
    const std::vector<int64_t> expert_ff = per_layer("expert_feed_forward_length", 0);
    const int64_t step = opt_int("interleave_moe_layer_step", 1);
    const int64_t leading_dense = opt_int("leading_dense_block_count", 0);
    if (step <= 0) fail("{}: GGUF metadata key '{}' must be positive, got {}", source, key("interleave_moe_layer_step"), step);
    c.layer_is_moe.assign(layers, false);
    for (size_t l = 0; l < layers; ++l) {
      const bool moe = int64_t(l) >= leading_dense && (int64_t(l) + 1) % step == 0 && expert_ff[l] > 0;
      c.layer_is_moe[l] = moe;
      if (!moe) continue;
      if (c.moe_intermediate_size != 0 && expert_ff[l] != c.moe_intermediate_size)
        fail("{}: GGUF metadata key '{}' gives MoE layers different expert widths ({} and {})", source,
             key("expert_feed_forward_length"), c.moe_intermediate_size, expert_ff[l]);
      c.moe_intermediate_size = expert_ff[l];
    }
    if (c.moe_intermediate_size == 0)
      fail("{}: GGUF metadata has {} = {} but no positive '{}'", source, key("expert_count"), c.num_experts,
           key("expert_feed_forward_length"));
  }

  // Gated DeltaNet hybrids: llama.cpp keeps the linear-attention sizes under ssm.* (Qwen3NextModel.
  // set_gguf_parameters): state_size = key head dim, group_count = key heads, time_step_rank = value
  // heads, inner_size = value heads x value head dim.
  c.layer_types.assign(layers, LayerKind::FullAttention);
  if (traits.hybrid) {
    c.linear_conv_kernel_dim = need("ssm.conv_kernel");
    c.linear_key_head_dim = need("ssm.state_size");
    c.linear_num_key_heads = need("ssm.group_count");
    c.linear_num_value_heads = need("ssm.time_step_rank");
    const int64_t inner = need("ssm.inner_size");
    if (c.linear_num_value_heads <= 0 || inner % c.linear_num_value_heads != 0)
      fail("{}: GGUF metadata '{}' = {} is not a multiple of '{}' = {}", source, key("ssm.inner_size"), inner,
           key("ssm.time_step_rank"), c.linear_num_value_heads);
    c.linear_value_head_dim = inner / c.linear_num_value_heads;
    if (auto it = md.find(key("attention.recurrent_layers")); it != md.end() && it->is_array()) {
      if (it->size() != layers)
        fail("{}: GGUF metadata key '{}' has {} entries but block_count is {}", source, key("attention.recurrent_layers"),
             it->size(), layers);
      for (size_t l = 0; l < layers; ++l)
        if ((*it)[l].is_boolean() ? (*it)[l].get<bool>() : number((*it)[l], "attention.recurrent_layers") != 0)
          c.layer_types[l] = LayerKind::LinearAttention;
    } else {
      const int64_t interval = opt_int("full_attention_interval", 4);
      if (interval <= 0) fail("{}: GGUF metadata key '{}' must be positive, got {}", source, key("full_attention_interval"), interval);
      for (size_t l = 0; l < layers; ++l)
        if ((int64_t(l) + 1) % interval != 0) c.layer_types[l] = LayerKind::LinearAttention;
    }
    // The converter splits Qwen3-Next's in_proj_qkvz into attn_qkv (q, k, v by heads) + attn_gate (z). What
    // the loader cannot take yet: ssm_a = -exp(A_log), ssm_conv1d without its middle axis, Qwen3-Next's
    // in_proj_ba kept fused beside the split q|k|v|z, and Qwen3.5's value heads reordered to tiled order
    // when they outnumber the key heads; such files are refused at load, naming the tensor that is missing.
    c.linear_fused_projections = false;
  }

  c.bos_token_id = get_or<int64_t>(md, "tokenizer.ggml.bos_token_id", -1);
  if (md.contains("tokenizer.ggml.eos_token_id"))
    c.eos_token_ids.push_back(require_json_integer<int64_t>(md["tokenizer.ggml.eos_token_id"],
                                                            source + ": GGUF metadata key 'tokenizer.ggml.eos_token_id'"));
  validate(c, source);
  return c;
}

ModelConfig config_from_gguf_metadata(const json& md, const std::string& source) {
  // A metadata value of an unexpected type (a number where a string belongs) surfaces as nlohmann's
  // type_error; it is bad input like any other (found by fuzz/gguf_fuzz).
  try {
    return config_from_gguf_metadata_unchecked(md, source);
  } catch (const json::exception& e) {
    fail("{}: malformed GGUF metadata: {}", source, e.what());
  }
}

void validate(const ModelConfig& c, const std::string& source) {
  // Sizes beyond 2^40 are no model's; refusing them here keeps the products of sizes below (bytes of a
  // tensor, rotary_dim) far from overflow.
  auto positive = [&](int64_t v, const char* name) {
    if (v <= 0) fail("{}: {} must be positive, got {}", source, name, v);
    if (v > (int64_t(1) << 40)) fail("{}: {} is {}, larger than any model's (at most 2^40)", source, name, v);
  };
  positive(c.hidden_size, "hidden_size");
  positive(c.num_layers, "num_hidden_layers");
  positive(c.num_heads, "num_attention_heads");
  positive(c.num_kv_heads, "num_key_value_heads");
  positive(c.head_dim, "head_dim");
  positive(c.vocab_size, "vocab_size");
  if (c.num_experts == 0 || c.layer_is_moe.size() != size_t(c.num_layers) ||
      std::find(c.layer_is_moe.begin(), c.layer_is_moe.end(), false) != c.layer_is_moe.end())
    positive(c.intermediate_size, "intermediate_size");
  if (c.num_heads % c.num_kv_heads != 0)
    fail("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", source, c.num_heads, c.num_kv_heads);
  // Checked before rotary_dim() converts head_dim x factor to an integer (1e28 was undefined; fuzz/config_fuzz).
  if (!(c.partial_rotary_factor > 0 && c.partial_rotary_factor <= 1))
    fail("{}: partial_rotary_factor must be in (0, 1], got {}", source, c.partial_rotary_factor);
  if (c.rotary_dim() % 2 != 0 || c.rotary_dim() > c.head_dim)
    fail("{}: rotary dimension {} (head_dim {} x partial_rotary_factor {}) must be even and at most head_dim",
         source, c.rotary_dim(), c.head_dim, c.partial_rotary_factor);
  if (c.rope_scaling.type != "default" && c.rope_scaling.type != "linear" && c.rope_scaling.type != "llama3")
    fail("{}: unsupported rope scaling type '{}' (supported: default, linear, llama3)", source, c.rope_scaling.type);
  if (c.hidden_act != "silu")
    fail("{}: hidden_act '{}' is not supported (supported: silu)", source, c.hidden_act);
  if (c.num_experts < 0) fail("{}: num_experts must not be negative, got {}", source, c.num_experts);
  if (c.shared_expert_intermediate_size < 0)
    fail("{}: shared_expert_intermediate_size must not be negative, got {}", source, c.shared_expert_intermediate_size);
  if (c.num_experts > 0) {
    positive(c.num_experts_per_tok, "num_experts_per_tok");
    positive(c.moe_intermediate_size, "moe_intermediate_size");
    if (c.num_experts_per_tok > c.num_experts)
      fail("{}: num_experts_per_tok {} exceeds num_experts {}", source, c.num_experts_per_tok, c.num_experts);
  }
  bool has_linear = std::find(c.layer_types.begin(), c.layer_types.end(), LayerKind::LinearAttention) != c.layer_types.end();
  if (has_linear) {
    positive(c.linear_num_key_heads, "linear_num_key_heads");
    positive(c.linear_num_value_heads, "linear_num_value_heads");
    positive(c.linear_key_head_dim, "linear_key_head_dim");
    positive(c.linear_value_head_dim, "linear_value_head_dim");
    positive(c.linear_conv_kernel_dim, "linear_conv_kernel_dim");
    if (c.linear_num_value_heads % c.linear_num_key_heads != 0)
      fail("{}: linear_num_value_heads {} is not a multiple of linear_num_key_heads {}", source,
           c.linear_num_value_heads, c.linear_num_key_heads);
  }
}

}  // namespace uneven
