// Activations rounded as llama.cpp rounds them before a quantized dot product, so results match its runs.
#pragma once
#include <cstdint>

#include "model/dtype.h"

namespace uneven::quant {

// llama.cpp multiplies a GGML-quantized weight with activations quantized to a companion block type
// ("vec_dot_type"): Q8_0 for Q4_0 / Q5_0 / Q8_0, Q8_1 for Q4_1 / Q5_1, Q8_K for the k-quants. Writes
// the values those activation blocks stand for into `out` (n elements, a whole number of 256-element
// blocks or of 32 for the non-k types), and into `sums16` the sum over each 16 elements that the
// quantized product's offset terms use (for Q8_1 the block's stored f16 sum, placed in the first of
// its two slots). For other weight types copies x and sums it. Rounding follows llama.cpp's reference
// quantizers: Q8_0/Q8_1 round half away from zero against the unrounded scale and store the scale in
// f16; Q8_K rounds half to even against -127 / (the signed value of largest magnitude) in f32.
void round_activations(DType weight_type, const float* x, int64_t n, float* out, float* sums16);

}  // namespace uneven::quant
