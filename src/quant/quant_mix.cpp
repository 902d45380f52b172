// Per-tensor type choice of llama.cpp's quantization mixes, after llama.cpp's src/llama-quant.cpp
// (tensor_allows_quantization, llama_tensor_get_type_impl, tensor_type_fallback).
//
// Reproduced, for the five recipes offered (no importance matrix, no user overrides, not --pure):
//  - what is quantized: 2-D and 3-D tensors whose name ends in "weight", except *_norm.weight, the MoE
//    router ffn_gate_inp, ssm_conv1d / shortconv kernels, position / token-type embeddings, and the
//    small per-architecture tensors llama.cpp lists (altup, laurel, per_layer_model_proj, time_mix_*,
//    attn_rel_b, the MiniMax indexer projections). 1-D tensors and names not ending in "weight"
//    (ssm_a, ssm_d, dt biases, expert score biases) are not.
//  - output.weight (and token_embd.weight when the model has no output.weight): Q8_0 when ne[0] is not
//    a multiple of the recipe's block size, else Q6_K unless the recipe is Q8_0.
//  - attn_v / attn_qkv / attn_kv_b ("attention-value-like"; newer llama.cpp sends attn_qkv through the
//    attn_v branch): Q6_K for Q4_K_M and Q5_K_M on use_more_bits layers (the first and last eighth and
//    every third between), counted over these tensors in llama.cpp's order; Q8_0 when n_expert == 8.
//  - attn_k: Q8_0 when n_expert == 8 (any of the recipes here).
//  - ffn_down (also _exps / _shexp): Q6_K on use_more_bits layers for Q4_K_M and Q5_K_M.
//  - attn_output: Q5_K for Q4_K_M when n_expert == 8.
//  - fallback when ne[0] is not a multiple of the chosen type's block: Q4_K -> Q5_0, Q5_K -> Q5_1,
//    Q6_K -> Q8_0, and F16 when that is still not a multiple of 32.
// Left out: Falcon's ffn_down / attn_output rules and its Q8_0 output (we name no architecture), the
// 70B rule (attn_v that would stay Q4_K becomes Q5_K; keyed to llama.cpp's model-size detection), the
// imatrix-only Q4_0 -> Q4_1 ffn_down rule, and user overrides (--tensor-type, --output-tensor-type,
// --pure). Where llama.cpp has no fallback (Q8_0 / Q4_0 rows not a multiple of 32: it refuses the
// model) we use F16.
#include "quant/quant_mix.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <numeric>

