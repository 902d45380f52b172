// Quantizers for every block type of quant/blocks.h, and the per-tensor type choice of llama.cpp-style mixes.
#pragma once
#include <cstdint>
#include <string>

#include "model/dtype.h"

namespace uneven::quant {

// Quantizes `n` elements of src (a whole number of blocks of `type`) into dst (type.bytes(n) bytes).
// Deterministic; dequantize_row_ref of the result approximates src within the format's error.
void quantize_row(const WeightType& type, const float* src, int64_t n, void* dst);

}  // namespace uneven::quant
