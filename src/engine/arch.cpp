// The tensor table of every family (dense, MoE, Gated DeltaNet hybrids) and the resolution of split roles.
#include "engine/arch.h"

#include <fmt/format.h>

#include "util/error.h"

namespace uneven {

std::string layer_prefix(int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }

std::vector<TensorSpec> global_tensors(const ModelConfig& c) {
  std::vector<TensorSpec> t = {
      {"model.embed_tokens.weight", {c.vocab_size, c.hidden_size}, SplitRole::EmbeddingRows, Slot::Embedding},
      {"model.norm.weight", {c.hidden_size}, SplitRole::Replicated, Slot::FinalNorm},
  };
  if (!c.tie_word_embeddings)
    t.push_back({"lm_head.weight", {c.vocab_size, c.hidden_size}, SplitRole::OutputRows, Slot::Output});
  return t;
}

namespace {

void attention_tensors(const ModelConfig& c, const std::string& p, std::vector<TensorSpec>& t) {
  const int64_t h = c.hidden_size, q_rows = c.num_heads * c.q_rows_per_head();
  t.push_back({p + "self_attn.q_proj.weight", {q_rows, h}, SplitRole::QHeadRows, Slot::Q});
  t.push_back({p + "self_attn.k_proj.weight", {c.kv_dim(), h}, SplitRole::KVHeadRows, Slot::K});
  t.push_back({p + "self_attn.v_proj.weight", {c.kv_dim(), h}, SplitRole::KVHeadRows, Slot::V});
  t.push_back({p + "self_attn.o_proj.weight", {h, c.q_dim()}, SplitRole::QHeadCols, Slot::O});
  if (c.attention_bias) {
    t.push_back({p + "self_attn.q_proj.bias", {q_rows}, SplitRole::QHeadRows, Slot::QBias});
    t.push_back({p + "self_attn.k_proj.bias", {c.kv_dim()}, SplitRole::KVHeadRows, Slot::KBias});
    t.push_back({p + "self_attn.v_proj.bias", {c.kv_dim()}, SplitRole::KVHeadRows, Slot::VBias});
  }
  if (c.qk_norm) {
    t.push_back({p + "self_attn.q_norm.weight", {c.head_dim}, SplitRole::Replicated, Slot::QNorm});
    t.push_back({p + "self_attn.k_norm.weight", {c.head_dim}, SplitRole::Replicated, Slot::KNorm});
  }
}

void linear_attention_tensors(const ModelConfig& c, const std::string& p, std::vector<TensorSpec>& t) {
  const int64_t h = c.hidden_size, nk = c.linear_num_key_heads, nv = c.linear_num_value_heads;
  const int64_t dk = c.linear_key_head_dim, dv = c.linear_value_head_dim;
  const std::string a = p + "linear_attn.";
  if (c.linear_fused_projections) {
    t.push_back({a + "in_proj_qkvz.weight", {2 * nk * dk + 2 * nv * dv, h}, SplitRole::LinearQKVZRows, Slot::LinearIn});
    t.push_back({a + "in_proj_ba.weight", {2 * nv, h}, SplitRole::LinearBARows, Slot::LinearIn});
  } else {
    t.push_back({a + "in_proj_qkv.weight", {2 * nk * dk + nv * dv, h}, SplitRole::LinearQKVRows, Slot::LinearIn});
    t.push_back({a + "in_proj_z.weight", {nv * dv, h}, SplitRole::LinearVRows, Slot::LinearIn});
    t.push_back({a + "in_proj_b.weight", {nv, h}, SplitRole::LinearVHeadRows, Slot::LinearIn});
    t.push_back({a + "in_proj_a.weight", {nv, h}, SplitRole::LinearVHeadRows, Slot::LinearIn});
  }
  t.push_back({a + "conv1d.weight", {c.linear_conv_dim(), 1, c.linear_conv_kernel_dim}, SplitRole::LinearQKVRows,
               Slot::LinearConv});
  t.push_back({a + "A_log", {nv}, SplitRole::LinearVHeadRows, Slot::LinearALog});
  t.push_back({a + "dt_bias", {nv}, SplitRole::LinearVHeadRows, Slot::LinearDtBias});
  t.push_back({a + "norm.weight", {dv}, SplitRole::Replicated, Slot::LinearNorm});
  t.push_back({a + "out_proj.weight", {h, nv * dv}, SplitRole::LinearVCols, Slot::LinearOut});
}

void moe_tensors(const ModelConfig& c, const std::string& p, std::vector<TensorSpec>& t) {
  const int64_t h = c.hidden_size, e_cols = c.moe_intermediate_size, n = c.num_experts;
  t.push_back({p + "mlp.gate.weight", {n, h}, SplitRole::Replicated, Slot::Router});
  // Checkpoints hold experts one tensor per projection per expert, or stacked: gate_up_proj [E, 2I, H]
  // (per expert gate rows, then up rows) and down_proj [E, H, I]; or, as llama.cpp's converter writes them
  // (ffn_gate_exps, ffn_up_exps, ffn_down_exps), gate_proj and up_proj [E, I, H] each.
  const std::string stacked_gate_up = p + "mlp.experts.gate_up_proj", stacked_down = p + "mlp.experts.down_proj";
  for (int64_t e = 0; e < n; ++e) {
    const std::string x = p + "mlp.experts." + std::to_string(e) + ".";
    TensorSpec gate{x + "gate_proj.weight", {e_cols, h}, SplitRole::ExpertRows, Slot::ExpertGateUp, e};
    gate.stacked = StackedSource{stacked_gate_up, {n, 2 * e_cols, h}, e, 0};
    gate.stacked_alternatives = {StackedSource{p + "mlp.experts.gate_proj", {n, e_cols, h}, e, 0}};
    TensorSpec up{x + "up_proj.weight", {e_cols, h}, SplitRole::ExpertRows, Slot::ExpertGateUp, e};
    up.stacked = StackedSource{stacked_gate_up, {n, 2 * e_cols, h}, e, e_cols};
    up.stacked_alternatives = {StackedSource{p + "mlp.experts.up_proj", {n, e_cols, h}, e, 0}};
    TensorSpec down{x + "down_proj.weight", {h, e_cols}, SplitRole::ExpertCols, Slot::ExpertDown, e};
    down.stacked = StackedSource{stacked_down, {n, h, e_cols}, e, 0};
    t.push_back(std::move(gate));
    t.push_back(std::move(up));
    t.push_back(std::move(down));
  }
  if (c.shared_expert_intermediate_size > 0) {
    const int64_t s = c.shared_expert_intermediate_size;
    t.push_back({p + "mlp.shared_expert.gate_proj.weight", {s, h}, SplitRole::SharedExpertRows, Slot::SharedGateUp});
    t.push_back({p + "mlp.shared_expert.up_proj.weight", {s, h}, SplitRole::SharedExpertRows, Slot::SharedGateUp});
    t.push_back({p + "mlp.shared_expert.down_proj.weight", {h, s}, SplitRole::SharedExpertCols, Slot::SharedDown});
    t.push_back({p + "mlp.shared_expert_gate.weight", {1, h}, SplitRole::Replicated, Slot::SharedGate});
  }
}

}  // namespace

std::vector<TensorSpec> layer_tensors(const ModelConfig& c, int64_t layer) {
  const std::string p = layer_prefix(layer);
  const int64_t h = c.hidden_size;
  std::vector<TensorSpec> t = {
      {p + "input_layernorm.weight", {h}, SplitRole::Replicated, Slot::AttnNorm},
      {p + "post_attention_layernorm.weight", {h}, SplitRole::Replicated, Slot::FfnNorm},
  };
  if (c.layer_types[size_t(layer)] == LayerKind::LinearAttention) linear_attention_tensors(c, p, t);
  else attention_tensors(c, p, t);
  if (c.is_moe_layer(layer)) {
    moe_tensors(c, p, t);
  } else {
    t.push_back({p + "mlp.gate_proj.weight", {c.intermediate_size, h}, SplitRole::MlpRows, Slot::MlpGateUp});
    t.push_back({p + "mlp.up_proj.weight", {c.intermediate_size, h}, SplitRole::MlpRows, Slot::MlpGateUp});
    t.push_back({p + "mlp.down_proj.weight", {h, c.intermediate_size}, SplitRole::MlpCols, Slot::MlpDown});
  }
  return t;
}

int64_t SliceRange::count() const {
  int64_t n = 0;
  for (const Range& r : runs) n += r.size();
  return n;
}

namespace {

// Appends [begin, end) to runs, merging it with the last run when they touch; skips empty ranges.
void add_run(std::vector<Range>& runs, int64_t begin, int64_t end) {
  if (end <= begin) return;
  if (!runs.empty() && runs.back().end == begin) runs.back().end = end;
  else runs.push_back({begin, end});
}

SliceRange rows(Range r, int64_t unit) {
  SliceRange s;
  add_run(s.runs, r.begin * unit, r.end * unit);
  return s;
}

SliceRange cols(Range r, int64_t unit) {
  SliceRange s = rows(r, unit);
  s.columns = true;
  if (s.runs.empty()) s.runs.push_back({0, 0});
  return s;
}

// Fused Qwen3-Next projections: each key-head group g holds [q (dk), k (dk), v (r x dv), z (r x dv)] rows
// (in_proj_qkvz) and [b (r), a (r)] rows (in_proj_ba), r = value heads per key head. The rank's rows come
// out in the order q, k, v, z (b, a), the order of the separate Qwen3.5 tensors.
SliceRange fused_qkvz(const ModelConfig& c, const LayerSlices& ls) {
  const int64_t dk = c.linear_key_head_dim, dv = c.linear_value_head_dim, r = c.linear_value_heads_per_key_head();
  const int64_t group = 2 * dk + 2 * r * dv;
  SliceRange s;
  for (int64_t part = 0; part < 2; ++part)  // q, k
    for (int64_t g = ls.linear_k_heads.begin; g < ls.linear_k_heads.end; ++g)
      add_run(s.runs, g * group + part * dk, g * group + (part + 1) * dk);
  for (int64_t part = 0; part < 2; ++part)  // v, z
    for (int64_t v = ls.linear_v_heads.begin; v < ls.linear_v_heads.end; ++v) {
      const int64_t at = (v / r) * group + 2 * dk + part * r * dv + (v % r) * dv;
      add_run(s.runs, at, at + dv);
    }
  return s;
}

SliceRange fused_ba(const ModelConfig& c, const LayerSlices& ls) {
  const int64_t r = c.linear_value_heads_per_key_head();
  SliceRange s;
  for (int64_t part = 0; part < 2; ++part)  // b, a
    for (int64_t v = ls.linear_v_heads.begin; v < ls.linear_v_heads.end; ++v) {
      const int64_t at = (v / r) * 2 * r + part * r + v % r;
      add_run(s.runs, at, at + 1);
    }
  return s;
}

}  // namespace

SliceRange slice_for(const TensorSpec& spec, const ModelConfig& c, const RankSlices& s, int64_t layer) {
  auto layer_slices = [&]() -> const LayerSlices& {
    if (layer < 0 || layer >= int64_t(s.layer.size()))
      fail("plan for rank {} has no slices for layer {} (tensor {})", s.rank, layer, spec.name);
    return s.layer[size_t(layer)];
  };
  auto expert = [&]() -> Range {
    const LayerSlices& ls = layer_slices();
    if (spec.index < 0 || spec.index >= int64_t(ls.expert_cols.size()))
      fail("plan for rank {} has no columns for expert {} of layer {} (tensor {})", s.rank, spec.index, layer, spec.name);
    return ls.expert_cols[size_t(spec.index)];
  };
  const int64_t hd = c.head_dim, dk = c.linear_key_head_dim, dv = c.linear_value_head_dim;
  switch (spec.role) {
    case SplitRole::Replicated: return rows({0, spec.shape[0]}, 1);
    case SplitRole::QHeadRows: return rows(layer_slices().q_heads, c.q_rows_per_head());
    case SplitRole::KVHeadRows: return rows(layer_slices().kv_heads, hd);
    case SplitRole::QHeadCols: return cols(layer_slices().q_heads, hd);
    case SplitRole::MlpRows: return rows(layer_slices().mlp_cols, 1);
    case SplitRole::MlpCols: return cols(layer_slices().mlp_cols, 1);
    case SplitRole::ExpertRows: return rows(expert(), 1);
    case SplitRole::ExpertCols: return cols(expert(), 1);
    case SplitRole::SharedExpertRows: return rows(layer_slices().shared_expert_cols, 1);
    case SplitRole::SharedExpertCols: return cols(layer_slices().shared_expert_cols, 1);
    case SplitRole::LinearQKVRows: {
      const LayerSlices& ls = layer_slices();
      const int64_t key_dim = c.linear_num_key_heads * dk;
      SliceRange r;
      add_run(r.runs, ls.linear_k_heads.begin * dk, ls.linear_k_heads.end * dk);
      add_run(r.runs, key_dim + ls.linear_k_heads.begin * dk, key_dim + ls.linear_k_heads.end * dk);
      add_run(r.runs, 2 * key_dim + ls.linear_v_heads.begin * dv, 2 * key_dim + ls.linear_v_heads.end * dv);
      return r;
    }
    case SplitRole::LinearVRows: return rows(layer_slices().linear_v_heads, dv);
    case SplitRole::LinearVHeadRows: return rows(layer_slices().linear_v_heads, 1);
    case SplitRole::LinearVCols: return cols(layer_slices().linear_v_heads, dv);
    case SplitRole::LinearQKVZRows: return fused_qkvz(c, layer_slices());
    case SplitRole::LinearBARows: return fused_ba(c, layer_slices());
    case SplitRole::EmbeddingRows: return rows(s.embedding_rows, 1);
    case SplitRole::OutputRows: return rows(s.output_rows, 1);
  }
  fail("unknown split role for tensor {}", spec.name);
}

std::string shape_reason(const TensorSpec& spec, const ModelConfig& c) {
  const std::string h = fmt::format("hidden_size {}", c.hidden_size);
  const std::string linear = fmt::format("linear_num_key_heads {} x linear_key_head_dim {}, linear_num_value_heads {} x "
                                         "linear_value_head_dim {}", c.linear_num_key_heads, c.linear_key_head_dim,
                                         c.linear_num_value_heads, c.linear_value_head_dim);
  switch (spec.role) {
    case SplitRole::QHeadRows:
      return fmt::format("num_attention_heads {} x head_dim {}{}, {}", c.num_heads, c.head_dim,
                         c.attn_output_gate ? " x 2 (query and output gate)" : "", h);
    case SplitRole::KVHeadRows: return fmt::format("num_key_value_heads {} x head_dim {}, {}", c.num_kv_heads, c.head_dim, h);
    case SplitRole::QHeadCols: return fmt::format("{}, num_attention_heads {} x head_dim {}", h, c.num_heads, c.head_dim);
    case SplitRole::MlpRows: case SplitRole::MlpCols: return fmt::format("intermediate_size {}, {}", c.intermediate_size, h);
    case SplitRole::ExpertRows: case SplitRole::ExpertCols:
      return fmt::format("num_experts {}, moe_intermediate_size {}, {}", c.num_experts, c.moe_intermediate_size, h);
    case SplitRole::SharedExpertRows: case SplitRole::SharedExpertCols:
      return fmt::format("shared_expert_intermediate_size {}, {}", c.shared_expert_intermediate_size, h);
    case SplitRole::LinearQKVRows: case SplitRole::LinearVRows: case SplitRole::LinearVHeadRows:
    case SplitRole::LinearVCols: case SplitRole::LinearQKVZRows: case SplitRole::LinearBARows:
      return fmt::format("{}, linear_conv_kernel_dim {}, {}", linear, c.linear_conv_kernel_dim, h);
    case SplitRole::EmbeddingRows: case SplitRole::OutputRows: return fmt::format("vocab_size {}, {}", c.vocab_size, h);
    case SplitRole::Replicated:
      if (spec.slot == Slot::Router) return fmt::format("num_experts {}, {}", c.num_experts, h);
      if (spec.slot == Slot::LinearNorm) return fmt::format("linear_value_head_dim {}", c.linear_value_head_dim);
      if (spec.slot == Slot::QNorm || spec.slot == Slot::KNorm) return fmt::format("head_dim {}", c.head_dim);
      return h;
  }
  return h;
}

}  // namespace uneven
