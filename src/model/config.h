// Model hyper-parameters, read from Hugging Face config.json or GGUF metadata; shared by engine and planner.
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace uneven {

enum class LayerKind : uint8_t { FullAttention, LinearAttention };

struct RopeScaling {
  std::string type = "default";  // "default" (none), "linear", "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position = 8192;
};

// Every difference between supported families is a field here; the forward pass reads fields,
// never the architecture name.
struct ModelConfig {
  std::string architecture;  // model_type: llama, qwen2, qwen3, qwen3_moe, qwen3_next, qwen3_5, qwen3_5_moe
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;  // dense MLP width (0 when every layer is MoE)
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  int64_t max_position = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  double partial_rotary_factor = 1.0;  // fraction of head_dim that is rotated
  RopeScaling rope_scaling;
  // Per-frequency divisors of the inverse frequencies (llama.cpp's rope_freqs.weight: how its GGUFs carry
  // Llama 3 scaling); empty: none. rotary_dim / 2 values when present.
  std::vector<float> rope_freq_factors;
  bool rope_interleaved = false;  // true: rotate adjacent pairs (GGUF/llama2.c); false: rotate halves (HF)
  bool tie_word_embeddings = false;
  bool attention_bias = false;     // q/k/v projections carry a bias (qwen2)
  bool qk_norm = false;            // RMSNorm over each head of q and k (qwen3)
  bool attn_output_gate = false;   // q_proj yields query and a sigmoid gate per head (qwen3_next, qwen3_5)
  // RMSNorm weights stored as an offset from one: the norm multiplies by (offset + w) (qwen3_next, qwen3_5:
  // 1; everyone else 0). The gated RMSNorm of linear attention multiplies by w itself either way.
  float norm_weight_offset = 0.0f;
  std::string hidden_act = "silu";

  // Mixture of experts (0 experts = dense).
  int64_t num_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t moe_intermediate_size = 0;
  int64_t shared_expert_intermediate_size = 0;
  bool norm_topk_prob = true;
  std::vector<bool> layer_is_moe;  // per layer; empty = all dense or all MoE by num_experts

  // Gated DeltaNet linear attention (qwen3_next, qwen3_5).
  int64_t linear_num_key_heads = 0;
  int64_t linear_num_value_heads = 0;
  int64_t linear_key_head_dim = 0;
  int64_t linear_value_head_dim = 0;
  int64_t linear_conv_kernel_dim = 0;
  // Layout of the linear-attention input projections: false = separate in_proj_qkv, in_proj_z, in_proj_b,
  // in_proj_a (qwen3_5); true = fused in_proj_qkvz / in_proj_ba interleaved per key-head group (qwen3_next).
  bool linear_fused_projections = false;
  std::vector<LayerKind> layer_types;  // per layer; filled for all families

  std::string torch_dtype = "float32";  // dtype of the checkpoint as declared
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
  int64_t rotary_dim() const { return int64_t(double(head_dim) * partial_rotary_factor); }
  // Rows of q_proj per query head: the query, and with attn_output_gate its gate after it.
  int64_t q_rows_per_head() const { return head_dim * (attn_output_gate ? 2 : 1); }
  int64_t linear_value_heads_per_key_head() const {
    return linear_num_key_heads > 0 ? linear_num_value_heads / linear_num_key_heads : 0;
  }
  // Channels of the causal conv1d: q and k of every key head, v of every value head.
  int64_t linear_conv_dim() const {
    return 2 * linear_num_key_heads * linear_key_head_dim + linear_num_value_heads * linear_value_head_dim;
  }
  bool is_moe_layer(int64_t layer) const;
};

// Parses a transformers 4.x or 5.x config.json (text_config nested for multimodal families).
// `source` names the file in error messages. Throws uneven::Error on missing or contradictory fields.
ModelConfig config_from_hf_json(const nlohmann::json& json, const std::string& source);
ModelConfig load_hf_config(const std::string& path);

// Builds the config from GGUF metadata (keys like "llama.embedding_length"); `vocab_size` comes from the
// tokenizer's token list when the metadata lacks it.
ModelConfig config_from_gguf_metadata(const nlohmann::json& metadata, const std::string& source);

// Checks internal consistency (positive sizes, heads divisible into groups, ...); throws naming the field.
void validate(const ModelConfig& config, const std::string& source);

}  // namespace uneven
