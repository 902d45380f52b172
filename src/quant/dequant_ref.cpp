// Scalar dequantization of every block type: the reference the SIMD kernels and quantizers are tested against.
#include <cstring>

#include "quant/blocks.h"
#include "util/error.h"

namespace uneven::quant {
namespace {

float h2f(uint16_t h) { return f16_to_f32(h); }

void q4_0(const BlockQ4_0& b, float* y) {
  const float d = h2f(b.d);
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = d * float(int(b.qs[j] & 0xF) - 8);
    y[j + kQK / 2] = d * float(int(b.qs[j] >> 4) - 8);
  }
}
void q4_1(const BlockQ4_1& b, float* y) {
  const float d = h2f(b.d), m = h2f(b.m);
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = d * float(b.qs[j] & 0xF) + m;
    y[j + kQK / 2] = d * float(b.qs[j] >> 4) + m;
  }
}
uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
void q5_0(const BlockQ5_0& b, float* y) {
  const float d = h2f(b.d);
  const uint32_t qh = load_u32(b.qh);
  for (int j = 0; j < kQK / 2; ++j) {
    const int lo = int((b.qs[j] & 0xF) | (((qh >> j) & 1u) << 4));
    const int hi = int((b.qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4));
    y[j] = d * float(lo - 16);
    y[j + kQK / 2] = d * float(hi - 16);
  }
}
void q5_1(const BlockQ5_1& b, float* y) {
  const float d = h2f(b.d), m = h2f(b.m);
  const uint32_t qh = load_u32(b.qh);
  for (int j = 0; j < kQK / 2; ++j) {
    const int lo = int((b.qs[j] & 0xF) | (((qh >> j) & 1u) << 4));
    const int hi = int((b.qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4));
    y[j] = d * float(lo) + m;
    y[j + kQK / 2] = d * float(hi) + m;
  }
}
void q8_0(const BlockQ8_0& b, float* y) {
  const float d = h2f(b.d);
  for (int j = 0; j < kQK; ++j) y[j] = d * float(b.qs[j]);
}
void q4_k(const BlockQ4_K& b, float* y) {
  const float d = h2f(b.d), dmin = h2f(b.dmin);
  const uint8_t* q = b.qs;
  for (int pair = 0; pair < 4; ++pair, q += 32, y += 64) {
    uint8_t sc0, m0, sc1, m1;
    k_scale_min(2 * pair, b.scales, sc0, m0);
    k_scale_min(2 * pair + 1, b.scales, sc1, m1);
    const float d0 = d * sc0, mm0 = dmin * m0, d1 = d * sc1, mm1 = dmin * m1;
    for (int l = 0; l < 32; ++l) {
      y[l] = d0 * float(q[l] & 0xF) - mm0;
      y[l + 32] = d1 * float(q[l] >> 4) - mm1;
    }
  }
}
void q5_k(const BlockQ5_K& b, float* y) {
  const float d = h2f(b.d), dmin = h2f(b.dmin);
  const uint8_t* q = b.qs;
  for (int pair = 0; pair < 4; ++pair, q += 32, y += 64) {
    uint8_t sc0, m0, sc1, m1;
    k_scale_min(2 * pair, b.scales, sc0, m0);
    k_scale_min(2 * pair + 1, b.scales, sc1, m1);
    const float d0 = d * sc0, mm0 = dmin * m0, d1 = d * sc1, mm1 = dmin * m1;
    const uint8_t lo_bit = uint8_t(1u << (2 * pair)), hi_bit = uint8_t(2u << (2 * pair));
    for (int l = 0; l < 32; ++l) {
      y[l] = d0 * float((q[l] & 0xF) + ((b.qh[l] & lo_bit) ? 16 : 0)) - mm0;
      y[l + 32] = d1 * float((q[l] >> 4) + ((b.qh[l] & hi_bit) ? 16 : 0)) - mm1;
    }
  }
}
void q6_k(const BlockQ6_K& b, float* y) {
  const float d = h2f(b.d);
  const uint8_t* ql = b.ql;
  const uint8_t* qh = b.qh;
  const int8_t* sc = b.scales;
  for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, y += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = int((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = int((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = int((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = int((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * float(sc[is]) * float(q1);
      y[l + 32] = d * float(sc[is + 2]) * float(q2);
      y[l + 64] = d * float(sc[is + 4]) * float(q3);
      y[l + 96] = d * float(sc[is + 6]) * float(q4);
    }
  }
}

float load_scale(const uint8_t* p, DType t) {
  if (t == DType::F32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, p, 2);
  return t == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

// MLX: element j of a group is bits [j*bits, (j+1)*bits) of the packed little-endian uint32 words.
void mlx(const WeightType& t, const uint8_t* p, float* y) {
  const size_t ss = dtype_size(t.scale);
  const float scale = load_scale(p, t.scale), bias = load_scale(p + ss, t.scale);
  const uint8_t* q = p + 2 * ss;
  const int bits = mlx_bits(t.dtype);
  const uint32_t mask = (1u << bits) - 1u;
  for (int j = 0; j < t.group; ++j) {
    const uint32_t word = load_u32(q + (j * bits / 32) * 4);
    y[j] = scale * float((word >> ((j * bits) % 32)) & mask) + bias;
  }
}

template <typename Block, typename F>
void each_block(const void* src, int64_t blocks, int64_t per, float* dst, F f) {
  const Block* b = static_cast<const Block*>(src);
  for (int64_t i = 0; i < blocks; ++i) {
    Block copy;
    std::memcpy(&copy, b + i, sizeof(Block));  // blocks are byte-packed: read unaligned-safe
    f(copy, dst + i * per);
  }
}

}  // namespace

void dequantize_row_ref(const WeightType& type, const void* src, int64_t n, float* dst) {
  const int64_t per = type.block_elems();
  if (per <= 0 || n % per != 0)
    fail("dequantize: {} elements are not a whole number of {} blocks of {}", n, type.name(), per);
  const int64_t blocks = n / per;
  switch (type.dtype) {
    case DType::F32: std::memcpy(dst, src, size_t(n) * 4); return;
    case DType::F16:
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, static_cast<const uint8_t*>(src) + 2 * i, 2);
        dst[i] = type.dtype == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
      }
      return;
    case DType::U32: fail("dequantize: U32 holds MLX codes, not values (its scales and biases are needed)");
    case DType::Q4_0: return each_block<BlockQ4_0>(src, blocks, per, dst, q4_0);
    case DType::Q4_1: return each_block<BlockQ4_1>(src, blocks, per, dst, q4_1);
    case DType::Q5_0: return each_block<BlockQ5_0>(src, blocks, per, dst, q5_0);
    case DType::Q5_1: return each_block<BlockQ5_1>(src, blocks, per, dst, q5_1);
    case DType::Q8_0: return each_block<BlockQ8_0>(src, blocks, per, dst, q8_0);
    case DType::Q4_K: return each_block<BlockQ4_K>(src, blocks, per, dst, q4_k);
    case DType::Q5_K: return each_block<BlockQ5_K>(src, blocks, per, dst, q5_k);
    case DType::Q6_K: return each_block<BlockQ6_K>(src, blocks, per, dst, q6_k);
    case DType::MLX4:
    case DType::MLX8: {
      const uint8_t* p = static_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < blocks; ++i) mlx(type, p + i * type.block_bytes(), dst + i * per);
      return;
    }
  }
}

}  // namespace uneven::quant