namespace uneven::quant {
namespace {

bool contains(std::string_view s, std::string_view part) { return s.find(part) != std::string_view::npos; }
bool ends_with(std::string_view s, std::string_view end) {
  return s.size() >= end.size() && s.substr(s.size() - end.size()) == end;
}

// The N of a "blk.N." prefix, or -1.
int block_of(std::string_view name) {
  if (name.substr(0, 4) != "blk.") return -1;
  int n = -1;
  const char* begin = name.data() + 4;
  const char* end = name.data() + name.size();
  auto [p, ec] = std::from_chars(begin, end, n);
  if (ec != std::errc() || p == begin || p == end || *p != '.') return -1;
  return n;
}

enum class Category { TokenEmbd, AttnQ, AttnV, AttnK, AttnQkv, AttnKvB, AttnOutput, FfnUp, FfnGate, FfnDown, Output, Other };

// llama.cpp's tensor_get_category: the first matching substring wins, in this order.
Category category_of(std::string_view name) {
  if (name == "output.weight") return Category::Output;
  if (name == "token_embd.weight" || name == "per_layer_token_embd.weight") return Category::TokenEmbd;
  if (contains(name, "attn_qkv.weight")) return Category::AttnQkv;
  if (contains(name, "attn_kv_b.weight")) return Category::AttnKvB;
  if (contains(name, "attn_v.weight")) return Category::AttnV;
  if (contains(name, "attn_k.weight")) return Category::AttnK;
  if (contains(name, "attn_q.weight")) return Category::AttnQ;
  if (contains(name, "attn_output.weight")) return Category::AttnOutput;
  if (contains(name, "ffn_up")) return Category::FfnUp;
  if (contains(name, "ffn_gate")) return Category::FfnGate;
  if (contains(name, "ffn_down")) return Category::FfnDown;
  return Category::Other;
}
bool attn_v_like(Category c) { return c == Category::AttnV || c == Category::AttnQkv || c == Category::AttnKvB; }

// llama.cpp's use_more_bits: the first and last eighth of the layers and every third layer between.
bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

int64_t block_elems(DType t) { return WeightType{t, 0, DType::BF16}.block_elems(); }

// tensor_type_fallback: a k-quant whose super-block does not divide the row becomes a 32-block type,
// and F16 when even 32 does not divide it.
DType fallback(DType t, int64_t row) {
  if (row % block_elems(t) == 0) return t;
  DType f = DType::F16;
  switch (t) {
    case DType::Q4_K: f = DType::Q5_0; break;
    case DType::Q5_K: f = DType::Q5_1; break;
    case DType::Q6_K: f = DType::Q8_0; break;
    default: f = DType::F16; break;  // llama.cpp throws here (Q8_0 / Q4_0 rows not a multiple of 32)
  }
  return row % block_elems(f) == 0 ? f : DType::F16;
}

}  // namespace

std::optional<QuantRecipe> recipe_from_name(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  for (QuantRecipe r : {QuantRecipe::Q8_0, QuantRecipe::Q4_0, QuantRecipe::Q4_K_M, QuantRecipe::Q5_K_M, QuantRecipe::Q6_K})
    if (lower == recipe_name(r)) return r;
  return std::nullopt;
}

std::string_view recipe_name(QuantRecipe r) {
  switch (r) {
    case QuantRecipe::Q8_0: return "q8_0";
    case QuantRecipe::Q4_0: return "q4_0";
    case QuantRecipe::Q4_K_M: return "q4_k_m";
    case QuantRecipe::Q5_K_M: return "q5_k_m";
    case QuantRecipe::Q6_K: return "q6_k";
  }
  return "?";
}

uint32_t recipe_file_type(QuantRecipe r) {
  switch (r) {
    case QuantRecipe::Q4_0: return 2;
    case QuantRecipe::Q8_0: return 7;
    case QuantRecipe::Q4_K_M: return 15;
    case QuantRecipe::Q5_K_M: return 17;
    case QuantRecipe::Q6_K: return 18;
  }
  return 0;
}

DType recipe_default_type(QuantRecipe r) {
  switch (r) {
    case QuantRecipe::Q8_0: return DType::Q8_0;
    case QuantRecipe::Q4_0: return DType::Q4_0;
    case QuantRecipe::Q4_K_M: return DType::Q4_K;
    case QuantRecipe::Q5_K_M: return DType::Q5_K;
    case QuantRecipe::Q6_K: return DType::Q6_K;
  }
  return DType::F32;
}

bool quantizable(const TensorRole& t) {
  if (t.n_dims < 2) return false;
  const std::string_view n = t.name;
  if (!ends_with(n, "weight")) return false;
  for (std::string_view never :
       {"_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel", "per_layer_model_proj",
        "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight", "indexer.q_proj.weight",
        "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
        "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight",
        "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight",
        "time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight", "attn_rel_b.weight"})
    if (contains(n, never)) return false;
  if (n == "position_embd.weight" || n == "token_types.weight") return false;
  return true;
}

DType choose_type(QuantRecipe r, const TensorRole& t) {
  if (!quantizable(t)) return DType::F32;
  const Category cat = category_of(t.name);
  const bool k_m = r == QuantRecipe::Q4_K_M || r == QuantRecipe::Q5_K_M;
  const int layer = t.layer >= 0 ? t.layer : block_of(t.name);
  DType type = recipe_default_type(r);

  if (cat == Category::Output || (t.tied_embeddings && cat == Category::TokenEmbd)) {
    // The head is the most sensitive matrix: Q6_K, or Q8_0 when the row does not fit the recipe's block.
    if (t.row % block_elems(type) != 0) type = DType::Q8_0;
    else if (type != DType::Q8_0) type = DType::Q6_K;
  } else if (cat == Category::TokenEmbd) {
    // untied embeddings keep the recipe's type
  } else if (attn_v_like(cat)) {
    const int i = t.attn_v_index >= 0 ? t.attn_v_index : layer;
    const int n = t.n_attn_v > 0 ? t.n_attn_v : t.n_layers;
    if (k_m && i >= 0 && use_more_bits(i, n)) type = DType::Q6_K;
    if (t.n_expert == 8) type = DType::Q8_0;
  } else if (cat == Category::AttnK) {
    if (t.n_expert == 8) type = DType::Q8_0;
  } else if (cat == Category::FfnDown) {
    const int i = t.n_expert > 1 || t.ffn_down_index < 0 ? layer : t.ffn_down_index;
    if (k_m && i >= 0 && use_more_bits(i, t.n_layers)) type = DType::Q6_K;
  } else if (cat == Category::AttnOutput) {
    if (t.n_expert == 8 && r == QuantRecipe::Q4_K_M) type = DType::Q5_K;
  }
  return fallback(type, t.row);
}

std::vector<DType> choose_types(QuantRecipe r, std::vector<TensorRole> roles) {
  bool has_output = false;
  for (const TensorRole& t : roles) has_output |= t.name == "output.weight";
  // llama.cpp walks tensors sorted by block index (non-block tensors first), then by name.
  std::vector<size_t> order(roles.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const int la = block_of(roles[a].name), lb = block_of(roles[b].name);
    if (la != lb) return la < lb;
    return roles[a].name < roles[b].name;
  });
  int n_attn_v = 0;
  for (const TensorRole& t : roles) n_attn_v += attn_v_like(category_of(t.name)) ? 1 : 0;
  int i_attn_v = 0, i_ffn_down = 0;
  for (size_t k : order) {
    TensorRole& t = roles[k];
    t.tied_embeddings = !has_output;
    if (t.layer < 0) t.layer = block_of(t.name);
    if (!quantizable(t)) continue;  // llama.cpp's counters only see tensors it quantizes
    const Category cat = category_of(t.name);
    if (attn_v_like(cat)) {
      t.attn_v_index = i_attn_v++;
      t.n_attn_v = n_attn_v;
    } else if (cat == Category::FfnDown) {
      t.ffn_down_index = i_ffn_down++;
    }
  }
  std::vector<DType> types;
  types.reserve(roles.size());
  for (const TensorRole& t : roles) types.push_back(choose_type(r, t));
  return types;
}

}  // namespace uneven::quant
