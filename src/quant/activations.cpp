// Activation rounding to llama.cpp's Q8_0 / Q8_1 / Q8_K companion blocks (see activations.h).
#include "quant/activations.h"

#include <cmath>

namespace uneven::quant {
namespace {

float f16_round(float v) { return f16_to_f32(f32_to_f16(v)); }

// Q8_0 (and Q8_1 when `with_sum`): 32 elements per block.
void q8_blocks(const float* x, int64_t n, float* out, float* sums16, bool with_sum) {
  for (int64_t b = 0; b < n; b += 32) {
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b + i]));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f, stored = f16_round(d);
    int sum = 0;
    float s0 = 0.0f, s1 = 0.0f;
    for (int i = 0; i < 32; ++i) {
      const int q = int(std::round(x[b + i] * id));
      sum += q;
      out[b + i] = stored * float(q);
      (i < 16 ? s0 : s1) += out[b + i];
    }
    if (with_sum) {
      sums16[b / 16] = f16_round(d * float(sum));
      sums16[b / 16 + 1] = 0.0f;
    } else {
      sums16[b / 16] = s0;
      sums16[b / 16 + 1] = s1;
    }
  }
}

// Round half to even, as ggml's nearest_int does.
int nearest_int(float v) { return int(std::nearbyint(v)); }

void q8_k_blocks(const float* x, int64_t n, float* out, float* sums16) {
  for (int64_t b = 0; b < n; b += 256) {
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < 256; ++i)
      if (std::fabs(x[b + i]) > amax) {
        amax = std::fabs(x[b + i]);
        max = x[b + i];
      }
    if (amax == 0.0f) {
      for (int i = 0; i < 256; ++i) out[b + i] = 0.0f;
      for (int k = 0; k < 16; ++k) sums16[b / 16 + k] = 0.0f;
      continue;
    }
    const float iscale = -127.0f / max, d = 1.0f / iscale;
    for (int k = 0; k < 16; ++k) {
      float s = 0.0f;
      for (int i = 0; i < 16; ++i) {
        const int q = std::min(127, nearest_int(iscale * x[b + 16 * k + i]));
        out[b + 16 * k + i] = d * float(q);
        s += out[b + 16 * k + i];
      }
      sums16[b / 16 + k] = s;
    }
  }
}

}  // namespace

void round_activations(DType t, const float* x, int64_t n, float* out, float* sums16) {
  switch (t) {
    case DType::Q4_0: case DType::Q5_0: case DType::Q8_0: return q8_blocks(x, n, out, sums16, false);
    case DType::Q4_1: case DType::Q5_1: return q8_blocks(x, n, out, sums16, true);
    case DType::Q4_K: case DType::Q5_K: case DType::Q6_K: return q8_k_blocks(x, n, out, sums16);
    default:
      for (int64_t c = 0; c < n; ++c) out[c] = x[c];
      for (int64_t c = 0; c + 16 <= n; c += 16) {
        float s = 0.0f;
        for (int i = 0; i < 16; ++i) s += x[c + i];
        sums16[c / 16] = s;
      }
  }
}

}  // namespace uneven::quant
