// GGUF specifics shared with tests: GGML tensor type ids and the GGUF -> Hugging Face tensor-name map.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "model/dtype.h"

namespace uneven {

// The element type for a GGML type id, or nullopt where this engine cannot read it yet (quantized
// types: the seam where block formats will be added, with their own byte-size rule).
std::optional<DType> dtype_from_ggml_type(uint32_t type_id);
// The GGML type id of a DType that GGUF can hold (not the MLX types).
std::optional<uint32_t> ggml_type_from_dtype(DType dtype);
// "Q4_K" for 12, ... ; "unknown" for ids GGML does not define. For messages.
std::string_view ggml_type_name(uint32_t type_id);

// Canonical Hugging Face name for a llama-style GGUF tensor name (blk.3.attn_q.weight ->
// model.layers.3.self_attn.q_proj.weight); names it does not know are returned unchanged.
std::string hf_name_from_gguf(std::string_view gguf_name);

}  // namespace uneven
