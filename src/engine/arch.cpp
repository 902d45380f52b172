// The dense decoder tensor table (llama, qwen2, qwen3) and the resolution of split roles to slices.
#include "engine/arch.h"

#include "util/error.h"

namespace uneven {

std::string layer_prefix(int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }

std::vector<TensorSpec> global_tensors(const ModelConfig& c) {
  std::vector<TensorSpec> t = {
      {"model.embed_tokens.weight", {c.vocab_size, c.hidden_size}, SplitRole::EmbeddingRows},
      {"model.norm.weight", {c.hidden_size}, SplitRole::Replicated},
  };
  if (!c.tie_word_embeddings) t.push_back({"lm_head.weight", {c.vocab_size, c.hidden_size}, SplitRole::OutputRows});
  return t;
}

std::vector<TensorSpec> layer_tensors(const ModelConfig& c, int64_t layer) {
  const std::string p = layer_prefix(layer);
  const int64_t h = c.hidden_size;
  std::vector<TensorSpec> t = {
      {p + "input_layernorm.weight", {h}, SplitRole::Replicated},
      {p + "self_attn.q_proj.weight", {c.q_dim(), h}, SplitRole::QHeadRows},
      {p + "self_attn.k_proj.weight", {c.kv_dim(), h}, SplitRole::KVHeadRows},
      {p + "self_attn.v_proj.weight", {c.kv_dim(), h}, SplitRole::KVHeadRows},
      {p + "self_attn.o_proj.weight", {h, c.q_dim()}, SplitRole::QHeadCols},
      {p + "post_attention_layernorm.weight", {h}, SplitRole::Replicated},
      {p + "mlp.gate_proj.weight", {c.intermediate_size, h}, SplitRole::MlpRows},
      {p + "mlp.up_proj.weight", {c.intermediate_size, h}, SplitRole::MlpRows},
      {p + "mlp.down_proj.weight", {h, c.intermediate_size}, SplitRole::MlpCols},
  };
  if (c.attention_bias) {
    t.push_back({p + "self_attn.q_proj.bias", {c.q_dim()}, SplitRole::QHeadRows});
    t.push_back({p + "self_attn.k_proj.bias", {c.kv_dim()}, SplitRole::KVHeadRows});
    t.push_back({p + "self_attn.v_proj.bias", {c.kv_dim()}, SplitRole::KVHeadRows});
  }
  if (c.qk_norm) {
    t.push_back({p + "self_attn.q_norm.weight", {c.head_dim}, SplitRole::Replicated});
    t.push_back({p + "self_attn.k_norm.weight", {c.head_dim}, SplitRole::Replicated});
  }
  return t;
}

SliceRange slice_for(const TensorSpec& spec, const ModelConfig& c, const RankSlices& s, int64_t layer) {
  auto layer_slices = [&]() -> const LayerSlices& {
    if (layer < 0 || layer >= int64_t(s.layer.size()))
      fail("plan for rank {} has no slices for layer {} (tensor {})", s.rank, layer, spec.name);
    return s.layer[size_t(layer)];
  };
  const int64_t hd = c.head_dim;
  switch (spec.role) {
    case SplitRole::Replicated: return {false, 0, spec.shape[0]};
    case SplitRole::QHeadRows: return {false, layer_slices().q_heads.begin * hd, layer_slices().q_heads.end * hd};
    case SplitRole::KVHeadRows: return {false, layer_slices().kv_heads.begin * hd, layer_slices().kv_heads.end * hd};
    case SplitRole::QHeadCols: return {true, layer_slices().q_heads.begin * hd, layer_slices().q_heads.end * hd};
    case SplitRole::MlpRows: return {false, layer_slices().mlp_cols.begin, layer_slices().mlp_cols.end};
    case SplitRole::MlpCols: return {true, layer_slices().mlp_cols.begin, layer_slices().mlp_cols.end};
    case SplitRole::EmbeddingRows: return {false, s.embedding_rows.begin, s.embedding_rows.end};
    case SplitRole::OutputRows: return {false, s.output_rows.begin, s.output_rows.end};
  }
  fail("unknown split role for tensor {}", spec.name);
}

}  // namespace uneven
