// Rotary position embedding as transformers computes it (fp32 inverse frequencies, llama3 smoothing).
#include "engine/rope.h"

#include <cmath>
#include <numbers>

namespace uneven {

Rope::Rope(const ModelConfig& c) {
  const int64_t dim = c.rotary_dim();
  const RopeScaling& s = c.rope_scaling;
  for (int64_t i = 0; i < dim / 2; ++i) {
    // transformers: 1 / base ** (arange(0, dim, 2).float() / dim), evaluated in float32.
    float exponent = float(2 * i) / float(dim);
    float f = 1.0f / std::pow(float(c.rope_theta), exponent);
    if (s.type == "linear") {
      f /= float(s.factor);
    } else if (s.type == "llama3") {
      // Long wavelengths are slowed by `factor`, short ones kept, the band between interpolated.
      const double old_ctx = double(s.original_max_position);
      const double low_wavelen = old_ctx / s.low_freq_factor, high_wavelen = old_ctx / s.high_freq_factor;
      const double wavelen = 2.0 * std::numbers::pi / double(f);
      if (wavelen > low_wavelen) {
        f = float(f / s.factor);
      } else if (wavelen >= high_wavelen) {
        float smooth = float((old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor));
        f = (1.0f - smooth) * f / float(s.factor) + smooth * f;
      }
    }
    if (!c.rope_freq_factors.empty()) f /= c.rope_freq_factors[size_t(i)];  // as llama.cpp: theta / factor
    inv_freq_.push_back(f);
  }
}

void Rope::tables(int64_t first, int64_t count, std::vector<float>& cos, std::vector<float>& sin) const {
  const int64_t h = half();
  cos.resize(size_t(count * h));
  sin.resize(size_t(count * h));
  for (int64_t p = 0; p < count; ++p)
    for (int64_t i = 0; i < h; ++i) {
      float angle = float(first + p) * inv_freq_[size_t(i)];  // fp32 product, as transformers does
      cos[size_t(p * h + i)] = float(std::cos(double(angle)));
      sin[size_t(p * h + i)] = float(std::sin(double(angle)));
    }
}

}  // namespace uneven
