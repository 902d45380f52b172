// Per-tensor type choice of llama.cpp's quantization mixes (llama-quantize's Q8_0, Q4_0, Q4_K_M, ...).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/dtype.h"

namespace uneven::quant {

// The llama-quantize types `uneven quantize --type` offers.
enum class QuantRecipe { Q8_0, Q4_0, Q4_K_M, Q5_K_M, Q6_K };

// "q8_0", "Q4_K_M", ... (case-insensitive); nullopt for anything else.
std::optional<QuantRecipe> recipe_from_name(std::string_view name);
// The lower-case name, as llama-quantize spells it in file names ("q4_k_m").
std::string_view recipe_name(QuantRecipe r);
// GGUF `general.file_type`: llama.cpp's llama_ftype (MOSTLY_Q4_0 = 2, MOSTLY_Q8_0 = 7,
// MOSTLY_Q4_K_M = 15, MOSTLY_Q5_K_M = 17, MOSTLY_Q6_K = 18).
uint32_t recipe_file_type(QuantRecipe r);
// The type most tensors get (Q4_K for Q4_K_M, ...).
DType recipe_default_type(QuantRecipe r);

// What the type choice looks at for one tensor of a model.
struct TensorRole {
  std::string name;        // GGUF name: "blk.3.ffn_down.weight", "token_embd.weight", "output.weight"
  int layer = -1;          // block index; -1: parsed from a "blk.N." prefix (stays -1 for others)
  int n_layers = 0;        // blocks in the model
  int n_dims = 2;          // 1 for norms and biases, 3 for stacked experts
  int64_t row = 0;         // ne[0]: elements along the input dimension (the quantized row length)
  int n_expert = 0;        // experts per MoE layer (0 or 1: dense); 8 triggers llama.cpp's Mixtral rules
  // llama.cpp counts attention-value-like tensors (attn_v, attn_qkv, attn_kv_b) in file order and picks
  // "more bits" layers by that count, which differs from the block index in hybrid models whose
  // linear-attention blocks have none. -1 / 0: use layer / n_layers. choose_types fills these.
  int attn_v_index = -1;
  int n_attn_v = 0;
  // Dense models: llama.cpp numbers ffn_down tensors in file order (the block index when every block
  // has one). -1: use layer. MoE models (n_expert > 1) always use the block index, as llama.cpp does.
  int ffn_down_index = -1;
  // The model has no output.weight: token_embd doubles as the head and is typed like output.weight.
  bool tied_embeddings = false;
};

// Whether llama.cpp would quantize the tensor at all (2-D/3-D weights other than norms, routers,
// conv1d kernels, positional embeddings, ...). Others are kept unquantized.
bool quantizable(const TensorRole& t);

// The type of one tensor under recipe r. Tensors that are not quantizable come back F32 (llama.cpp
// keeps their source type; F32 loses nothing and is what converted GGUFs hold for them).
DType choose_type(QuantRecipe r, const TensorRole& t);

// Types for every tensor of one model, in the order given. Fills the model-wide parts of each role
// first (tied embeddings, attn_v and ffn_down numbering in llama.cpp's tensor order: by block index,
// then by name), so roles need only name, n_layers, n_dims, row and n_expert.
std::vector<DType> choose_types(QuantRecipe r, std::vector<TensorRole> roles);

}  // namespace uneven::quant
