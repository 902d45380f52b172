// llama.cpp's names for Hugging Face models: tensor names, architecture metadata keys, tokenizer.ggml.*.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/config.h"
#include "model/gguf_writer.h"

namespace uneven {

// llama.cpp's name for a Hugging Face tensor of llama, qwen2 or qwen3 (model.layers.3.self_attn.q_proj.weight
// -> blk.3.attn_q.weight; model.embed_tokens.weight -> token_embd.weight): the inverse of hf_name_from_gguf.
// Throws uneven::Error naming the tensor when it has no GGUF name here (MoE, linear attention, vision, ...).
std::string gguf_name_from_hf(std::string_view hf_name);

// True for the families whose tensors and metadata this module can name (dense llama, qwen2, qwen3 with
// full attention in every layer).
bool gguf_family_supported(const ModelConfig& config);

// general.architecture, general.name and the <arch>.* hyper-parameters llama.cpp reads for a dense
// llama / qwen2 / qwen3 model, with llama.cpp's value types (u32 counts, f32 epsilon and rope base), such
// that config_from_gguf_metadata gives the config back. Throws for other families. general.file_type and
// tokenizer keys are the caller's.
std::vector<GgufKv> gguf_model_metadata(const ModelConfig& config, const std::string& model_name);

// llama.cpp's rope_freqs.weight for Llama 3 rope scaling: one frequency divisor per rotated pair (1 for
// short wavelengths, `factor` for long ones, smoothly between). Empty when the config has no llama3 scaling.
std::vector<float> llama3_rope_factors(const ModelConfig& config);

// tokenizer.ggml.* (model gpt2, pre, tokens, token_type, merges, special ids, add_bos_token, chat template)
// from tokenizer.json / tokenizer_config.json in `dir`, for byte-level BPE tokenizers whose split regex
// llama.cpp names (gpt-2, llama-bpe, qwen2). nullopt with `why_not` set when the tokenizer is absent or of
// another kind; throws naming the file when it is malformed.
std::optional<std::vector<GgufKv>> gguf_tokenizer_from_hf(const std::string& dir, const ModelConfig& config,
                                                          std::string& why_not);

}  // namespace uneven
